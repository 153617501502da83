//! The wire format: one JSON object per WebSocket text frame, PraisonAI-compatible (v1) with
//! tether's additive v2 fields.
//!
//! Decoding is two-step and copy-light: a borrowed peek reads only `type`, `cursor` and `seq`
//! (for server frames, a one-pass scanner that validates the JSON as it goes, with the serde
//! peek as the fallback for anything unusual);
//! live event frames (the hot path) are kept as their original text ([`EventFrame`]) and never
//! parsed into a `Value`; handshake and replay frames are parsed into typed structs whose unknown
//! fields are kept in `extra`, so every frame re-encodes to an equivalent object. Ill-typed or
//! missing fields give [`DecodeError::Field`] naming the field.
//!
//! ```
//! use tether_core::wire::{ServerFrame, ClientFrame, Hello};
//! let frame = ServerFrame::decode(r#"{"type":"message","content":"hi","cursor":4,"seq":4}"#).unwrap();
//! match frame {
//!     ServerFrame::Event(ev) => assert_eq!((ev.kind.as_str(), ev.sequence()), ("message", Some(4))),
//!     other => panic!("unexpected {other:?}"),
//! }
//! let hello = ClientFrame::Hello(Hello { agent_id: Some("echo".into()), ..Hello::default() });
//! assert_eq!(hello.encode(), r#"{"type":"hello","agent_id":"echo"}"#);
//! ```

mod batch;
mod client_frames;
pub mod close;
mod codes;
mod content;
pub(crate) mod encode;
pub(crate) mod json;
mod scan;
mod server_frames;

use std::borrow::Cow;

use serde::Deserialize;

pub use batch::{EncodedFields, EventBatch, FieldsError};
pub use client_frames::{Abort, Hello, Join, MessageFrame, ProtocolRange, ServerReply};
pub use codes::{ConnectErrorCode, RecoveryStep};
pub use content::Content;
pub(crate) use scan::peek;
pub use server_frames::{
    ErrorFrame, Features, GatewayEvent, HelloError, HelloOk, Joined, Policy, Replay, ResponseFrame,
    Snapshot,
};

/// A JSON object's fields.
pub type Map = serde_json::Map<String, serde_json::Value>;

/// Why a frame could not be decoded. The peer sent it; the connection can go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or trailing garbage).
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// Valid JSON, but not an object (`[1,2,3]`, `5`, ...).
    #[error("frame is not a JSON object")]
    NotObject,
    /// A field is missing or has the wrong type or range; `field` is its dotted path.
    #[error("field `{field}`: {reason}")]
    Field {
        /// Dotted path of the offending field, e.g. `protocol_min` or `event.data`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A binary WebSocket frame: the protocol is text only.
    #[error("binary frames are not part of the protocol")]
    Binary,
    /// The frame exceeds the configured size limit.
    #[error("frame of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Frame size in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

impl DecodeError {
    /// The field at fault, if the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A live frame kept as its original text: tracked events (`cursor`/`seq` at top level) and
/// untracked notices (`status`, broadcasts, `aborted`, `server_request`, unknown types ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFrame {
    /// The frame's `type`.
    pub kind: String,
    /// Top-level `cursor`, if any.
    pub cursor: Option<u64>,
    /// Top-level `seq`, if any.
    pub seq: Option<u64>,
    /// The exact JSON text of the whole frame.
    pub text: Box<str>,
}

impl EventFrame {
    /// The frame's position in the session's sequence: `seq`, else `cursor`. `None` = untracked.
    pub fn sequence(&self) -> Option<u64> {
        self.seq.or(self.cursor)
    }

    /// The resume position this frame establishes: `cursor`, else `seq`.
    pub fn resume_cursor(&self) -> Option<u64> {
        self.cursor.or(self.seq)
    }

    /// Parses the whole frame as `T` (e.g. [`ResponseFrame`]).
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, DecodeError> {
        parse_typed(&self.text)
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerFrame {
    /// Hello accepted.
    HelloOk(HelloOk),
    /// Connection or hello refused.
    HelloError(HelloError),
    /// Legacy join accepted.
    Joined(Joined),
    /// An untracked `error` (a tracked one is an [`ServerFrame::Event`]).
    Error(ErrorFrame),
    /// A retained event re-sent after a resume.
    Replay(Replay),
    /// State instead of replays (join path, `resync_required`).
    Snapshot(Snapshot),
    /// Heartbeat request: answer `pong`.
    Ping,
    /// Heartbeat answer.
    Pong,
    /// Any other frame, tracked or not, kept as text.
    Event(EventFrame),
}

/// A frame sent by the client.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientFrame {
    /// Modern handshake.
    Hello(Hello),
    /// Legacy handshake.
    Join(Join),
    /// A user turn (also a frame without `type`).
    Message(MessageFrame),
    /// Cancel the running turn.
    Abort(Abort),
    /// End the session.
    Leave(Map),
    /// Answer to a `server_request`.
    ServerReply(ServerReply),
    /// Heartbeat request.
    Ping,
    /// Heartbeat answer.
    Pong,
    /// A type this version does not know, kept as text.
    Other(EventFrame),
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    cursor: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct PeekType<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

impl ServerFrame {
    /// Decodes one text frame.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let peek = match scan::peek(text) {
            Some(p) => Peek {
                kind: Some(Cow::Borrowed(p.kind)),
                cursor: p.cursor,
                seq: p.seq,
            },
            None => {
                ensure_object(text)?;
                parse_typed(text)?
            }
        };
        let kind = peek.kind.ok_or_else(|| DecodeError::Field {
            field: "type".into(),
            reason: "missing".into(),
        })?;
        let tracked = peek.seq.is_some() || peek.cursor.is_some();
        Ok(match kind.as_ref() {
            "hello_ok" => Self::HelloOk(parse_frame(text)?),
            "hello_error" => Self::HelloError(parse_frame(text)?),
            "joined" => Self::Joined(parse_frame(text)?),
            "error" if !tracked => Self::Error(parse_frame(text)?),
            "replay" => Self::Replay(parse_typed(text)?),
            "snapshot" => Self::Snapshot(parse_frame(text)?),
            "ping" if !tracked => Self::Ping,
            "pong" if !tracked => Self::Pong,
            _ => Self::Event(EventFrame {
                kind: kind.into_owned(),
                cursor: peek.cursor,
                seq: peek.seq,
                text: text.into(),
            }),
        })
    }
}

impl ClientFrame {
    /// Decodes one text frame. A missing or `null` `type` means `message`, as on the reference
    /// server.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        ensure_object(text)?;
        let peek: PeekType = parse_typed(text)?;
        let kind = peek.kind.unwrap_or(Cow::Borrowed("message"));
        Ok(match kind.as_ref() {
            "hello" => Self::Hello(parse_frame(text)?),
            "join" => Self::Join(parse_frame(text)?),
            "message" => Self::Message(parse_frame(text)?),
            "abort" | "message_abort" => Self::Abort(parse_frame(text)?),
            "leave" => Self::Leave(without_type(parse_typed(text)?)),
            "server_reply" => Self::ServerReply(parse_frame(text)?),
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            _ => Self::Other(EventFrame {
                kind: kind.into_owned(),
                cursor: None,
                seq: None,
                text: text.into(),
            }),
        })
    }
}

