//! Core benchmarks, each printed as a ratio against a baseline measured in the same run (these
//! machines are noisy; only ratios are comparable). `cargo bench -p tether-core`.
//!
//! | figure | subject | baseline | target |
//! |---|---|---|---|
//! | client event | decode + handle + `poll_event` of a ~200-byte tracked frame | bare serde_json typed decode of the same frame (`data` borrowed raw) | ≤ 1.3× |
//! | server publish | stamp + ring push + encode + transmit of one event | bare serde_json encode of the same frame | ≤ 1.3× |
//! | resume 10k | a resume that replays 10,000 events | encoding those 10,000 replay frames with serde_json | ≤ 1.5× |
//!
//! Exits non-zero if a ratio misses its target.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::hint::black_box;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tether_core::client::{Client, ClientConfig, Event};
use tether_core::server::{ConnId, ConnectInfo, Server, ServerConfig, ServerEvent, ServerTransmit};

/// Median nanoseconds per operation over `samples` interleaved samples of `batch` operations.
fn measure(samples: usize, mut run_batch: impl FnMut() -> usize) -> f64 {
    let mut per_op: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            let ops = run_batch();
            t.elapsed().as_nanos() as f64 / ops.max(1) as f64
        })
        .collect();
    per_op.sort_by(|a, b| a.partial_cmp(b).unwrap());
    per_op[per_op.len() / 2]
}

/// Interleaves baseline and subject samples so drift hits both alike; returns (baseline, subject).
fn compare(
    samples: usize,
    mut baseline: impl FnMut() -> usize,
    mut subject: impl FnMut() -> usize,
) -> (f64, f64) {
    let (mut b, mut s) = (vec![], vec![]);
    for _ in 0..samples {
        b.push(measure(1, &mut baseline));
        s.push(measure(1, &mut subject));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, c| a.partial_cmp(c).unwrap());
        v[v.len() / 2]
    };
    (median(&mut b), median(&mut s))
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct TypedEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    event_id: &'a str,
    timestamp: f64,
    source: &'a str,
    target: &'a str,
    cursor: u64,
    seq: u64,
}

#[derive(Serialize)]
struct EventOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    content: &'a str,
    session_id: &'a str,
    cursor: u64,
    seq: u64,
}

fn event_frame(seq: u64) -> String {
    json!({"type":"token_stream","data":{"content":"one two three ","session_id":"67543667-7bf1-4e7d-b1d8-5e070ca16b72"},
           "event_id":"c2f6c9d1-37f4-477c-ac10-68c8a144d6ef","timestamp":1795617606.736033,"source":"echo",
           "target":"636331f8-ac19-41da-bc8a-8775ecc89b6b","cursor":seq,"seq":seq})
    .to_string()
}

struct Row {
    name: &'static str,
    baseline: f64,
    subject: f64,
    target: f64,
    unit: &'static str,
}

fn client_event() -> Row {
    const N: u64 = 20_000;
    let frames: Vec<String> = (1..=N * 40).map(event_frame).collect();
    let now = Instant::now();
    let mut client = Client::new(ClientConfig::new("echo"), now);
    while client.poll_transmit().is_some() {}
    client.handle_connected(now);
    while client.poll_transmit().is_some() {}
    client.handle_text(
        now,
        r#"{"type":"hello_ok","protocol":2,"session_id":"s","cursor":0,"sequence":0}"#,
    );
    client.handle_text(now, r#"{"type":"replay_end","cursor":0,"replayed":0}"#);
    while client.poll_event().is_some() {}
    let mut next = 0usize;
    let (baseline, subject) = compare(
        31,
        || {
            for f in &frames[..N as usize] {
                let e: TypedEvent = serde_json::from_str(black_box(f)).unwrap();
                black_box(e);
            }
            N as usize
        },
        || {
            // Fresh sequence numbers each sample: every frame is delivered.
            let batch = &frames[next..next + N as usize];
            next += N as usize;
            for f in batch {
                client.handle_text(now, black_box(f));
                while let Some(e) = client.poll_event() {
                    debug_assert!(matches!(e, Event::Delivered(_)));
                    black_box(e);
                }
            }
            N as usize
        },
    );
    Row {
        name: "client: decode+handle+poll_event of a 200-byte event",
        baseline,
        subject,
        target: 1.3,
        unit: "ns/event",
    }
}

fn connected_server(events: u64) -> (Server, ConnId, tether_core::server::SessionId, Instant) {
    let now = Instant::now();
    let config = ServerConfig {
        agents: vec!["echo".into()],
        ring_max_events: (events as usize).max(16),
        ring_max_bytes: 1 << 30,
        max_queued_frames: usize::MAX / 2,
        max_buffered_bytes: usize::MAX / 2,
        ..ServerConfig::default()
    };
    let mut server = Server::new(config, now);
    let conn = ConnId(1);
    server.handle_connected(now, conn, ConnectInfo::default());
    server.handle_text(
        now,
        conn,
        r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2}"#,
    );
    let mut session = None;
    while let Some(e) = server.poll_event() {
        if let ServerEvent::SessionCreated { session: s, .. } = e {
            session = Some(s);
        }
    }
    while let Some((c, t)) = server.poll_transmit() {
        if let ServerTransmit::Frame(f) = t {
            server.handle_sent(now, c, f.len());
        }
    }
    (server, conn, session.unwrap(), now)
}

