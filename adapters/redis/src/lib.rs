//! tether's multi-node session store on Redis (a single instance or Redis Cluster).
//!
//! One gateway process keeps its sessions in memory. Several gateway nodes behind a load
//! balancer share them through Redis instead, so a client that reconnects to another node
//! resumes exactly where it was:
//!
//! | what | Redis | key |
//! |---|---|---|
//! | session metadata: agent, owner principal, epoch, version, **head** (last sequence) | hash | `{prefix}:{sid}:s` |
//! | the replay log, trimmed to the server's `recovery_session_events` | stream, entry id `{seq}-0` | `{prefix}:{sid}:log` |
//! | the range each append run was given (applied at most once) | string with TTL | `{prefix}:{sid}:run:{run id}` |
//! | request ids seen (a node's claim) and their outcomes (JSON), for `dedup_ttl` | string with TTL | `{prefix}:{sid}:req:{request_id}` |
//! | new events, for the node holding the session's connection only | shard channel (`SPUBLISH`) | `{prefix}:{sid}:n` |
//! | presence: each node's connected clients, refreshed every `presence_ttl / 3` | string with TTL, and a set of nodes | `{prefix}:presence:{node}`, `{prefix}:nodes` |
//!
//! Every key of a session carries the session id as its hash tag (`{sid}`), so on Redis
//! Cluster all of them live in one slot: one Lua script numbers and appends atomically
//! (`HINCRBY head` + `XADD` + trim + `SPUBLISH`), sent by its SHA1 (`EVALSHA`). Any node may
//! publish to any session and numbers stay gap-free; only the node holding the session's
//! connection subscribes to its channel (`SSUBSCRIBE`), so the notifications a node receives
//! do not grow with the number of nodes. A missed notification shows up as a gap at the next
//! one and is read back from the log. The server machine runs in store mode
//! ([`ServerConfig::external_store`]): see `tether_core::server::Server::provide_session`.
//!
//! # What a fault of Redis does
//! - **Outage** (restart, failover, dropped connection): the node reconnects with a backoff
//!   capped at [`RedisConfig::reconnect_max`], every command has [`RedisConfig::response_timeout`].
//!   `GET /ready` answers 503 (`"failing":["store"]`) and the `tether_store_up` metric is 0
//!   until Redis answers again; connected clients stay connected and are told nothing,
//!   because nothing is lost: every store write waits in a bounded queue
//!   ([`RedisConfig::append_queue`] events) and is sent again until Redis answers. Each append
//!   run carries an id; the script records the range it gave that id, so a run whose reply
//!   was lost is not numbered twice. Publishers wait meanwhile; when the queue is full while
//!   Redis is down they get [`StoreError::Backlogged`].
//! - **Data lost in Redis** (`FLUSHALL`, eviction, a restart without persistence): the node
//!   holding a session that vanished closes its connection with 4010 `session_lost`, at once
//!   and with one log line; the client reconnects, and its resume reports `SessionReplaced`
//!   (its pending requests resolve as ambiguous). Publishers to it get
//!   [`StoreError::UnknownSession`].
//! - **Eviction**: run Redis with `maxmemory-policy noeviction`. tether's keys all have TTLs,
//!   so any other policy (even `volatile-*`) may evict a live session under memory pressure,
//!   which its client then sees as `SessionReplaced`. With `noeviction`, a full Redis refuses
//!   writes instead: the node treats that as an outage (publishers wait or get
//!   [`StoreError::Backlogged`]) and nothing is lost. At start the node reads the policy
//!   and warns, or refuses to start with [`EvictionCheck::Refuse`].
//!
//! Requires Redis ≥ 7.0 (sharded pub/sub, `SET ... NX GET`). Redis Cluster: give the seed
//! nodes with [`RedisConfig::cluster`]. Sentinel is not supported: run Redis Cluster (with
//! replicas) for failover.
//!
//! A node runs on any runtime of `tether-driver` (tokio, async-std, smol): its loops are
//! spawned on the runtime given to [`serve`] or [`RedisNode::start`], and the Redis client
//! uses tokio's runtime inside one and smol's executor (beside any other) elsewhere.
//!
//! Two nodes on one Redis: a client connected to node A gets an event published through node B.
//! ([`testing::RedisServer`] uses `TETHER_REDIS_URL`, or starts a `redis-server` of its own.)
//!
//! ```
//! use futures::StreamExt;
//! use tether_core::client::{ClientConfig, Event, State};
//! use tether_core::server::{ServerConfig, SessionId};
//! use tether_redis::{serve, testing::RedisServer, RedisConfig};
//! use tether_tokio::TokioRuntime;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let redis = RedisServer::for_tests();
//!     let config = || RedisConfig::new(redis.url.clone());
//!     let bind = |config| tether_tokio::serve("127.0.0.1:0", config, None);
//!     let (a, _node_a) = serve(TokioRuntime, ServerConfig::default(), config(), bind).await?;
//!     let (_b, node_b) = serve(TokioRuntime, ServerConfig::default(), config(), bind).await?;
//!
//!     let url = format!("ws://{}/ws", a.local_addr);
//!     let (client, mut events) = tether_tokio::connect(url, None, ClientConfig::new("echo"))?;
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::StateChanged(State::Connected { session_id, .. }) => {
//!                 let fields = vec![("text".to_owned(), "from node B".into())];
//!                 node_b.publish(&SessionId(session_id), "message", fields).await?;
//!             }
//!             Event::Delivered(e) => {
//!                 assert!(e.payload.as_str().contains("from node B"));
//!                 client.disconnect().await;
//!             }
//!             Event::Closed(_) => break,
//!             _ => {}
//!         }
//!     }
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]