/// serde's derived structs also accept arrays; frames must be objects.
fn ensure_object(text: &str) -> Result<(), DecodeError> {
    if text.trim_start().starts_with('{') {
        return Ok(());
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => Err(DecodeError::NotObject),
        Err(err) => Err(DecodeError::Syntax(err.to_string())),
    }
}

fn without_type(mut map: Map) -> Map {
    map.remove("type");
    map
}

/// Typed frames keep unknown fields in `extra`; the `type` tag is not one of them.
trait Tagless {
    fn extra_mut(&mut self) -> &mut Map;
}

macro_rules! tagless {
    ($($t:ty),*) => {$(
        impl Tagless for $t {
            fn extra_mut(&mut self) -> &mut Map {
                &mut self.extra
            }
        }
    )*};
}
tagless!(HelloOk, HelloError, Joined, ErrorFrame, Snapshot);
tagless!(Hello, Join, MessageFrame, Abort, ServerReply);

fn parse_frame<'a, T: Deserialize<'a> + Tagless>(text: &'a str) -> Result<T, DecodeError> {
    let mut frame: T = parse_typed(text)?;
    frame.extra_mut().remove("type");
    Ok(frame)
}

/// Parses `text` as `T`; on failure, re-parses with path tracking to name the field (errors are
/// the cold path, so the hot path pays nothing for good messages).
pub(crate) fn parse_typed<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, DecodeError> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        Err(err) => Err(explain::<T>(text, err)),
    }
}

fn explain<'a, T: Deserialize<'a>>(text: &'a str, first: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    if matches!(
        first.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return DecodeError::Syntax(first.to_string());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let Err(err) = serde_path_to_error::deserialize::<_, T>(&mut de) else {
        return DecodeError::Syntax(first.to_string());
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let message = inner.to_string();
    let reason = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    if let Some(name) = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        let field = if path == "." {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        return DecodeError::Field {
            field,
            reason: "missing".into(),
        };
    }
    if let Some(name) = reason
        .strip_prefix("duplicate field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return DecodeError::Field {
            field: if path == "." {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            },
            reason: "duplicate".into(),
        };
    }
    if path == "." {
        if reason.starts_with("invalid type") {
            return DecodeError::NotObject;
        }
        return DecodeError::Syntax(reason);
    }
    DecodeError::Field {
        field: path,
        reason,
    }
}

#[cfg(test)]
mod tests;
