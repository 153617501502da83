//! [proptest](mod@proptest) strategies for tether's values: protocol frames both ways
//! (well-formed and hostile), version ranges, and the simulator's faults, actions, schedules and
//! scenarios.
//!
//! They are built for property tests of code on top of tether: an application driven through
//! the [simulator](crate::sim) under any [`fault_schedule`], a transport or a codec that must
//! carry any [`server_frame`] or [`client_frame`] unchanged, a peer that must survive any
//! [`garbage`]. Every frame they produce is held to the core's decoder by this crate's tests,
//! and proptest shrinks a failing schedule by dropping and shortening faults.
//!
//! ```
//! use std::time::Duration;
//! use tether_core::wire::ServerFrame;
//! use tether_testkit::proptest::prelude::*;
//! use tether_testkit::strategy::{fault_schedule, server_frame};
//!
//! proptest!(|(frame in server_frame())| {
//!     // Your transport would carry `frame` here; it must arrive as a frame the core reads.
//!     prop_assert!(ServerFrame::decode(&frame).is_ok(), "{frame}");
//! });
//! proptest!(|(faults in fault_schedule(2, Duration::from_secs(20), 6))| {
//!     prop_assert!(faults.len() <= 6);
//!     prop_assert!(faults.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
//! });
//! ```

use std::fmt::Debug;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Value};
use tether_core::version::VersionRange;

use crate::sim::{Action, Direction, Fault, Profile, Restore, Scenario, Target};

// ------------------------------------------------------------------------------------ versions

/// Highest protocol version the strategies offer: one above what tether speaks, so the
/// "newer than I know" cases are covered.
const TOP_VERSION: u32 = tether_core::version::V2 + 1;

/// A valid version range (`1 <= min <= max`, up to one version above v2).
pub fn version_range() -> impl Strategy<Value = VersionRange> {
    (1..=TOP_VERSION)
        .prop_flat_map(|min| (Just(min), min..=TOP_VERSION))
        .prop_map(|(min, max)| VersionRange::new(min, max).expect("min <= max, both >= 1"))
}

// ------------------------------------------------------------------------------------ frames

/// A session id as servers hand them out (tether's UUID-like ids, PraisonAI's shorter ones).
pub fn session_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "[a-zA-Z0-9_-]{1,32}",
    ]
}

/// Application content: what a request or an event carries (text with any Unicode, numbers,
/// nested objects and arrays).
pub fn content() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(Value::from),
        "[a-z ]{1,20}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec(("[a-z]{1,8}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A tracked event numbered `seq` as a server streams it live: any `type` but the reserved
/// ones, some content, and `cursor` = `seq` = `seq` (v1's shape, which v2 keeps).
pub fn tracked_event(seq: u64) -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("message".to_owned()),
        Just("token_stream".to_owned()),
        Just("status".to_owned()),
        "[a-z][a-z_]{0,15}".prop_filter("a frame type of its own", |k| !reserved(k)),
    ];
    (kind, content()).prop_map(move |(kind, content)| {
        json!({"type": kind, "content": content, "cursor": seq, "seq": seq}).to_string()
    })
}

/// Frame types with a meaning of their own in the protocol, which an application event
/// cannot use.
fn reserved(kind: &str) -> bool {
    matches!(
        kind,
        "hello"
            | "hello_ok"
            | "hello_error"
            | "join"
            | "joined"
            | "error"
            | "replay"
            | "replay_end"
            | "snapshot"
            | "ping"
            | "pong"
            | "resync"
            | "response"
            | "abort"
            | "leave"
    )
}

/// `n` tracked events numbered `first`, `first + 1`, ..., as a server streams them.
pub fn event_stream(first: u64, n: usize) -> impl Strategy<Value = Vec<String>> {
    (0..n as u64)
        .map(|i| tracked_event(first + i))
        .collect::<Vec<_>>()
}

