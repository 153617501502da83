//! Core benchmarks, each printed as a ratio against a baseline measured in the same run (these
//! machines are noisy; only ratios are comparable). `cargo bench -p tether-core`.
//!
//! | figure | subject | baseline | target |
//! |---|---|---|---|
//! | client event | decode + handle + `poll_event` of a ~200-byte tracked frame | bare serde_json typed decode of the same frame (`data` borrowed raw) | ≤ 1.3× |
//! | server publish | stamp + window push (2,048 events, steady state) + encode + transmit of one event | bare serde_json encode of the same frame | ≤ 1.3× |
//! | resume 10k | a resume that replays 10,000 events | encoding those 10,000 replay frames with serde_json | ≤ 1.5× |
//! | idle session | server-side heap bytes per idle connected session (counting allocator) | — | informational (adapters: ≤ 12 KB RSS end to end) |
//! | deadlines | `poll_timeout` once per hub batch (batches 100 µs apart) and `handle_timeout` when it is due, with the pings it sends drained, for 100,000 idle connected sessions (30 s heartbeat) | the same for 1,000 (0.3 s heartbeat: as many pings per second) | ≤ 3× (O(log n); it was O(n): 1,224×) |
//! | broadcast window | server heap (counting allocator) of 1,000 detached sessions after 130 s (virtual time) of a 2,000/s stream published to all of them, default 120 s recovery window | the same for one session (`publish`) | ≤ 2× the one session + 16 KB per session |
//!
//! Method: after untimed warm-up rounds, each round times one batch of the baseline and one of
//! the subject back to back (alternating which goes first), on the same input in the same
//! memory; the ratio printed is the median of the per-round ratios (slow drift of the machine
//! cancels within a round), with its interquartile range. State that would grow across rounds
//! is rebuilt outside the timed region (a fresh client per round; the server's window holds
//! 2,048 events, i.e. runs in steady state with eviction).
//!
//! Exits non-zero if a ratio misses its target.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tether_core::client::{Client, ClientConfig, Event};
use tether_core::server::{
    Audience, ConnId, ConnectInfo, Server, ServerConfig, ServerEvent, ServerTransmit,
};