fn server_publish() -> Row {
    const N: usize = 20_000;
    let (mut server, _conn, session, now) = connected_server(1_000_000);
    let content =
        json!("one two three four five six seven eight nine ten eleven twelve thirteen fourteen");
    let fields = [
        ("content", content.clone()),
        ("session_id", json!(session.as_str())),
    ];
    let sid = session.as_str().to_owned();
    let mut seq = 0u64;
    let (baseline, subject) = compare(
        31,
        || {
            for i in 0..N as u64 {
                let out = EventOut {
                    kind: "message",
                    content: content.as_str().unwrap(),
                    session_id: &sid,
                    cursor: i,
                    seq: i,
                };
                black_box(serde_json::to_string(&out).unwrap());
            }
            N
        },
        || {
            for _ in 0..N {
                seq = server.publish(now, &session, "message", &fields).unwrap();
                while let Some((c, t)) = server.poll_transmit() {
                    if let ServerTransmit::Frame(f) = t {
                        server.handle_sent(now, c, f.len());
                        black_box(f);
                    }
                }
            }
            N
        },
    );
    black_box(seq);
    Row {
        name: "server: stamp+ring push+encode+transmit of one event",
        baseline,
        subject,
        target: 1.3,
        unit: "ns/event",
    }
}

fn resume_replay() -> Row {
    const EVENTS: u64 = 10_000;
    let (mut server, conn, session, now) = connected_server(EVENTS);
    let fields = [
        (
            "content",
            json!("one two three four five six seven eight nine ten"),
        ),
        ("session_id", json!(session.as_str())),
    ];
    for _ in 0..EVENTS {
        server.publish(now, &session, "message", &fields).unwrap();
    }
    while let Some((c, t)) = server.poll_transmit() {
        if let ServerTransmit::Frame(f) = t {
            server.handle_sent(now, c, f.len());
        }
    }
    server.handle_closed(now, conn);
    // The baseline encodes the same 10,000 replay frames with serde_json.
    let originals: Vec<String> = (1..=EVENTS)
        .map(|n| json!({"type":"message","content":"one two three four five six seven eight nine ten","session_id":session.as_str(),"cursor":n,"seq":n}).to_string())
        .collect();
    #[derive(Serialize)]
    struct Ev<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        data: &'a RawValue,
        event_id: &'a str,
        timestamp: f64,
        source: &'a str,
        target: &'a str,
        sequence: u64,
    }
    #[derive(Serialize)]
    struct ReplayOut<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        event: Ev<'a>,
        seq: u64,
    }
    let raws: Vec<Box<RawValue>> = originals
        .iter()
        .map(|o| RawValue::from_string(o.clone()).unwrap())
        .collect();
    let mut next_conn = 10u64;
    let hello = format!(
        r#"{{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2,"session_id":"{}","since":0}}"#,
        session.as_str()
    );
    let (baseline, subject) = compare(
        15,
        || {
            for (i, raw) in raws.iter().enumerate() {
                let r = ReplayOut {
                    kind: "replay",
                    event: Ev {
                        kind: "message",
                        data: raw,
                        event_id: "c2f6c9d1-37f4-477c-ac10-68c8a144d6ef",
                        timestamp: 1795617606.736033,
                        source: "gateway",
                        target: "636331f8-ac19-41da-bc8a-8775ecc89b6b",
                        sequence: i as u64 + 1,
                    },
                    seq: i as u64 + 1,
                };
                black_box(serde_json::to_string(&r).unwrap());
            }
            1
        },
        || {
            next_conn += 1;
            let conn = ConnId(next_conn);
            server.handle_connected(now, conn, ConnectInfo::default());
            server.handle_text(now, conn, &hello);
            let mut frames = 0;
            while let Some((c, t)) = server.poll_transmit() {
                if let ServerTransmit::Frame(f) = t {
                    server.handle_sent(now, c, f.len());
                    frames += 1;
                    black_box(f);
                }
            }
            assert!(frames >= EVENTS, "replayed {frames}");
            server.handle_closed(now, conn);
            while server.poll_event().is_some() {}
            1
        },
    );
    Row {
        name: "server: a resume replaying 10,000 events",
        baseline: baseline / 1e6,
        subject: subject / 1e6,
        target: 1.5,
        unit: "ms/resume",
    }
}

fn main() {
    // `cargo test --benches` runs this with `--test`-like flags; the full run is `cargo bench`.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `BENCH_ONLY=client|publish|resume` runs one figure (for profiling).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    type Figure = (&'static str, fn() -> Row);
    let all: [Figure; 3] = [
        ("client", client_event),
        ("publish", server_publish),
        ("resume", resume_replay),
    ];
    let rows: Vec<Row> = all
        .iter()
        .filter(|(name, _)| only.is_empty() || only == *name)
        .map(|(_, f)| f())
        .collect();
    println!(
        "{:<58} {:>12} {:>12} {:>7} {:>7}",
        "figure", "baseline", "tether", "ratio", "target"
    );
    let mut missed = 0;
    for r in &rows {
        let ratio = r.subject / r.baseline;
        let ok = ratio <= r.target;
        missed += usize::from(!ok);
        println!(
            "{:<58} {:>9.1} {:<2} {:>9.1} {:<2} {:>6.2}× {:>6.1}×  {}  ({})",
            r.name,
            r.baseline,
            "",
            r.subject,
            "",
            ratio,
            r.target,
            if ok { "ok" } else { "MISSED" },
            r.unit
        );
    }
    if missed > 0 {
        std::process::exit(1);
    }
}