/// Any frame a conforming server may send: `hello_ok` (v1 and v2 shapes), `hello_error`,
/// `joined`, `error`, live tracked events, replays (the nested v1 shape), `replay_end`,
/// responses to requests, `ping` and `pong`.
pub fn server_frame() -> impl Strategy<Value = String> {
    let seq = 0..1_000_000u64;
    prop_oneof![
        (session_id(), any::<bool>(), seq.clone(), any::<bool>()).prop_map(
            |(sid, resumed, cursor, v2)| {
                let mut f = json!({"type": "hello_ok", "protocol": if v2 { 2 } else { 1 },
                    "session_id": sid, "resumed": resumed, "cursor": cursor});
                if v2 {
                    f["sequence"] = json!(cursor);
                    f["oldest_cursor"] = json!(cursor.saturating_sub(100));
                }
                f.to_string()
            }
        ),
        (
            prop::sample::select(
                &[
                    "version_unsupported",
                    "auth_required",
                    "auth_failed",
                    "rate_limited",
                    "unknown_agent",
                    "a_code_from_the_future",
                ][..]
            ),
            prop::option::of(0u32..120)
        )
            .prop_map(|(code, retry)| {
                let mut f = json!({"type": "hello_error", "code": code, "message": "refused"});
                if let Some(secs) = retry {
                    f["retry_after_seconds"] = json!(secs);
                }
                f.to_string()
            }),
        (session_id(), seq.clone()).prop_map(|(sid, cursor)| {
            json!({"type": "joined", "session_id": sid, "agent_id": "echo", "resumed": false,
                "cursor": cursor})
            .to_string()
        }),
        "[a-z ]{0,30}".prop_map(|message| json!({"type": "error", "message": message}).to_string()),
        (1..1_000_000u64).prop_flat_map(tracked_event),
        (1..1_000_000u64, content()).prop_map(|(seq, content)| {
            let data = json!({"type": "message", "content": content, "cursor": seq, "seq": seq});
            json!({"type": "replay", "event": {"type": "message", "data": data,
                "event_id": "e", "timestamp": 1.7e9, "source": "gateway", "target": null,
                "sequence": seq}})
            .to_string()
        }),
        seq.clone()
            .prop_map(|cursor| json!({"type": "replay_end", "cursor": cursor}).to_string()),
        (1..1_000_000u64, "[a-z0-9-]{1,16}", content()).prop_map(|(seq, id, content)| {
            json!({"type": "response", "status": "final", "request_id": id,
                "content": content, "outcome": {"status": "ok"}, "cursor": seq, "seq": seq})
            .to_string()
        }),
        Just(r#"{"type":"ping"}"#.to_owned()),
        Just(r#"{"type":"pong"}"#.to_owned()),
    ]
}

/// Any frame a conforming client may send: `hello` (new or resuming a session `since` a
/// cursor, any valid version range), the legacy `join`, `message` with or without a request
/// id, `abort`, `resync`, `ping` and `pong`.
pub fn client_frame() -> impl Strategy<Value = String> {
    let resume = || prop::option::of((session_id(), prop::option::of(0..1_000_000u64)));
    prop_oneof![
        (version_range(), resume()).prop_map(|(v, resume)| {
            let mut f = json!({"type": "hello", "agent_id": "echo",
                "protocol_min": v.min(), "protocol_max": v.max()});
            if let Some((sid, since)) = resume {
                f["session_id"] = json!(sid);
                if let Some(since) = since {
                    f["since"] = json!(since);
                }
            }
            f.to_string()
        }),
        resume().prop_map(|resume| {
            let mut f = json!({"type": "join", "agent_id": "echo"});
            if let Some((sid, since)) = resume {
                f["session_id"] = json!(sid);
                if let Some(since) = since {
                    f["since"] = json!(since);
                }
            }
            f.to_string()
        }),
        (content(), prop::option::of("[a-z0-9-]{1,16}")).prop_map(|(content, id)| {
            let content = if content.is_null() || content == "" {
                json!("hello")
            } else {
                content
            };
            let mut f = json!({"type": "message", "content": content});
            if let Some(id) = id {
                f["request_id"] = json!(id);
            }
            f.to_string()
        }),
        "[a-z0-9-]{1,16}".prop_map(|id| json!({"type": "abort", "request_id": id}).to_string()),
        (0..1_000_000u64).prop_map(|since| json!({"type": "resync", "since": since}).to_string()),
        Just(r#"{"type":"ping"}"#.to_owned()),
        Just(r#"{"type":"pong"}"#.to_owned()),
    ]
}

/// Text no peer should send, which every peer must survive: truncated frames, JSON that is
/// not an object, a `type` that is a number, a boolean, an array or an object, unfinished deep
/// nesting, arbitrary Unicode.
/// None of it decodes as a frame of either side.
pub fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        (server_frame(), any::<prop::sample::Index>()).prop_map(|(f, at)| truncate(&f, at)),
        (client_frame(), any::<prop::sample::Index>()).prop_map(|(f, at)| truncate(&f, at)),
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            vec(any::<u8>(), 0..4).prop_map(Value::from),
        ]
        .prop_map(|v| v.to_string()),
        content()
            // (a `null` type is no type: the client decoder reads such a frame as a message)
            .prop_filter("neither a string nor null", |t| !t.is_string()
                && !t.is_null())
            .prop_map(|t| json!({"type": t, "seq": 1}).to_string()),
        (1..300usize).prop_map(|depth| format!(r#"{{"type":"message","x":{}"#, "[".repeat(depth))),
        "\\PC*".prop_filter("not JSON", |s| serde_json::from_str::<Value>(s).is_err()),
    ]
}

/// A value of the wrong type or out of range for a field holding a `u32` or a `u64`.
fn bad_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!(18_446_744_073_709_551_616.0)),
        Just(json!("7")),
        Just(json!(true)),
        Just(json!([1])),
        Just(json!({"n": 1})),
    ]
}