/// The system allocator, counting live heap bytes while `COUNTING` is on (off during the timed
/// figures: then it costs one relaxed load per call).
struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Medians of baseline and subject (ns per op) and the per-round ratio's quartiles.
struct Measured {
    baseline: f64,
    subject: f64,
    ratio: f64,
    ratio_q1: f64,
    ratio_q3: f64,
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// One timed batch: `prep` builds the untimed state, `run` does the timed work on it and
/// returns the operations done; the state is dropped after the clock stops. ns per op.
fn batch<S>(prep: &mut impl FnMut() -> S, run: &mut impl FnMut(&mut S) -> usize) -> f64 {
    let mut state = prep();
    let t = Instant::now();
    let ops = run(&mut state);
    let ns = t.elapsed().as_nanos() as f64 / ops.max(1) as f64;
    drop(state);
    ns
}

/// `warmup` untimed rounds, then `rounds` rounds of one baseline and one subject batch back to
/// back, alternating which goes first.
fn compare<B, S>(
    warmup: usize,
    rounds: usize,
    (mut prep_b, mut run_b): (impl FnMut() -> B, impl FnMut(&mut B) -> usize),
    (mut prep_s, mut run_s): (impl FnMut() -> S, impl FnMut(&mut S) -> usize),
) -> Measured {
    let (mut b, mut s, mut r) = (vec![], vec![], vec![]);
    for round in 0..warmup + rounds {
        let (x, y) = if round % 2 == 0 {
            let x = batch(&mut prep_b, &mut run_b);
            (x, batch(&mut prep_s, &mut run_s))
        } else {
            let y = batch(&mut prep_s, &mut run_s);
            (batch(&mut prep_b, &mut run_b), y)
        };
        if round >= warmup {
            b.push(x);
            s.push(y);
            r.push(y / x);
        }
    }
    Measured {
        baseline: quantile(&mut b, 0.5),
        subject: quantile(&mut s, 0.5),
        ratio: quantile(&mut r, 0.5),
        ratio_q1: quantile(&mut r, 0.25),
        ratio_q3: quantile(&mut r, 0.75),
    }
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
    m: Measured,
    target: f64,
    unit: &'static str,
}

/// A v2 client past its handshake, with sequence 1 expected next.
fn connected_client() -> Client {
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
    client
}

fn client_event() -> Row {
    // ~1 MB of frames: both sides read the same (cache-warm) text, as from a socket buffer.
    const N: u64 = 4_000;
    let frames: Vec<String> = (1..=N).map(event_frame).collect();
    let frames = &frames;
    let now = Instant::now();
    let m = compare(
        10,
        151,
        (
            || (),
            |_: &mut ()| {
                for f in frames {
                    let e: TypedEvent = serde_json::from_str(black_box(f)).unwrap();
                    black_box(e);
                }
                frames.len()
            },
        ),
        (
            // A fresh client per round: every frame is delivered, state never grows.
            connected_client,
            |client: &mut Client| {
                for f in frames {
                    client.handle_text(now, black_box(f));
                    while let Some(e) = client.poll_event() {
                        debug_assert!(matches!(e, Event::Delivered(_)));
                        black_box(e);
                    }
                }
                frames.len()
            },
        ),
    );
    Row {
        name: "client: decode+handle+poll_event of a 200-byte event",
        m,
        target: 1.3,
        unit: "ns/event",
    }
}

fn server_with(
    recovery_session_events: usize,
) -> (Server, ConnId, tether_core::server::SessionId, Instant) {
    let now = Instant::now();
    let config = ServerConfig {
        agents: vec!["echo".into()],
        recovery_session_events,
        recovery_session_bytes: 1 << 30,
        max_queued_frames: usize::MAX / 2,
        max_buffered_bytes: usize::MAX / 2,
        ..ServerConfig::default()
    };
    let mut server = Server::new(config, now);
    let conn = ConnId(1);
    let session = connect(&mut server, now, conn, None);
    (server, conn, session, now)
}

/// Connects `conn` with a v2 hello (resuming `resume` since 0 if given), drains its frames.
fn connect(
    server: &mut Server,
    now: Instant,
    conn: ConnId,
    resume: Option<&str>,
) -> tether_core::server::SessionId {
    server.handle_connected(now, conn, ConnectInfo::default());
    let hello = match resume {
        Some(sid) => format!(
            r#"{{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2,"session_id":"{sid}","since":0}}"#
        ),
        None => r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2}"#.into(),
    };
    server.handle_text(now, conn, &hello);
    let mut session = None;
    while let Some(e) = server.poll_event() {
        match e {
            ServerEvent::SessionCreated { session: s, .. }
            | ServerEvent::SessionResumed { session: s, .. } => session = Some(s),
            _ => {}
        }
    }
    while let Some((c, t)) = server.poll_transmit() {
        if let ServerTransmit::Frame(f) = t {
            server.handle_sent(now, c, f.len());
        }
    }
    session.expect("handshake accepted")
}

