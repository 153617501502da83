//! Gateway nodes that can be killed, on the real Redis of `tether_redis::testing`.

#![allow(dead_code)] // each test binary uses part of it

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{ClientConfig, Event, State};
use tether_core::server::{Outcome, ServerConfig, ServerEvent, SessionId};
use tether_driver::{Bound, Server, ServerEvents};
use tether_redis::testing::RedisServer;
use tether_redis::{NodeError, RedisConfig, RedisNode};
use tether_tokio::ServerOptions;
use tether_tokio::TokioRuntime;

pub fn redis() -> RedisServer {
    RedisServer::for_tests()
}

/// A key prefix no other test uses (tests may share one Redis).
pub fn store_config(redis: &RedisServer, name: &str) -> RedisConfig {
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).expect("entropy");
    RedisConfig {
        prefix: format!("test-{name}-{}", u32::from_le_bytes(nonce)),
        ..RedisConfig::new(redis.url.clone())
    }
}

/// A client of the `echo` agent that reconnects within 100–300 ms (a store fault's
/// consequences must show within seconds).
pub fn quick_client_config() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
            jitter: Jitter::None,
            ..BackoffConfig::default()
        },
        ..ClientConfig::new("echo")
    }
}

/// Event `i`'s fields.
pub fn event(i: u64) -> Vec<(String, serde_json::Value)> {
    vec![(
        "content".to_owned(),
        serde_json::json!(format!("event {i}")),
    )]
}

/// Kills every client connection of `redis` but the caller's (`CLIENT KILL TYPE normal`, then
/// `pubsub`: a node's connection is either); returns how many.
pub async fn kill_connections(redis: &RedisServer) -> u64 {
    let mut admin = redis::Client::open(redis.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let mut killed = 0;
    for kind in ["normal", "pubsub"] {
        let n: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .expect("client kill");
        killed += n;
    }
    killed
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        recovery_session_events: 50_000,
        recovery_session_bytes: 64 << 20,
        heartbeat_interval: Some(Duration::from_secs(5)),
        ..ServerConfig::default()
    }
}

/// A node on tokio listening on `addr`.
pub async fn serve_tokio(
    addr: &str,
    config: ServerConfig,
    redis: RedisConfig,
) -> Result<(Bound, RedisNode), NodeError> {
    tether_redis::serve(TokioRuntime, config, redis, |config| {
        tether_tokio::serve(TokioRuntime, addr, config, ServerOptions::default())
    })
    .await
}

/// The application of a test node: answers requests with `echo: <content>` and reports the
/// sessions created.
pub async fn echo(
    mut events: ServerEvents,
    server: Server,
    created: mpsc::UnboundedSender<SessionId>,
) {
    while let Some(event) = events.next().await {
        match event {
            ServerEvent::SessionCreated { session, .. } => {
                let _ = created.unbounded_send(session);
            }
            ServerEvent::Request {
                session,
                request_id,
                content,
                ..
            } => {
                let answer = Outcome::ok(format!("echo: {content}"));
                let _ = server.respond(&session, &request_id, answer).await;
            }
            _ => {}
        }
    }
}

/// Publishes events `from..from + count` (see [`event`]) through `node`, in batches of 250.
pub async fn publish(node: &RedisNode, session: &SessionId, from: u64, count: u64) {
    const BATCH: u64 = 250;
    let mut i = from;
    while i < from + count {
        let n = BATCH.min(from + count - i);
        let batch = (i..i + n).map(event).collect();
        node.publish_many(session, "message", batch)
            .await
            .expect("published");
        i += n;
    }
}

/// A client of the `echo` agent that reconnects after 300 ms: long enough that the events
/// published while it is away are surely published before it is back (they must then come
/// as replays of its resume).
pub fn failover_client_config() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            initial: Duration::from_millis(300),
            max: Duration::from_millis(300),
            jitter: Jitter::None,
            ..BackoffConfig::default()
        },
        ..ClientConfig::new("echo")
    }
}

/// What a client application saw.
#[derive(Default)]
pub struct Seen {
    /// Sequences delivered, in order.
    pub seqs: Vec<u64>,
    /// Those delivered as replays.
    pub replayed: Vec<u64>,
    /// Resumes of the session.
    pub resumed: u32,
    /// Losses reported.
    pub bad: Vec<String>,
}

impl Seen {
    /// Notes `event`; returns whether it was a delivery.
    pub fn note(&mut self, event: Event) -> bool {
        match event {
            Event::Delivered(d) => {
                self.seqs.push(d.seq);
                if d.replayed {
                    self.replayed.push(d.seq);
                }
                return true;
            }
            Event::StateChanged(State::Connected { resumed: true, .. }) => self.resumed += 1,
            Event::Lost { .. } | Event::ServerReset { .. } | Event::SessionReplaced { .. } => {
                self.bad.push(format!("{event:?}"));
            }
            _ => {}
        }
        false
    }

    /// (events delivered, resumes).
    pub fn progress(&self) -> (u64, u32) {
        (self.seqs.len() as u64, self.resumed)
    }
}

/// One gateway node on its own runtime, so that killing it (dropping the runtime) is as abrupt
/// as a crash: sockets close, nothing is flushed, presence is not cleared.
pub struct Node {
    runtime: Option<tokio::runtime::Runtime>,
    pub node: RedisNode,
    pub addr: SocketAddr,
    /// Sessions created on this node.
    pub created: mpsc::UnboundedReceiver<SessionId>,
}

impl Node {
    /// Starts a node at `addr` (retrying while a killed predecessor still holds the port);
    /// requests are answered with `echo: <content>`.
    pub async fn start(addr: &str, config: ServerConfig, redis: RedisConfig) -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (created_tx, created) = mpsc::unbounded();
        let addr = addr.to_owned();
        let started = runtime.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            let (bound, node) = loop {
                match serve_tokio(&addr, config.clone(), redis.clone()).await {
                    Ok(x) => break x,
                    // A killed predecessor's listener may still hold the port for a moment.
                    Err(NodeError::Serve(_)) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("node did not start: {e}"),
                }
            };
            let local = bound.local_addr;
            tokio::spawn(echo(bound.events, node.server().clone(), created_tx));
            (node, local)
        });
        let (node, addr) = started.await.expect("node task");
        Node {
            runtime: Some(runtime),
            node,
            addr,
            created,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Kills the node: every task stops where it is, its sockets close.
    pub fn kill(mut self) -> SocketAddr {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        self.addr
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
