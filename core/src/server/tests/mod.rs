//! Timeline tests of the server machine, written as `t0 + n s`, one topic a module; the
//! helpers they share are here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::version::VersionRange;
use crate::wire::ServerFrame;

use crate::test_origin as t0;

mod handshake;
mod liveness;
mod output;
mod requests;
mod resume;
mod snapshot;
mod store;
mod window;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cfg() -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        epoch_at_start: 1_700_000_000.0,
        ..ServerConfig::default()
    }
}

/// Drains every transmit (confirming each frame as written) and returns them.
fn drain(s: &mut Server, now: Instant) -> Vec<(ConnId, ServerTransmit)> {
    let mut out = Vec::new();
    while let Some((c, t)) = s.poll_transmit() {
        if let ServerTransmit::Frame(f) = &t {
            s.handle_sent(now, c, f.len());
        }
        out.push((c, t));
    }
    out
}

fn frames_of(out: &[(ConnId, ServerTransmit)], conn: ConnId) -> Vec<Value> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, t)| match t {
            ServerTransmit::Frame(f) => Some(serde_json::from_str(f).unwrap()),
            ServerTransmit::Close { .. } => None,
        })
        .collect()
}

fn texts_of(out: &[(ConnId, ServerTransmit)], conn: ConnId) -> Vec<String> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, t)| match t {
            ServerTransmit::Frame(f) => Some(f.to_string()),
            ServerTransmit::Close { .. } => None,
        })
        .collect()
}

fn close_of(out: &[(ConnId, ServerTransmit)], conn: ConnId) -> Option<(u16, String)> {
    out.iter().find_map(|(c, t)| match t {
        ServerTransmit::Close { code, reason } if *c == conn => Some((*code, reason.clone())),
        _ => None,
    })
}

fn events(s: &mut Server) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Top-level keys in wire order (serde_json's Map sorts them).
fn keys(text: &str) -> Vec<String> {
    struct K(Vec<String>);
    impl<'de> serde::Deserialize<'de> for K {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = K;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<K, A::Error> {
                    let mut v = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        v.push(k);
                    }
                    Ok(K(v))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<K>(text).unwrap().0
}

const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);

fn hello(conn: ConnId, s: &mut Server, now: Instant, body: &str) -> Vec<(ConnId, ServerTransmit)> {
    s.handle_text(now, conn, body);
    drain(s, now)
}

/// Connects and says a v1 hello; returns the session id. In store mode the new session is
/// reported stored first (its `hello_ok` waits for that).
fn connect_v1(s: &mut Server, now: Instant, conn: ConnId) -> SessionId {
    s.handle_connected(now, conn, ConnectInfo::default());
    let mut out = hello(
        conn,
        s,
        now,
        r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1}"#,
    );
    if s.config().external_store {
        assert!(
            out.is_empty(),
            "nothing before the store holds the session: {out:?}"
        );
        let created = std::iter::from_fn(|| s.poll_store_request())
            .find_map(|r| match r {
                StoreRequest::WriteSession { session, .. } => Some(session.session_id),
                _ => None,
            })
            .expect("the session goes to the store");
        s.handle_store_written(now, &created);
        out = drain(s, now);
    }
    let f = frames_of(&out, conn);
    assert_eq!(f[0]["type"], "hello_ok", "{f:?}");
    SessionId(f[0]["session_id"].as_str().unwrap().to_owned())
}

/// A v2 resume of `sid` since `since` on `conn`: every frame it gets now.
fn resume_v2(
    s: &mut Server,
    now: Instant,
    conn: ConnId,
    sid: &SessionId,
    since: u64,
) -> Vec<Value> {
    s.handle_connected(now, conn, ConnectInfo::default());
    let out = hello(
        conn,
        s,
        now,
        &format!(
            r#"{{"type":"hello","agent_id":"echo","protocol_min":2,"protocol_max":2,"session_id":"{sid}","since":{since}}}"#
        ),
    );
    frames_of(&out, conn)
}
