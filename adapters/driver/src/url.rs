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

/// The gateway URLs a client may connect to: one, or several nodes of a multi-node gateway
/// sharing a session store. The client starts on the first and moves to the next one at every
/// reconnect, so a dead node costs one attempt on the backoff schedule.
///
/// ```
/// use tether_driver::Endpoints;
/// let one: Endpoints = "ws://127.0.0.1:8765/ws".into();
/// assert_eq!(one.urls().len(), 1);
/// let two: Endpoints = ["ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8766/ws"].into();
/// assert_eq!(two.urls()[1], "ws://127.0.0.1:8766/ws");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<String>);

impl Endpoints {
    /// The URLs, in failover order.
    pub fn urls(&self) -> &[String] {
        &self.0
    }

    /// Each URL checked and given the token (see [`with_token`]); an empty list is refused.
    pub fn with_token(&self, token: Option<&str>) -> Result<Vec<String>, UrlError> {
        if self.0.is_empty() {
            return Err(UrlError::Invalid {
                url: String::new(),
                reason: "no URL given".into(),
            });
        }
        self.0.iter().map(|u| with_token(u, token)).collect()
    }
}

impl From<&str> for Endpoints {
    fn from(url: &str) -> Self {
        Self(vec![url.to_owned()])
    }
}

impl From<String> for Endpoints {
    fn from(url: String) -> Self {
        Self(vec![url])
    }
}

impl From<&String> for Endpoints {
    fn from(url: &String) -> Self {
        Self(vec![url.clone()])
    }
}

impl From<Vec<String>> for Endpoints {
    fn from(urls: Vec<String>) -> Self {
        Self(urls)
    }
}

impl From<&[&str]> for Endpoints {
    fn from(urls: &[&str]) -> Self {
        Self(urls.iter().map(|u| (*u).to_owned()).collect())
    }
}

impl From<&[String]> for Endpoints {
    fn from(urls: &[String]) -> Self {
        Self(urls.to_vec())
    }
}

impl<const N: usize> From<[&str; N]> for Endpoints {
    fn from(urls: [&str; N]) -> Self {
        Self(urls.iter().map(|u| (*u).to_owned()).collect())
    }
}