mod keys;
mod link;
mod node;
mod presence;
mod subs;
pub mod testing;
mod wire;

use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use serde_json::Value;
use tether_core::server::{CommandError, PresenceInfo, ServerConfig, SessionId};
use tether_driver::{
    Bound, Runtime, ServeError, Server, ServerError, ServerEvents, PUBLISH_MANY_MAX,
};

use keys::Keys;
use link::{Link, Pushes};
use node::{Health, Inner, RunIds, Write};

/// How a node reaches Redis, names its keys, and rides out Redis faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` of a single Redis (unused with [`RedisConfig::cluster_nodes`]).
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each); empty for a single Redis.
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key and channel (several gateways can share one Redis). No `{` or `}`.
    pub prefix: String,
    /// How long a client stays in presence after its node stops refreshing it (a killed node's
    /// clients disappear within this).
    pub presence_ttl: Duration,
    /// Longest wait for a connection to Redis (default 1 s).
    pub connect_timeout: Duration,
    /// Longest wait for Redis's reply to a command (default 2 s); then the command is sent
    /// again (appends are applied at most once).
    pub response_timeout: Duration,
    /// Longest delay between reconnect attempts and between retries of a store write while
    /// Redis is unreachable (default 200 ms).
    pub reconnect_max: Duration,
    /// Store writes (events, in practice) that may wait for Redis; when full, publishers wait
    /// while Redis answers and get [`StoreError::Backlogged`] while it does not. Default 65,536.
    pub append_queue: usize,
    /// What to do when Redis may evict tether's keys (see the crate docs).
    pub eviction: EvictionCheck,
}

/// What a node does at start when Redis's `maxmemory-policy` may evict its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionCheck {
    /// Log a warning and serve.
    #[default]
    Warn,
    /// Refuse to start ([`StoreError::Evicting`]).
    Refuse,
}

