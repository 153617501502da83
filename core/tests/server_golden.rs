//! Golden frames: what tether's server sends for the transcript's v1 scenario matches the
//! reference server's frames byte for byte (modulo ids, and the documented additions:
//! `sequence` in `hello_ok`, `request_id` on `final`), and every frame decodes with
//! `ServerFrame::decode`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_core::server::{ConnId, ConnectInfo, Server, ServerConfig, ServerTransmit, SessionId};
use tether_core::wire::ServerFrame;

const FRAMES: &str = include_str!("fixtures/praisonai-transcript-frames.jsonl");
const REF_SESSION: &str = "67543667-7bf1-4e7d-b1d8-5e070ca16b72";

#[allow(clippy::disallowed_methods)] // tests only: an arbitrary origin for the timeline
fn t0() -> Instant {
    Instant::now()
}

fn reference(prefix: &str) -> String {
    FRAMES
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["dir"] == "S->C")
        .map(|r| r["text"].as_str().unwrap().to_owned())
        .find(|t| t.starts_with(prefix))
        .unwrap_or_else(|| panic!("no reference frame starting with {prefix}"))
}

fn drain(s: &mut Server, now: Instant, conn: ConnId) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((c, t)) = s.poll_transmit() {
        if let ServerTransmit::Frame(f) = t {
            s.handle_sent(now, c, f.len());
            if c == conn {
                assert!(ServerFrame::decode(&f).is_ok(), "does not decode: {f}");
                out.push(f.to_string());
            }
        }
    }
    out
}

/// Replaces the volatile values (ids, timestamps, targets) so frames can be compared.
fn normalise(text: &str, sid: &str) -> String {
    let mut v: Value = serde_json::from_str(&text.replace(sid, REF_SESSION)).unwrap();
    if let Some(e) = v.get_mut("event") {
        e["event_id"] = json!("E");
        e["timestamp"] = json!(0);
        e["target"] = json!("T");
    }
    v.to_string()
}

fn keys(text: &str) -> Vec<String> {
    // serde_json's Map sorts keys; read them in wire order from the text itself.
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    struct V<'a>(&'a mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for V<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<serde::de::IgnoredAny>()?;
                self.0.push(k);
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut de, V(&mut out)).unwrap();
    out
}

#[test]
fn the_transcript_scenario_produces_the_reference_frames() {
    let t0 = t0();
    let config = ServerConfig {
        agents: vec!["echo".into()],
        ..ServerConfig::default()
    };
    let mut s = Server::new(config, t0);
    let c = ConnId(1);
    s.handle_connected(t0, c, ConnectInfo::default());
    s.handle_text(t0, c, r#"{"type": "hello", "agent_id": "echo", "protocol_min": 1, "protocol_max": 1, "capabilities": ["streaming", "ack"]}"#);
    let hello_ok = drain(&mut s, t0, c).remove(0);
    let parsed: Value = serde_json::from_str(&hello_ok).unwrap();
    let sid = parsed["session_id"].as_str().unwrap().to_owned();
    let epoch = parsed["epoch"]
        .as_u64()
        .expect("hello_ok carries the session epoch");
    let ours = hello_ok.replace(&sid, REF_SESSION);
    let theirs = reference(r#"{"type":"hello_ok""#);
    assert_eq!(
        ours,
        format!(
            "{},\"sequence\":0,\"epoch\":{epoch}}}",
            theirs
                .trim_end_matches('}')
                .trim_end_matches("\"cursor\":0")
                .to_owned()
                + "\"cursor\":0"
        ),
        "hello_ok = the reference + sequence + epoch"
    );

    s.handle_text(
        t0,
        c,
        r#"{"type": "message", "content": "hi", "request_id": "req-1"}"#,
    );
    let accepted = drain(&mut s, t0, c).remove(0);
    assert_eq!(
        accepted.replace(&sid, REF_SESSION),
        reference(r#"{"type":"response","status":"accepted""#)
    );
    s.handle_text(
        t0,
        c,
        r#"{"type": "message", "content": "hi", "request_id": "req-1"}"#,
    );
    let dup = drain(&mut s, t0, c).remove(0);
    // The reference sends its `final` (cursor 2) before the duplicate; ours is not answered yet.
    let want = reference(r#"{"type":"response","status":"duplicate""#)
        .replace("\"cursor\":3,\"seq\":3", "\"cursor\":2,\"seq\":2");
    assert_eq!(dup.replace(&sid, REF_SESSION), want);

    let session = SessionId(sid.clone());
    for i in 1..=3 {
        s.publish(
            t0,
            &session,
            "message",
            &[
                ("content", json!(format!("server event {i}"))),
                ("session_id", json!(sid)),
            ],
        )
        .unwrap();
    }
    let live = drain(&mut s, t0, c);
    assert_eq!(
        live[0].replace(&sid, REF_SESSION),
        reference(r#"{"type":"message","content":"server event 1""#)
            .replace("\"cursor\":4,\"seq\":4", "\"cursor\":3,\"seq\":3")
    );

    // Resume since 2: the replay envelope has the reference's keys in its order.
    s.handle_closed(t0, c);
    let c2 = ConnId(2);
    let later = t0 + Duration::from_secs(1);
    s.handle_connected(later, c2, ConnectInfo::default());
    s.handle_text(later, c2, &json!({"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1,"session_id":sid,"since":2}).to_string());
    let out = drain(&mut s, later, c2);
    let replay = &out[1];
    let theirs = reference(r#"{"type":"replay","event":{"type":"message""#);
    assert_eq!(keys(replay), keys(&theirs));
    assert_eq!(
        normalise(replay, &sid),
        normalise(
            &theirs
                .replace("\"cursor\":4,\"seq\":4", "\"cursor\":3,\"seq\":3")
                .replace("\"sequence\":4", "\"sequence\":3"),
            &sid
        )
    );
}
