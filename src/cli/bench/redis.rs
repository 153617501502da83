//! Multi-node figures (tokio): a gateway node on Redis against the in-memory server, same
//! client, same run. Throughput: events published through the store (`RedisNode::publish_many`,
//! numbered by its Lua script, delivered by sharded pub/sub) to one client, on one Redis and on
//! a three-master Redis Cluster; and the same single-Redis stream against what Redis itself
//! takes through the same `redis` crate: pipelined `XADD` + `PUBLISH` of frames of the same
//! size, one pipeline of a batch at a time, as the publisher sends one batch at a time.
//! Resume: a client reconnects to its session (an event was published while it was away) until
//! that event is delivered; on Redis the node reads the session and its log from the store
//! first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tether_core::backoff::BackoffConfig;
use tether_core::client::{ClientConfig, Event};
use tether_core::cursor::ResumeState;
use tether_core::server::{ServerConfig, ServerEvent, SessionId};
use tether_redis::testing::{RedisCluster, RedisServer};
use tether_redis::{RedisConfig, RedisNode};
use tether_tokio::{Bound, Server, ServerEvents, TokioRuntime};
use tokio::sync::Notify;

use super::{before, median, percentile, Row, Sizes, Target, Unit, CONTENT};
use tether_tokio::ConnectOptions;
use tether_tokio::ServerOptions;

/// Events per publish call on both sides.
const BATCH: usize = 256;
/// The publisher stays at most this far ahead of the application.
const WINDOW: u64 = 8 * 1024;

/// Publishes through the in-memory server or through the store.
#[derive(Clone)]
enum Publisher {
    /// Boxed: the handle is much larger than a node's.
    Memory(Box<Server>),
    Redis(RedisNode),
}