impl RedisConfig {
    /// A single Redis at `url`. Defaults: prefix `tether`, presence TTL 10 s, connect timeout
    /// 1 s, response timeout 2 s, reconnect delays up to 200 ms, 65,536 queued events, warn on
    /// an evicting policy.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster_nodes: Vec::new(),
            prefix: "tether".into(),
            presence_ttl: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            reconnect_max: Duration::from_millis(200),
            append_queue: 65_536,
            eviction: EvictionCheck::Warn,
        }
    }

    /// A Redis Cluster reached through `nodes` (any of its masters; the rest is discovered),
    /// with the defaults of [`RedisConfig::new`].
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            cluster_nodes: nodes.into_iter().map(Into::into).collect(),
            ..Self::new("")
        }
    }
}

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis refused the command, or could not be reached for a read. Check Redis's logs and
    /// version (≥ 7.0); reads may be retried.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis is unreachable and the append queue is full: nothing was published. Retry later
    /// (`GET /ready` answers 200 again once Redis is back), or enlarge
    /// [`RedisConfig::append_queue`].
    #[error("the session store is unreachable and {queued} events already wait for it")]
    Backlogged {
        /// The queue's bound.
        queued: usize,
    },
    /// More events in one call than the append queue (or [`PUBLISH_MANY_MAX`]) holds: split
    /// the batch.
    #[error("{events} events in one call (at most {max})")]
    BatchTooLarge {
        /// Events in the call.
        events: usize,
        /// The most one call may carry.
        max: usize,
    },
    /// The server handle is gone.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The event could not be built (reserved kind or field).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No such session in the store (never created, expired, or lost by Redis): drop the work.
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// The server machine is not in store mode.
    #[error("the server must run with ServerConfig::external_store = true")]
    NotStoreMode,
    /// Redis may evict tether's keys (its `maxmemory-policy`), and the node was told to
    /// refuse that ([`EvictionCheck::Refuse`]): set `maxmemory-policy noeviction`.
    #[error("redis maxmemory-policy is {policy}: it may evict live sessions (set noeviction)")]
    Evicting {
        /// The policy Redis reported.
        policy: String,
    },
    /// The key prefix contains `{` or `}` (it would break the keys' hash tags).
    #[error("key prefix {0:?} must not contain braces")]
    InvalidPrefix(String),
    /// No OS entropy for the node id.
    #[error("no OS entropy for the node id: {0}")]
    Entropy(String),
    /// The node has stopped.
    #[error("the store worker has stopped")]
    Stopped,
}

/// A gateway node's link to the shared store. Cheap to clone.
#[derive(Clone)]
pub struct RedisNode {
    inner: Arc<Inner>,
    /// Each of the node's loops drops its sender when it ends; awaited by
    /// [`RedisNode::shutdown`].
    loops: Arc<std::sync::Mutex<Vec<oneshot::Receiver<()>>>>,
}

/// The server figures the store needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    log_max: usize,
    session_ttl: Duration,
    dedup_ttl: Duration,
    presence_ttl: Duration,
}

/// Starts a gateway node on the Redis of `redis`, on any runtime: checks Redis first (a node
/// that cannot reach its store must not accept clients), then calls `bind` with `config`
/// (`external_store` set for you) to bind the listener with an adapter's `serve`, and runs the
/// node's loops on `runtime` (the adapter's runtime). `bound.events` carries what the
/// application handles (requests, session events); the store's own events are consumed by the
/// node. On tokio:
/// `serve(TokioRuntime, config, redis, |config| tether_tokio::serve(addr, config, None))`
/// (the crate docs run two nodes).
pub async fn serve<R, B, F>(
    runtime: R,
    mut config: ServerConfig,
    redis: RedisConfig,
    bind: B,
) -> Result<(Bound, RedisNode), NodeError>
where
    R: Runtime,
    B: FnOnce(ServerConfig) -> F,
    F: Future<Output = Result<Bound, ServeError>>,
{
    config.external_store = true;
    let connection = Connection::open(&redis).await?;
    let mut bound = bind(config.clone()).await?;
    let events = std::mem::replace(&mut bound.events, ServerEvents::closed());
    let (node, app_events) = RedisNode::start_with(
        runtime,
        bound.server.clone(),
        events,
        &config,
        redis,
        connection,
    )?;
    bound.events = app_events;
    Ok((bound, node))
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listener or server.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's connection, opened (and its Redis checked) before it serves.
struct Connection {
    link: Link,
    pushes: Pushes,
}

impl Connection {
    async fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        if config.prefix.contains(['{', '}']) {
            return Err(StoreError::InvalidPrefix(config.prefix.clone()));
        }
        let (link, pushes) = Link::open(config).await?;
        let _: String = redis::cmd("PING").query_async(&mut link.clone()).await?;
        check_eviction(&link, config.eviction).await?;
        Ok(Self { link, pushes })
    }
}

