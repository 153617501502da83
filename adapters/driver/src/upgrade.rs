//! The WebSocket upgrade request: the gateway's one route and the credentials it carries.

use tether_core::server::ConnectInfo;
use tungstenite::handshake::server::Request;

/// The only WebSocket route, as on the PraisonAI gateway.
pub const WS_PATH: &str = "/ws";

/// An upgrade refused before the WebSocket exists: answer with this HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upgrade refused with HTTP {status}: {reason}")]
pub struct UpgradeRefused {
    /// HTTP status (403 for a wrong path, like the reference gateway).
    pub status: u16,
    /// Why.
    pub reason: String,
}

/// Checks the route and extracts what the server machine authenticates: the `token` query
/// parameter (percent-decoded) and the `praisonai_session` cookie.
pub fn connect_info(
    request: &Request,
    peer: Option<String>,
) -> Result<ConnectInfo, UpgradeRefused> {
    let uri = request.uri();
    if uri.path() != WS_PATH {
        return Err(UpgradeRefused {
            status: 403,
            reason: format!("no WebSocket route at {}", uri.path()),
        });
    }
    let query_token = uri.query().and_then(|q| {
        ::url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let cookie = request
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix("praisonai_session=")
                .map(str::to_owned)
        });
    Ok(ConnectInfo {
        query_token,
        cookie,
        peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, cookie: Option<&str>) -> Request {
        let mut b = Request::builder().uri(uri);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_route_is_checked_and_credentials_are_decoded() {
        let info = connect_info(
            &request("/ws?x=1&token=a+b%26c", Some("a=1; praisonai_session=s")),
            None,
        )
        .unwrap();
        assert_eq!(info.query_token.as_deref(), Some("a b&c"));
        assert_eq!(info.cookie.as_deref(), Some("s"));
        assert_eq!(
            connect_info(&request("/", None), None).unwrap_err().status,
            403
        );
        assert_eq!(
            connect_info(&request("/ws", None), None)
                .unwrap()
                .query_token,
            None
        );
    }
}
