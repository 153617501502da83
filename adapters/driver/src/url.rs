//! Connection URLs: the token travels in the query, properly percent-encoded (the PraisonAI
//! client appends it raw).

/// A URL that cannot be used for a gateway connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("invalid URL {url:?}: {reason}")]
    Invalid {
        /// The URL given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Neither `ws` nor `wss`.
    #[error("unsupported scheme {0:?}: use ws:// or wss://")]
    Scheme(String),
}

/// `url` with `token=<token>` appended to its query (percent-encoded), if a token is given.
///
/// ```
/// use tether_driver::with_token;
/// assert_eq!(
///     with_token("ws://127.0.0.1:8765/ws", Some("a b&c")).unwrap(),
///     "ws://127.0.0.1:8765/ws?token=a+b%26c"
/// );
/// assert!(with_token("http://x/ws", None).is_err());
/// ```
pub fn with_token(url: &str, token: Option<&str>) -> Result<String, UrlError> {
    let mut parsed = ::url::Url::parse(url).map_err(|e| UrlError::Invalid {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "ws" | "wss") {
        return Err(UrlError::Scheme(parsed.scheme().to_owned()));
    }
    if let Some(token) = token {
        parsed.query_pairs_mut().append_pair("token", token);
    }
    Ok(parsed.into())
}