impl Publisher {
    async fn publish_many(
        &self,
        session: &SessionId,
        events: Vec<Vec<(String, Value)>>,
    ) -> Result<(), String> {
        match self {
            Publisher::Memory(s) => s
                .publish_many(session, "message", events)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Publisher::Redis(n) => n
                .publish_many(session, "message", events)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }
}

/// A running gateway of either kind.
struct Gateway {
    publisher: Publisher,
    url: String,
    sessions: futures::channel::mpsc::UnboundedReceiver<SessionId>,
}

fn server_config() -> ServerConfig {
    ServerConfig {
        recovery_session_events: 64 * 1024,
        recovery_session_bytes: 256 << 20,
        ..ServerConfig::default()
    }
}

/// Where a gateway keeps its sessions.
#[derive(Clone, Copy)]
enum Store<'a> {
    Memory,
    Redis(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

impl Gateway {
    async fn start(store: Store<'_>) -> Result<Gateway, String> {
        let redis = match store {
            Store::Memory => None,
            Store::Redis(r) => Some(RedisConfig::new(r.url.clone())),
            Store::Cluster(c) => Some(RedisConfig::cluster(c.urls())),
        };
        let (bound, publisher) = match redis {
            None => {
                let bound = tether_tokio::serve(
                    TokioRuntime,
                    "127.0.0.1:0",
                    server_config(),
                    ServerOptions::default(),
                )
                .await
                .map_err(|e| e.to_string())?;
                let publisher = Publisher::Memory(Box::new(bound.server.clone()));
                (bound, publisher)
            }
            Some(redis) => {
                let mut nonce = [0u8; 4];
                getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
                let store = RedisConfig {
                    prefix: format!("bench-{}", u32::from_le_bytes(nonce)),
                    ..redis
                };
                let (bound, node) =
                    tether_redis::serve(TokioRuntime, server_config(), store, |config| {
                        tether_tokio::serve(
                            TokioRuntime,
                            "127.0.0.1:0",
                            config,
                            ServerOptions::default(),
                        )
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                (bound, Publisher::Redis(node))
            }
        };
        let Bound {
            events, local_addr, ..
        } = bound;
        let (tx, sessions) = futures::channel::mpsc::unbounded();
        tokio::spawn(watch_sessions(events, tx));
        Ok(Gateway {
            publisher,
            url: format!("ws://{local_addr}/ws"),
            sessions,
        })
    }

    async fn next_session(&mut self) -> Result<SessionId, String> {
        before(Duration::from_secs(10), self.sessions.next())
            .await
            .flatten()
            .ok_or_else(|| "no session within 10 s".to_owned())
    }

    async fn stop(self) {
        match &self.publisher {
            // The node's own work (queued writes, presence) ends before Redis may go.
            Publisher::Redis(node) => {
                let _ = before(Duration::from_secs(10), node.shutdown()).await;
            }
            Publisher::Memory(server) => {
                let _ = before(Duration::from_secs(5), server.shutdown()).await;
            }
        }
    }
}

/// Drains the server's events (the hub waits for a consumer), reporting new sessions.
async fn watch_sessions(
    mut events: ServerEvents,
    sessions: futures::channel::mpsc::UnboundedSender<SessionId>,
) {
    while let Some(e) = events.next().await {
        if let ServerEvent::SessionCreated { session, .. } = e {
            let _ = sessions.unbounded_send(session);
        }
    }
}

fn event(n: u64) -> Vec<(String, Value)> {
    vec![
        ("content".to_owned(), Value::String(CONTENT.to_owned())),
        ("n".to_owned(), Value::from(n)),
    ]
}

fn client_config() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            initial: Duration::ZERO,
            ..BackoffConfig::default()
        },
        ..ClientConfig::new("bench")
    }
}

/// Events per second from the first publish to the last delivery, in order.
async fn stream(store: Store<'_>, n: u64) -> Result<f64, String> {
    let mut gateway = Gateway::start(store).await?;
    let (client, mut events) = tether_tokio::connect(
        TokioRuntime,
        gateway.url.as_str(),
        client_config(),
        ConnectOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let session = gateway.next_session().await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let (d, p) = (delivered.clone(), progress.clone());
    let consumer = tokio::spawn(async move {
        let mut next = 1u64;
        while next <= n {
            match events.next().await {
                Some(Event::Delivered(e)) if e.seq == next => {
                    next += 1;
                    if next % 512 == 0 {
                        d.store(next - 1, Ordering::Release);
                        p.notify_one();
                    }
                }
                Some(Event::Delivered(e)) => {
                    return Err(format!("expected seq {next}, got {}", e.seq))
                }
                Some(Event::Lost { from, to }) => return Err(format!("lost {from}..={to}")),
                Some(_) => {}
                None => return Err("client events ended".into()),
            }
        }
        Ok(Instant::now())
    });
    let started = Instant::now();
    let mut published = 0u64;
    while published < n {
        while published.saturating_sub(delivered.load(Ordering::Acquire)) > WINDOW {
            let _ = before(Duration::from_millis(50), progress.notified()).await;
        }
        let count = (n - published).min(BATCH as u64);
        let batch = (published + 1..=published + count).map(event).collect();
        gateway.publisher.publish_many(&session, batch).await?;
        published += count;
    }
    let done = before(Duration::from_secs(60), consumer).await;
    client.disconnect().await;
    gateway.stop().await;
    match done {
        None => Err("timed out".into()),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(Err(e))) => Err(e),
        Some(Ok(Ok(done))) => Ok(n as f64 / done.duration_since(started).as_secs_f64()),
    }
}

/// `count` resumes of one session, each after an event published while away: time from the
/// client's start to that event's delivery.
async fn resumes(store: Store<'_>, count: usize) -> Result<Vec<Duration>, String> {
    let mut gateway = Gateway::start(store).await?;
    let (client, mut events) = tether_tokio::connect(
        TokioRuntime,
        gateway.url.as_str(),
        client_config(),
        ConnectOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let session = gateway.next_session().await?;
    gateway
        .publisher
        .publish_many(&session, vec![event(1)])
        .await?;
    let mut seq = 1;
    delivered(&mut events, seq).await?;
    let mut state: ResumeState = client.resume_state().await.map_err(|e| e.to_string())?;
    client.disconnect().await;
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        seq += 1;
        gateway
            .publisher
            .publish_many(&session, vec![event(seq)])
            .await?;
        let started = Instant::now();
        let (client, mut events) = tether_tokio::connect(
            TokioRuntime,
            gateway.url.as_str(),
            client_config(),
            ConnectOptions::default().resume(state.clone()),
        )
        .map_err(|e| e.to_string())?;
        delivered(&mut events, seq).await?;
        samples.push(started.elapsed());
        state = client.resume_state().await.map_err(|e| e.to_string())?;
        client.disconnect().await;
    }
    gateway.stop().await;
    samples.sort();
    Ok(samples)
}

/// Waits for event `seq` (10 s at most).
async fn delivered(events: &mut tether_tokio::ClientEvents, seq: u64) -> Result<(), String> {
    let found = before(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            match e {
                Event::Delivered(d) if d.seq == seq => return Ok(()),
                Event::Lost { from, to } => return Err(format!("lost {from}..={to}")),
                _ => {}
            }
        }
        Err("client events ended".to_owned())
    })
    .await;
    found.unwrap_or_else(|| Err(format!("event {seq} not delivered within 10 s")))
}

/// A frame as tether stores it for `event(n)` (same fields and size): the bare baseline
/// writes these.
fn frame(n: u64) -> String {
    format!(
        r#"{{"type":"message","content":{},"n":{n},"event_id":"0f8fad5b-d9cb-469f-a165-70867728950e","timestamp":1765000000.123456,"cursor":{n},"seq":{n}}}"#,
        Value::String(CONTENT.to_owned())
    )
}