/// A value of the wrong type for a field holding a string.
fn bad_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(7)),
        Just(json!(true)),
        Just(json!(["s"])),
        Just(json!({"s": 1})),
    ]
}

/// A frame of a kind the server sends with one field of the wrong type or out of range: a
/// client must reject it with a typed error (it never decodes as a [`ServerFrame`]).
///
/// [`ServerFrame`]: tether_core::wire::ServerFrame
pub fn bad_server_frame() -> impl Strategy<Value = String> {
    let hello_ok = || {
        json!({"type": "hello_ok", "protocol": 1, "session_id": "s",
        "resumed": false, "cursor": 0})
    };
    prop_oneof![
        (
            prop::sample::select(&["protocol", "cursor", "sequence"][..]),
            bad_number()
        )
            .prop_map(move |(field, v)| with(hello_ok(), field, v)),
        bad_string().prop_map(move |v| with(hello_ok(), "session_id", v)),
        (prop::sample::select(&["cursor", "seq"][..]), bad_number()).prop_map(|(field, v)| {
            with(
                json!({"type": "message", "content": "x", "cursor": 1, "seq": 1}),
                field,
                v,
            )
        }),
        bad_string().prop_map(|v| {
            with(
                json!({"type": "hello_error", "code": "auth_failed", "message": "no"}),
                "code",
                v,
            )
        }),
    ]
}

/// A frame of a kind the client sends with one field of the wrong type or out of range: a
/// server must answer it with a typed error (it never decodes as a [`ClientFrame`]).
///
/// [`ClientFrame`]: tether_core::wire::ClientFrame
pub fn bad_client_frame() -> impl Strategy<Value = String> {
    let hello = || {
        json!({"type": "hello", "agent_id": "echo", "protocol_min": 1,
        "protocol_max": 2, "session_id": "s", "since": 3})
    };
    prop_oneof![
        (
            prop::sample::select(&["protocol_min", "protocol_max", "since"][..]),
            bad_number()
        )
            .prop_map(move |(field, v)| with(hello(), field, v)),
        (
            prop::sample::select(&["agent_id", "session_id"][..]),
            bad_string()
        )
            .prop_map(move |(field, v)| with(hello(), field, v)),
        bad_string().prop_map(|v| {
            with(
                json!({"type": "message", "content": "hi", "request_id": "r"}),
                "request_id",
                v,
            )
        }),
    ]
}

/// `frame` with `field` set to `value`, as text.
fn with(mut frame: Value, field: &str, value: Value) -> String {
    frame[field] = value;
    frame.to_string()
}

