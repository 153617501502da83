//! The `content` of a request or a response, as the application sees it.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `content` of a request ([`ServerEvent::Request`](crate::server::ServerEvent::Request)) or
/// of its answer ([`RequestStatus`](crate::client::RequestStatus)): any JSON value, usually a
/// string.
///
/// It derefs to the [`Value`]. Its `Display` writes a string as its text, without JSON quotes,
/// and anything else as JSON — what the PraisonAI agent's f-string does — so
/// `format!("echo: {content}")` answers `"hello"` with `echo: hello`.
///
/// ```
/// use serde_json::json;
/// use tether_core::wire::Content;
///
/// assert_eq!(format!("echo: {}", Content::from(json!("hello"))), "echo: hello");
/// assert_eq!(format!("echo: {}", Content::from(json!({"n": 1}))), r#"echo: {"n":1}"#);
/// assert_eq!(Content::from(json!("hello")).as_str(), Some("hello"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Content(Value);

impl Content {
    /// The JSON value.
    pub fn into_value(self) -> Value {
        self.0
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Value::String(text) => f.write_str(text),
            other => other.fmt(f),
        }
    }
}

impl Deref for Content {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl From<Value> for Content {
    fn from(value: Value) -> Self {
        Self(value)
    }
}

impl From<Content> for Value {
    fn from(content: Content) -> Self {
        content.0
    }
}

impl PartialEq<Value> for Content {
    fn eq(&self, other: &Value) -> bool {
        &self.0 == other
    }
}

impl PartialEq<str> for Content {
    fn eq(&self, other: &str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<&str> for Content {
    fn eq(&self, other: &&str) -> bool {
        self.0 == **other
    }
}