/// Events per second Redis takes as pipelined `XADD` (exact `MAXLEN`, as tether trims) +
/// `PUBLISH` of each frame, one pipeline of `BATCH` events at a time, through the `redis`
/// crate's multiplexed connection.
async fn bare(redis: &RedisServer, n: u64) -> Result<f64, String> {
    let client = redis::Client::open(redis.url.as_str()).map_err(|e| e.to_string())?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    let (log, channel) = {
        let id = u32::from_le_bytes(nonce);
        (format!("bench-bare-{id}:log"), format!("bench-bare-{id}:n"))
    };
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let count = (n - sent).min(BATCH as u64);
        let mut pipe = redis::pipe();
        for k in sent + 1..=sent + count {
            let f = frame(k);
            pipe.cmd("XADD")
                .arg(&log)
                .arg("MAXLEN")
                .arg(server_config().recovery_session_events)
                .arg(format!("{k}-0"))
                .arg("b")
                .arg(&f)
                .ignore()
                .cmd("PUBLISH")
                .arg(&channel)
                .arg(&f)
                .ignore();
        }
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(|e| e.to_string())?;
        sent += count;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _: Result<(), _> = redis::cmd("DEL").arg(&log).query_async(&mut con).await;
    Ok(rate)
}

/// The rows: throughput (single Redis and cluster) and resume latency through Redis, each
/// against the in-memory server, and the single-Redis stream against Redis's own rate.
pub async fn rows(sizes: Sizes) -> Vec<Row> {
    const STREAM: &str = "redis: publish → 1 client";
    const BARE: &str = "redis: publish vs bare XADD+PUBLISH";
    const CLUSTER: &str = "redis cluster: publish → 1 client";
    const RESUME: &str = "redis: resume → replay";
    let redis = match RedisServer::start() {
        Ok(r) => r,
        Err(e) => {
            return [STREAM, BARE, CLUSTER, RESUME]
                .into_iter()
                .map(|name| Row::skipped(name, &e))
                .collect();
        }
    };
    let n = (sizes.long_stream_events / 4).max(1_000);
    let (mut memory, mut stored, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = Vec::new();
    let mut failure = None;
    for _ in 0..sizes.rounds.max(1) {
        match (
            stream(Store::Memory, n).await,
            stream(Store::Redis(&redis), n).await,
            bare(&redis, n).await,
        ) {
            (Ok(m), Ok(r), Ok(b)) => {
                memory.push(m);
                stored.push(r);
                baseline.push(b);
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => failure = Some(e),
        }
    }
    let rounds = sizes.rounds.max(1);
    match failure {
        Some(e) => {
            rows.push(Row::failed(STREAM, e.clone()));
            rows.push(Row::failed(BARE, e));
        }
        None => {
            let stored = median(stored);
            rows.push(Row::measured(
                STREAM,
                stored,
                median(memory),
                Unit::PerSecond,
                Target::None,
                format!(
                    "in-memory tether server, same client; {n} events, publish_many {BATCH}/call, \
                     median of {rounds} rounds"
                ),
            ));
            rows.push(Row::measured(
                BARE,
                stored,
                median(baseline),
                Unit::PerSecond,
                Target::AtLeast(0.5),
                format!(
                    "tether: publish_many {BATCH}/call through RedisNode to a client's delivery; \
                     baseline: pipelined XADD MAXLEN + PUBLISH per frame, {BATCH} a pipeline, \
                     same redis crate and Redis; median of {rounds} rounds"
                ),
            ));
        }
    }
    rows.push(match RedisCluster::try_start() {
        Err(e) => Row::skipped(CLUSTER, e),
        Ok(cluster) => match (
            stream(Store::Memory, n).await,
            stream(Store::Cluster(&cluster), n).await,
        ) {
            (Ok(m), Ok(c)) => Row::measured(
                CLUSTER,
                c,
                m,
                Unit::PerSecond,
                Target::None,
                format!(
                    "in-memory tether server, same client; 3 masters on this machine, {n} events, \
                     publish_many {BATCH}/call, one round"
                ),
            ),
            (Err(e), _) | (_, Err(e)) => Row::failed(CLUSTER, e),
        },
    });
    let count = (sizes.reconnects / 2).max(10);
    match (
        resumes(Store::Memory, count).await,
        resumes(Store::Redis(&redis), count).await,
    ) {
        (Ok(m), Ok(r)) => {
            for (p, name) in [(50, "p50"), (99, "p99")] {
                rows.push(Row::measured(
                    format!("{RESUME} {name}"),
                    percentile(&r, p).as_secs_f64() * 1e6,
                    percentile(&m, p).as_secs_f64() * 1e6,
                    Unit::Micros,
                    Target::None,
                    format!(
                        "in-memory tether server; {count} resumes each, an event published while \
                         away, zero backoff"
                    ),
                ));
            }
        }
        (Err(e), _) | (_, Err(e)) => rows.push(Row::failed(RESUME, e)),
    }
    rows
}