/// `text` cut at a position chosen by `at`, on a character boundary, so it is not JSON any
/// more (a frame is one JSON object: any proper prefix is unfinished).
fn truncate(text: &str, at: prop::sample::Index) -> String {
    let cut = at.index(text.len().max(1));
    let mut end = cut.min(text.len().saturating_sub(1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

// ------------------------------------------------------------------------------------ simulator

fn millis(range: std::ops::RangeInclusive<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_millis)
}

/// Any [`Fault`] the simulator knows, on clients `0..clients`: cuts, half-open sockets,
/// slowdowns, snapshots, crashes and graceful shutdowns with every kind of restore, clock
/// jumps, frozen processes and client restarts.
pub fn fault(clients: usize) -> impl Strategy<Value = Fault> {
    let client = 0..clients.max(1);
    let direction = prop_oneof![
        Just(Direction::ToServer),
        Just(Direction::ToClient),
        Just(Direction::Both)
    ];
    let restore = prop_oneof![
        Just(Restore::Latest),
        Just(Restore::Persisted),
        Just(Restore::Empty)
    ];
    let target = prop_oneof![
        Just(Target::Server),
        client.clone().prop_map(Target::Client)
    ];
    prop_oneof![
        4 => client.clone().prop_map(|client| Fault::Cut { client }),
        2 => (client.clone(), direction)
            .prop_map(|(client, direction)| Fault::HalfOpen { client, direction }),
        1 => (client.clone(), millis(0..=3_000), millis(0..=10_000)).prop_map(
            |(client, extra, duration)| Fault::Slow { client, extra, duration }
        ),
        1 => Just(Fault::Persist),
        2 => (restore, millis(0..=3_000), any::<bool>()).prop_map(
            |(restore, downtime, graceful)| Fault::Crash { restore, downtime, graceful }
        ),
        1 => millis(0..=90_000).prop_map(Fault::ClockJump),
        1 => (target, millis(0..=8_000))
            .prop_map(|(target, duration)| Fault::Freeze { target, duration }),
        1 => client.prop_map(|client| Fault::RestartClient { client }),
    ]
}

/// Any application [`Action`] on clients `0..clients`: publishes to one session or to all,
/// requests, a client stopped by its application.
pub fn action(clients: usize) -> impl Strategy<Value = Action> {
    let client = 0..clients.max(1);
    prop_oneof![
        4 => (client.clone(), 1..5u32)
            .prop_map(|(client, count)| Action::Publish { client, count }),
        1 => (1..5u32).prop_map(|count| Action::Broadcast { count }),
        2 => client.clone().prop_map(|client| Action::Send { client }),
        1 => client.prop_map(|client| Action::Disconnect { client }),
    ]
}

/// Up to `max` entries of `entry` at virtual times within `within`, in time order (the shape
/// [`Sim::schedule`](crate::sim::Sim::schedule) and
/// [`Sim::schedule_action`](crate::sim::Sim::schedule_action) take). Shrinks by dropping
/// entries and simplifying each.
pub fn schedule<T: Clone + Debug>(
    entry: impl Strategy<Value = T>,
    within: Duration,
    max: usize,
) -> impl Strategy<Value = Vec<(Duration, T)>> {
    let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
    vec((millis(0..=ms), entry), 0..=max).prop_map(|mut entries| {
        entries.sort_by_key(|e| e.0);
        entries
    })
}

/// Up to `max` [`fault`]s on clients `0..clients` within `within`, in time order.
pub fn fault_schedule(
    clients: usize,
    within: Duration,
    max: usize,
) -> impl Strategy<Value = Vec<(Duration, Fault)>> {
    schedule(fault(clients), within, max)
}

/// A whole simulator run: the [`Scenario`] of a random seed (configs, clients and workload
/// sized by `profile`), its fault schedule drawn by [`fault_schedule`] (within the profile's
/// shortest faulty phase) instead of from the seed, so that proptest can shrink it fault by
/// fault.
pub fn scenario(profile: Profile) -> impl Strategy<Value = Scenario> {
    let clients = profile.max_clients.max(profile.min_clients);
    let faults = fault_schedule(clients, profile.min_duration, profile.max_faults);
    (any::<u64>(), faults).prop_map(move |(seed, faults)| Scenario {
        faults,
        ..Scenario::generate_with(seed, &profile)
    })
}