fn server_publish() -> Row {
    const N: usize = 5_000;
    // A window of 2,048 events (the ring bound these figures were first measured with): steady
    // state, every publish also evicts the oldest event.
    let (mut server, _conn, session, now) = server_with(2048);
    let content =
        json!("one two three four five six seven eight nine ten eleven twelve thirteen fourteen");
    let fields = [
        ("content", content.clone()),
        ("session_id", json!(session.as_str())),
    ];
    let sid = session.as_str().to_owned();
    let mut seq = 0u64;
    let m = compare(
        10,
        151,
        (
            || (),
            |_: &mut ()| {
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
        ),
        (
            || (),
            |_: &mut ()| {
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
        ),
    );
    black_box(seq);
    Row {
        name: "server: stamp+window push+encode+transmit of one event",
        m,
        target: 1.3,
        unit: "ns/event",
    }
}

fn resume_replay() -> Row {
    const EVENTS: u64 = 10_000;
    let (mut server, conn, session, now) = server_with(EVENTS as usize);
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
    let raws = &raws;
    let mut next_conn = 10u64;
    let open = std::cell::Cell::new(None::<ConnId>);
    let hello = format!(
        r#"{{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2,"session_id":"{}","since":0}}"#,
        session.as_str()
    );
    let server = std::cell::RefCell::new(server);
    let m = compare(
        3,
        41,
        (
            || (),
            |_: &mut ()| {
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
        ),
        (
            || {
                // Untimed: the previous round's connection goes away (the session detaches).
                let mut server = server.borrow_mut();
                if let Some(c) = open.take() {
                    server.handle_closed(now, c);
                }
                while server.poll_event().is_some() {}
            },
            |_: &mut ()| {
                let mut server = server.borrow_mut();
                next_conn += 1;
                let conn = ConnId(next_conn);
                open.set(Some(conn));
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
                1
            },
        ),
    );
    Row {
        name: "server: a resume replaying 10,000 events",
        m: Measured {
            baseline: m.baseline / 1e6,
            subject: m.subject / 1e6,
            ..m
        },
        target: 1.5,
        unit: "ms/resume",
    }
}

/// A server with `sessions` idle connected v2 sessions whose pings (every `interval`, never
/// reaped) are spread evenly over one interval, and the instant the first ping is due.
fn idle_server(sessions: u64, interval: std::time::Duration) -> (Server, Instant) {
    let t0 = Instant::now();
    let mut server = Server::new(
        ServerConfig {
            agents: vec!["echo".into()],
            heartbeat_interval: Some(interval),
            missed_beats: u32::MAX,
            max_sessions: sessions as usize + 1,
            max_connections: sessions as usize + 1,
            ..ServerConfig::default()
        },
        t0,
    );
    let step = interval / sessions as u32;
    for i in 0..sessions {
        connect(&mut server, t0 + step * i as u32, ConnId(i), None);
    }
    (server, t0 + interval)
}

/// What the hub does about time once per batch: `handle_timeout` if the deadline it armed has
/// passed (the pings it queues go out and are confirmed), then `poll_timeout` to re-arm.
fn hub_batches(
    server: &mut Server,
    now: &mut Instant,
    armed: &mut Option<Instant>,
    out: &mut Vec<(ConnId, ServerTransmit)>,
    batches: usize,
) -> usize {
    for _ in 0..batches {
        *now += std::time::Duration::from_micros(100);
        if armed.is_some_and(|d| *now >= d) {
            server.handle_timeout(*now);
            server.poll_transmits(out);
            for (c, t) in out.drain(..) {
                if let ServerTransmit::Frame(f) = t {
                    server.handle_sent(*now, c, f.len());
                }
            }
        }
        *armed = black_box(server.poll_timeout());
    }
    batches
}

fn deadlines() -> Row {
    const BATCHES: usize = 2_000;
    let secs = std::time::Duration::from_secs;
    let (mut small, mut small_now) = idle_server(1_000, secs(30) / 100);
    let (mut large, mut large_now) = idle_server(100_000, secs(30));
    let (mut small_armed, mut large_armed) = (small.poll_timeout(), large.poll_timeout());
    let mut out = Vec::new();
    let out = std::cell::RefCell::new(&mut out);
    let m = compare(
        2,
        15,
        (
            || (),
            |_: &mut ()| {
                let out = &mut *out.borrow_mut();
                hub_batches(&mut small, &mut small_now, &mut small_armed, out, BATCHES)
            },
        ),
        (
            || (),
            |_: &mut ()| {
                let out = &mut *out.borrow_mut();
                hub_batches(&mut large, &mut large_now, &mut large_armed, out, BATCHES)
            },
        ),
    );
    assert!(
        large.stats().max_control_frames <= 1,
        "pings were confirmed"
    );
    Row {
        name: "server: deadlines per hub batch, 100,000 idle sessions",
        m,
        // O(log n), and the larger tables miss the cache more often; scanning every
        // connection and session was 1,224×.
        target: 3.0,
        unit: "ns/batch; baseline: 1,000 sessions",
    }
}

/// Server heap bytes per idle connected session (hello done, nothing published), measured with
/// the counting allocator over 1,000 sessions. Not a ratio; printed for the record.
fn idle_session_bytes() -> f64 {
    const SESSIONS: u64 = 1_000;
    let now = Instant::now();
    let mut server = Server::new(
        ServerConfig {
            agents: vec!["echo".into()],
            ..ServerConfig::default()
        },
        now,
    );
    // One session first, so one-off growth (maps, queues) is not charged to the rest.
    connect(&mut server, now, ConnId(0), None);
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for i in 1..=SESSIONS {
        connect(&mut server, now, ConnId(i), None);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let bytes = LIVE.load(Ordering::Relaxed) as f64 / SESSIONS as f64;
    black_box(&server);
    bytes
}

/// Server heap bytes (counting allocator, everything the server allocates from its creation on)
/// with `sessions` detached sessions after 130 s of virtual time in which a 2,000/s stream was
/// published to all of them (`publish_to`, or `publish` to the one session unless `shared`),
/// with the default recovery window (120 s): the window is full and in steady state.
fn window_bytes(sessions: u64, shared: bool) -> f64 {
    const RATE: u64 = 2_000;
    const SECS: u64 = 130;
    let t0 = Instant::now();
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let mut server = Server::new(
        ServerConfig {
            agents: vec!["echo".into()],
            max_sessions: 10_000,
            ..ServerConfig::default()
        },
        t0,
    );
    let mut only = None;
    for i in 0..sessions {
        only = Some(connect(&mut server, t0, ConnId(i), None));
        server.handle_closed(t0, ConnId(i));
    }
    while server.poll_event().is_some() {}
    let step = std::time::Duration::from_nanos(1_000_000_000 / RATE);
    let mut now = t0;
    for n in 0..RATE * SECS {
        now += step;
        let fields = [
            (
                "content",
                json!("one two three four five six seven eight nine ten"),
            ),
            ("n", json!(n)),
        ];
        match (&only, shared) {
            (Some(session), false) => {
                server.publish(now, session, "message", &fields).unwrap();
            }
            _ => {
                server
                    .publish_to(now, &Audience::All, "message", &fields)
                    .unwrap();
            }
        }
        if n % RATE == 0 {
            server.handle_timeout(now);
        }
    }
    COUNTING.store(false, Ordering::Relaxed);
    let bytes = LIVE.load(Ordering::Relaxed) as f64;
    let held = server.stats().max_window_events as u64;
    assert!(
        (120 * RATE..=121 * RATE).contains(&held),
        "the window holds 120 s: {held} events"
    );
    black_box(&server);
    bytes
}

fn main() {
    // `cargo test --benches` runs this with `--test`-like flags; the full run is `cargo bench`.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `BENCH_ONLY=client|publish|resume|deadlines|memory|window` runs one figure (for profiling).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    type Figure = (&'static str, fn() -> Row);
    let all: [Figure; 4] = [
        ("client", client_event),
        ("publish", server_publish),
        ("resume", resume_replay),
        ("deadlines", deadlines),
    ];
    let rows: Vec<Row> = all
        .iter()
        .filter(|(name, _)| only.is_empty() || only == *name)
        .map(|(_, f)| f())
        .collect();
    println!(
        "{:<55} {:>9} {:>9} {:>7} {:>13} {:>7}",
        "figure", "baseline", "tether", "ratio", "ratio IQR", "target"
    );
    let mut missed = 0;
    for r in &rows {
        let ok = r.m.ratio <= r.target;
        missed += usize::from(!ok);
        println!(
            "{:<55} {:>9.1} {:>9.1} {:>6.2}× {:>13} {:>6.1}×  {:<6} ({})",
            r.name,
            r.m.baseline,
            r.m.subject,
            r.m.ratio,
            format!("{:.2}–{:.2}×", r.m.ratio_q1, r.m.ratio_q3),
            r.target,
            if ok { "ok" } else { "MISSED" },
            r.unit
        );
    }
    if only.is_empty() || only == "memory" {
        let bytes = idle_session_bytes();
        println!(
            "{:<55} {:>9} {:>9.0} bytes of server heap per idle connected session (adapters: ≤ 12 KB RSS)",
            "server: idle connected session", "", bytes
        );
    }
    if only.is_empty() || only == "window" {
        const SESSIONS: u64 = 1_000;
        let one = window_bytes(1, false);
        let one_shared = window_bytes(1, true);
        let many = window_bytes(SESSIONS, true);
        let bound = 2.0 * one + 16_384.0 * SESSIONS as f64;
        let ok = many <= bound;
        missed += usize::from(!ok);
        println!(
            "{:<55} {:>9.1} {:>9.1} {:>6.2}×  bound 2× + 16 KB/session = {:.1} MB  {:<6} (MB; 1 session via publish vs 1,000 via publish_to)",
            "server: 120 s window of a 2,000/s stream",
            one / 1e6,
            many / 1e6,
            many / one,
            bound / 1e6,
            if ok { "ok" } else { "MISSED" },
        );
        println!(
            "{:<55} {:>9} {:>9.0} bytes per session beyond one (1 session via publish_to: {:.1} MB)",
            "server: a 1,000-session window's index",
            "",
            (many - one_shared) / (SESSIONS - 1) as f64,
            one_shared / 1e6,
        );
    }
    if missed > 0 {
        std::process::exit(1);
    }
}
