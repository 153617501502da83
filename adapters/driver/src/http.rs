//! Plain HTTP on the WebSocket port, like the PraisonAI gateway: `GET /health` (unauthenticated,
//! the reference JSON shape), `GET /ready` (200/503: 503 while shutting down or while a component
//! such as the session store is failing, see `Server::set_failing`) and `GET /live`, and `GET /metrics`
//! (Prometheus text, behind `Authorization: Bearer <token>` when the server has a token — the way
//! Prometheus scrape configs send it). Parsing and responses live here once; each runtime crate
//! only reads the request head and writes the bytes back.

use crate::{Server, ServerError};

/// Largest request head accepted before deciding between WebSocket and HTTP.
pub const MAX_HEAD: usize = 8192;

/// What an incoming connection's request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// More bytes are needed to decide.
    Incomplete,
    /// A WebSocket upgrade: hand the connection (with the bytes already read) to tungstenite.
    WebSocket,
    /// A plain HTTP request.
    Http(HttpRequest),
    /// Not HTTP, or a head over [`MAX_HEAD`]: close.
    Invalid,
}

/// The parts of a plain HTTP request the endpoints use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The token of an `Authorization: Bearer` header.
    pub bearer: Option<String>,
}

/// Classifies the bytes read so far.
pub fn classify(head: &[u8]) -> Incoming {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => Incoming::Incomplete,
        Ok(httparse::Status::Partial) | Err(_) => Incoming::Invalid,
        Ok(httparse::Status::Complete(_)) => {
            let header = |name: &str| {
                request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
            };
            if header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
                return Incoming::WebSocket;
            }
            let path = request.path.unwrap_or("/");
            Incoming::Http(HttpRequest {
                method: request.method.unwrap_or("GET").to_owned(),
                path: path.split('?').next().unwrap_or("/").to_owned(),
                bearer: header("authorization")
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(|t| t.trim().to_owned()),
            })
        }
    }
}

/// The full HTTP/1.1 response to `request` (the connection is closed after it).
pub async fn respond(server: &Server, token: Option<&str>, request: &HttpRequest) -> Vec<u8> {
    if request.method != "GET" && request.method != "HEAD" {
        return response(405, "text/plain", "method not allowed\n");
    }
    let reply = match request.path.as_str() {
        "/health" => server.health().await.map(|h| {
            let body = serde_json::to_string(&h).unwrap_or_else(|_| "{}".into());
            response(200, "application/json", &body)
        }),
        "/live" => server
            .health()
            .await
            .map(|_| response(200, "application/json", r#"{"live":true}"#)),
        // A failing component answers at once: the hub may be waiting for it.
        "/ready" if !server.failing().is_empty() => {
            let failing = serde_json::to_string(&server.failing()).unwrap_or_default();
            let body = format!(r#"{{"ready":false,"failing":{failing}}}"#);
            Ok(response(503, "application/json", &body))
        }
        "/ready" => server.health().await.map(|h| {
            let ready = h.status == "healthy";
            let body = format!(
                r#"{{"ready":{ready},"failing":{},"uptime":{}}}"#,
                if ready { "[]" } else { r#"["shutdown"]"# },
                h.uptime
            );
            response(if ready { 200 } else { 503 }, "application/json", &body)
        }),
        "/metrics" if !server.metrics().is_enabled() => {
            Ok(response(404, "text/plain", "metrics are off\n"))
        }
        "/metrics" if !authorized(token, request.bearer.as_deref()) => {
            Ok(response(401, "text/plain", "unauthorized\n"))
        }
        "/metrics" => server
            .metrics_text()
            .await
            .map(|text| response(200, "text/plain; version=0.0.4; charset=utf-8", &text)),
        _ => Ok(response(404, "text/plain", "not found\n")),
    };
    // The only error here is a stopped server.
    reply.unwrap_or_else(|_: ServerError| response(503, "application/json", r#"{"ready":false}"#))
}

/// Constant-time comparison, so the token cannot be probed byte by byte.
fn authorized(token: Option<&str>, bearer: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(bearer) = bearer else {
        return false;
    };
    let (a, b) = (token.as_bytes(), bearer.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff));
    }
    diff == 0
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_classified() {
        assert_eq!(classify(b"GET /health HTT"), Incoming::Incomplete);
        let ws = b"GET /ws?token=x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(classify(ws), Incoming::WebSocket);
        let m = b"GET /metrics?x=1 HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n";
        assert_eq!(
            classify(m),
            Incoming::Http(HttpRequest {
                method: "GET".into(),
                path: "/metrics".into(),
                bearer: Some("s3cret".into())
            })
        );
        assert_eq!(classify(b"\x16\x03\x01garbage\r\n\r\n"), Incoming::Invalid);
        assert_eq!(classify(&vec![b'a'; MAX_HEAD + 1]), Incoming::Invalid);
    }

    #[test]
    fn the_metrics_token_is_checked_exactly() {
        assert!(authorized(None, None));
        assert!(authorized(Some("abc"), Some("abc")));
        assert!(!authorized(Some("abc"), Some("abd")));
        assert!(!authorized(Some("abc"), Some("ab")));
        assert!(!authorized(Some("abc"), None));
    }
}