/// Reads `maxmemory` and `maxmemory-policy` (of one master on a cluster): a policy other than
/// `noeviction` with a memory limit may evict live sessions. A Redis that refuses `CONFIG`
/// (managed services often do) gets a warning that the policy could not be checked.
async fn check_eviction(link: &Link, check: EvictionCheck) -> Result<(), StoreError> {
    let read = |name: &'static str| {
        let mut link = link.clone();
        async move {
            let pair: redis::RedisResult<std::collections::HashMap<String, String>> =
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async(&mut link)
                    .await;
            pair.map(|mut p| p.remove(name).unwrap_or_default())
        }
    };
    let (limit, policy) = match (read("maxmemory").await, read("maxmemory-policy").await) {
        (Ok(limit), Ok(policy)) => (limit, policy),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                "session store: cannot read Redis's maxmemory-policy ({e}); make sure it is \
                 noeviction, or live sessions may be evicted"
            );
            return Ok(());
        }
    };
    if policy == "noeviction" || limit == "0" {
        return Ok(());
    }
    match check {
        EvictionCheck::Refuse => Err(StoreError::Evicting { policy }),
        EvictionCheck::Warn => {
            tracing::warn!(
                "session store: Redis maxmemory-policy is {policy} with maxmemory {limit}: it \
                 may evict live sessions (their clients then see SessionReplaced); set \
                 noeviction"
            );
            Ok(())
        }
    }
}

impl RedisNode {
    /// Runs the store side of a started server (`tether_driver::Server::start` or an adapter's
    /// serve, with `server_config.external_store` set) on `runtime`: consumes `events`, answers
    /// the machine's store requests, and returns the events the application should see.
    pub async fn start<R: Runtime>(
        runtime: R,
        server: Server,
        events: ServerEvents,
        server_config: &ServerConfig,
        config: RedisConfig,
    ) -> Result<(RedisNode, ServerEvents), StoreError> {
        let connection = Connection::open(&config).await?;
        Self::start_with(runtime, server, events, server_config, config, connection)
    }

    fn start_with<R: Runtime>(
        runtime: R,
        server: Server,
        events: ServerEvents,
        server_config: &ServerConfig,
        config: RedisConfig,
        connection: Connection,
    ) -> Result<(RedisNode, ServerEvents), StoreError> {
        if !server_config.external_store {
            return Err(StoreError::NotStoreMode);
        }
        let mut node_id = [0u8; 8];
        getrandom::fill(&mut node_id).map_err(|e| StoreError::Entropy(e.to_string()))?;
        let node_hex: String = node_id.iter().map(|b| format!("{b:02x}")).collect();
        let (writes, writes_rx) = mpsc::unbounded();
        let (app_tx, app_events) = ServerEvents::channel(1024);
        let room_max = config.append_queue.max(1);
        let metrics = server.metrics().store().clone();
        metrics.up.set(1);
        let inner = Arc::new(Inner {
            runtime: Arc::new(runtime),
            server,
            link: connection.link,
            keys: Keys::new(&config.prefix).with_node(node_hex),
            limits: Limits {
                log_max: server_config.recovery_session_events.max(1),
                session_ttl: server_config.session_ttl,
                dedup_ttl: server_config.dedup_ttl,
                presence_ttl: config.presence_ttl,
            },
            scripts: wire::Scripts::new(),
            writes,
            room: Arc::new(tokio::sync::Semaphore::new(room_max)),
            room_max,
            health: Health::new(),
            subs: subs::Subscriptions::default(),
            runs: RunIds::new(u64::from_le_bytes(node_id)),
            presence_due: tokio::sync::Notify::new(),
            metrics,
            retry_every: config.reconnect_max.max(Duration::from_millis(1)),
        });
        let loops = [
            inner.run(node::pump(inner.clone(), events, app_tx)),
            inner.run(node::writer(inner.clone(), writes_rx)),
            inner.run(node::subscriber(inner.clone(), connection.pushes)),
            inner.run(node::health_loop(inner.clone())),
            inner.run(presence::presence_loop(inner.clone())),
        ];
        let loops = Arc::new(std::sync::Mutex::new(loops.into()));
        Ok((RedisNode { inner, loops }, app_events))
    }

