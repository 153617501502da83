//! Frames the server sends (S→C), typed after PROTOCOL.md §2.2–§6 and the captured transcript.

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::codes::{ConnectErrorCode, RecoveryStep};
use super::Map;

/// `features` of `hello_ok`: what the server accepts and emits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Client methods the server handles (`message`, `leave`, `abort`).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Event types the server may send.
    #[serde(default)]
    pub events: Vec<String>,
    /// Fields this version does not model, kept for re-encoding.
    #[serde(flatten)]
    pub extra: Map,
}

/// `policy` of `hello_ok`: limits the server advertises. Absent keys stay `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Largest inbound frame the server accepts, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<u64>,
    /// Outbound bytes the server buffers per connection before evicting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffered_bytes: Option<u64>,
    /// Outbound frames the server queues per connection before evicting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_frames: Option<u64>,
    /// Heartbeat interval in ms; absent or 0 disables the client heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Attachment size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attachment_bytes: Option<u64>,
    /// Attachment count limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attachments: Option<u64>,
    /// Attachment chunk size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// `hello_ok`: the hello was accepted. v1 fields in the reference server's key order, then the
/// v2 additions (absent on v1 peers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloOk {
    /// The negotiated protocol version.
    pub protocol: u32,
    /// Methods and events.
    #[serde(default)]
    pub features: Features,
    /// Advertised limits.
    #[serde(default)]
    pub policy: Policy,
    /// The session this connection is bound to.
    pub session_id: String,
    /// v1: "rehydrated at some point"; tether's server: "this hello resumed an existing session".
    #[serde(default)]
    pub resumed: bool,
    /// The session's head cursor (last assigned).
    #[serde(default)]
    pub cursor: u64,
    /// v2 (and tether's v1): the sequence the client has seen; `sequence + 1` is the next frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// v2: cursor of the oldest retained event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_cursor: Option<u64>,
    /// v2: `since` predates the retained window; events were lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_required: Option<bool>,
    /// v2: who is connected (PROTOCOL.md §11 shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<Value>>,
    /// v2: server health (PROTOCOL.md §11 shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Value>,
    /// v2: the session's line of history; it changes when the server restored it from a
    /// snapshot. The client sends it back in its next `hello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// `hello_error` (and the transport rejection envelope): the connection was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloError {
    /// Why.
    pub code: ConnectErrorCode,
    /// Human-readable text.
    #[serde(default)]
    pub message: String,
    /// What to do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<RecoveryStep>,
    /// Minimum wait before retrying, in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Legacy hint (`check_agent_id`, `use_older_client`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// `joined`: the legacy join was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    /// The session this connection is bound to.
    pub session_id: String,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Whether the session existed before.
    #[serde(default)]
    pub resumed: bool,
    /// Head cursor.
    #[serde(default)]
    pub cursor: u64,
    /// Oldest retained cursor (= head when nothing is retained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_cursor: Option<u64>,
    /// `since` predates the window: a `snapshot` follows instead of replays.
    #[serde(default)]
    pub resync_required: bool,
    /// The sequence the client has seen; replays start at `sequence + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Negotiated version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u32>,
    /// Server's lowest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_min_version: Option<u32>,
    /// Server's highest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_max_version: Option<u32>,
    /// Who is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Vec<Value>>,
    /// Server health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Value>,
    /// v2: the session's line of history (see [`HelloOk::epoch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// An untracked `error` frame (handshake errors of the join path, "Not joined", scope errors).
/// An `error` that carries `cursor`/`seq` is a tracked event instead ([`super::EventFrame`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Machine-readable code, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ConnectErrorCode>,
    /// Human-readable text.
    #[serde(default)]
    pub message: String,
    /// Fields this version does not model (`server_min_version`, `required_scope`, ...).
    #[serde(flatten)]
    pub extra: Map,
}

/// `snapshot`: state sent instead of replays when `since` predates the window (join path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The session state object, as sent.
    pub state: Value,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// The `GatewayEvent.to_dict()` shape: the body of `replay.event` and of broadcast frames.
/// `data` stays raw JSON: it is never copied into a `Value`.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayEvent {
    /// Event type (for replays: the original frame's type).
    #[serde(rename = "type")]
    pub kind: String,
    /// The payload (for replays: the original frame exactly as it went out).
    pub data: Box<RawValue>,
    /// Id assigned when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Record time, epoch seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// Producer (`"gateway"` for recorded frames); `null` is kept as `None` and re-sent as `null`.
    pub source: Option<String>,
    /// Recipient connection id, or `null`.
    pub target: Option<String>,
    /// The event's sequence number (only when set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl PartialEq for GatewayEvent {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.data.get() == other.data.get()
            && self.event_id == other.event_id
            && self.timestamp == other.timestamp
            && self.source == other.source
            && self.target == other.target
            && self.sequence == other.sequence
            && self.extra == other.extra
    }
}

// Hand-written because `#[serde(flatten)]` buffers values and cannot hold a `RawValue`.
impl<'de> Deserialize<'de> for GatewayEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GatewayEvent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a gateway event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GatewayEvent, A::Error> {
                let (mut kind, mut data, mut event_id, mut timestamp) = (None, None, None, None);
                let (mut source, mut target, mut sequence) = (None, None, None);
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "type" => set(&mut kind, "type", map.next_value::<String>()?)?,
                        "data" => set(&mut data, "data", map.next_value::<Box<RawValue>>()?)?,
                        "event_id" => set(&mut event_id, "event_id", map.next_value()?)?,
                        "timestamp" => set(&mut timestamp, "timestamp", map.next_value()?)?,
                        "source" => set(&mut source, "source", map.next_value()?)?,
                        "target" => set(&mut target, "target", map.next_value()?)?,
                        "sequence" => set(&mut sequence, "sequence", map.next_value()?)?,
                        other => {
                            extra.insert(other.to_owned(), map.next_value()?);
                        }
                    }
                }
                Ok(GatewayEvent {
                    kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
                    data: data.ok_or_else(|| de::Error::missing_field("data"))?,
                    event_id: event_id.flatten(),
                    timestamp: timestamp.flatten(),
                    source: source.flatten(),
                    target: target.flatten(),
                    sequence: sequence.flatten(),
                    extra,
                })
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// `replay`: one retained event re-sent after a resume. The hello path sends `{"type":"replay",
/// "event":E}`, the join path adds `"seq"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    /// The recorded event; `event.data` is the original frame.
    pub event: GatewayEvent,
    /// Join path only: the event's cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl<'de> Deserialize<'de> for Replay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Replay;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a replay frame object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Replay, A::Error> {
                let (mut event, mut seq) = (None, None);
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "type" => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                        "event" => set(&mut event, "event", map.next_value::<GatewayEvent>()?)?,
                        "seq" => set(&mut seq, "seq", map.next_value::<Option<u64>>()?)?,
                        other => {
                            extra.insert(other.to_owned(), map.next_value()?);
                        }
                    }
                }
                Ok(Replay {
                    event: event.ok_or_else(|| de::Error::missing_field("event"))?,
                    seq: seq.flatten(),
                    extra,
                })
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn set<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// What a `response` frame says about a client request (status `accepted`, `final`,
/// `duplicate`, or a future one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    /// `accepted`, `final`, `duplicate`, ...
    pub status: String,
    /// Text (`Started processing.`, the agent's answer, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// `final` only: `{"status":"ok"|"error"|"rejected", "error"?: {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    /// The session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The request this answers (v1 omits it on `final`; tether's server always sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Fields this version does not model (`cursor`, `seq`, ...).
    #[serde(flatten)]
    pub extra: Map,
}