    /// Graceful shutdown of the node: the server's (every connection gets what it is owed,
    /// then a close), then the store's: the writes still queued are stored (for up to 5 s if
    /// Redis is unreachable), this node's presence is withdrawn, and its connection to Redis
    /// closes. Returns the server's final snapshot (its sessions live on in Redis).
    pub async fn shutdown(&self) -> Result<tether_core::server::ServerSnapshot, StoreError> {
        let snapshot = self.inner.server.shutdown().await?;
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(|e| e.into_inner()));
        for ended in loops {
            let _ = ended.await;
        }
        Ok(snapshot)
    }

    /// The server handle (respond, broadcast, health, shutdown...). Publish through the node:
    /// the server's own publish calls are refused in store mode.
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// Publishes a tracked event to `session`, wherever its client is connected. Returns the
    /// sequence the store assigned, or why there is none: [`StoreError::UnknownSession`],
    /// [`StoreError::Backlogged`] (Redis down and the queue full: nothing was published), a
    /// refused kind or field. While Redis is unreachable the call waits (the event is sent
    /// until Redis takes it, at most once): bound the wait with a timeout if needed; the
    /// event may still be published after it.
    ///
    /// A session exists for every node once its metadata is in Redis: its client learns its
    /// id only then, but `ServerEvent::SessionCreated` reaches the application of the node
    /// that created it a moment earlier, so a publish through *another* node right away may
    /// still get [`StoreError::UnknownSession`] (publishing through the creating node is
    /// always ordered after the metadata).
    pub async fn publish(
        &self,
        session: &SessionId,
        kind: &str,
        fields: Vec<(String, Value)>,
    ) -> Result<u64, StoreError> {
        let range = self.publish_many(session, kind, vec![fields]).await?;
        Ok(*range.end())
    }

    /// Publishes several events of one `kind` in one store round trip; they get consecutive
    /// sequences, returned as a range (empty for no event). At most [`PUBLISH_MANY_MAX`]
    /// events per call. Errors and waiting as [`RedisNode::publish`]; on an error none of the
    /// events was published.
    pub async fn publish_many(
        &self,
        session: &SessionId,
        kind: &str,
        events: Vec<Vec<(String, Value)>>,
    ) -> Result<RangeInclusive<u64>, StoreError> {
        let count = events.len();
        if count == 0 {
            return Ok(RangeInclusive::new(1, 0)); // empty
        }
        if count > PUBLISH_MANY_MAX {
            return Err(StoreError::BatchTooLarge {
                events: count,
                max: PUBLISH_MANY_MAX,
            });
        }
        let room = self.inner.reserve(count).await?;
        let (sid, k) = (session.clone(), kind.to_owned());
        let prepared = self
            .inner
            .server
            .apply(move |m, now| {
                events
                    .iter()
                    .map(|fields| {
                        let fields: Vec<(&str, Value)> = fields
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.clone()))
                            .collect();
                        m.prepare(now, &sid, &k, &fields)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await??;
        let (tx, rx) = oneshot::channel();
        self.inner
            .writes
            .unbounded_send(Write::Append {
                events: prepared,
                reply: Some(tx),
                room: Some(room),
            })
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Clients connected to any node (of `agent`, or all), as their nodes last refreshed them.
    pub async fn presence(&self, agent: Option<&str>) -> Result<Vec<PresenceInfo>, StoreError> {
        self.inner.presence(agent).await
    }

    /// This node's id (part of its presence key and client ids).
    pub fn node_id(&self) -> &str {
        self.inner.keys.node()
    }

    /// Whether Redis answered the node's last command (`GET /ready` answers 503 while not).
    pub fn store_up(&self) -> bool {
        self.inner.health.is_up()
    }

    /// Sessions whose notifications this node receives (those its connections hold, and
    /// briefly those it was asked to resume).
    pub fn subscriptions(&self) -> usize {
        self.inner.subs.len()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
