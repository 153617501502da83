//! tether's multi-node session store on Redis.
//!
//! One gateway process keeps its sessions in memory. Several gateway nodes behind a load
//! balancer share them through Redis instead, so a client that reconnects to another node
//! resumes exactly where it was:
//!
//! | what | Redis | key |
//! |---|---|---|
//! | session metadata: agent, owner principal, epoch, version, **head** (last sequence) | hash | `{prefix}:s:{session}` |
//! | the replay log, trimmed to the server's `recovery_session_events` | stream, entry id `{seq}-0` | `{prefix}:log:{session}` |
//! | request ids seen (`""`) and their outcomes (JSON), for `dedup_ttl` | string with TTL | `{prefix}:req:{session}:{request_id}` |
//! | presence: one key per connected client, refreshed every `presence_ttl / 3` | string with TTL | `{prefix}:presence:{node}:{client}` |
//! | new events, for the node holding the session's connection | pub/sub channel | `{prefix}:events` |
//!
//! Sequences are assigned atomically by one Lua script (`HINCRBY head` + `XADD` + trim +
//! `PUBLISH`), so any node may publish to any session and numbers stay gap-free. The node
//! holding the connection ingests the notification; a missed one shows up as a gap at the
//! next and is read back from the stream. The server machine runs in store mode
//! ([`ServerConfig::external_store`]): see `tether_core::server::Server::provide_session`.
//!
//! Two nodes on one Redis: a client connected to node A gets an event published through node B.
//! ([`testing::RedisServer`] uses `TETHER_REDIS_URL`, or starts a `redis-server` of its own.)
//!
//! ```
//! use futures::StreamExt;
//! use tether_core::client::{ClientConfig, Event, State};
//! use tether_core::server::{ServerConfig, SessionId};
//! use tether_redis::{serve, testing::RedisServer, RedisConfig};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let redis = RedisServer::for_tests();
//!     let config = || RedisConfig::new(redis.url.clone());
//!     let (a, _node_a) = serve("127.0.0.1:0", ServerConfig::default(), config()).await?;
//!     let (_b, node_b) = serve("127.0.0.1:0", ServerConfig::default(), config()).await?;
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
pub mod testing;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use redis::aio::ConnectionManager;
use serde_json::Value;
use tether_core::server::{
    CommandError, ConnId, Outcome, PresenceInfo, Recorded, ServerConfig, ServerEvent, SessionId,
    StoreUnavailable, StoredSession, Unsequenced,
};
use tether_driver::{Bound, ServeError, Server, ServerError, ServerEvents};

use keys::Keys;

/// How a node reaches Redis and names its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prefix of every key and channel (several gateways can share one Redis).
    pub prefix: String,
    /// How long a client stays in presence after its node stops refreshing it (a killed node's
    /// clients disappear within this).
    pub presence_ttl: Duration,
}

impl RedisConfig {
    /// Defaults: prefix `tether`, presence TTL 10 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "tether".into(),
            presence_ttl: Duration::from_secs(10),
        }
    }
}

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A batched store command failed (shared by every caller in the batch).
    #[error("session store failed: {0}")]
    Failed(String),
    /// The server handle is gone.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The event could not be built (reserved kind or field).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No such session in the store (never created, or expired).
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// The server machine is not in store mode.
    #[error("the server must run with ServerConfig::external_store = true")]
    NotStoreMode,
    /// The node has stopped.
    #[error("the store worker has stopped")]
    Stopped,
}

/// A gateway node's link to the shared store. Cheap to clone.
#[derive(Clone)]
pub struct RedisNode {
    inner: Arc<Inner>,
}

struct Inner {
    server: Server,
    redis: ConnectionManager,
    keys: Keys,
    limits: Limits,
    work: mpsc::UnboundedSender<Work>,
    presence_due: tokio::sync::Notify,
    /// Presence keys written by the last refresh (deleted when their client leaves).
    presence_written: Mutex<Vec<String>>,
}

/// The server figures the store needs.
#[derive(Debug, Clone, Copy)]
struct Limits {
    log_max: usize,
    session_ttl: Duration,
    dedup_ttl: Duration,
    presence_ttl: Duration,
}

type AppendReply = oneshot::Sender<Result<u64, StoreError>>;

/// Store work, done in order by one worker (metadata before appends, `accepted` before
/// `final`).
enum Work {
    Meta(Box<StoredSession>),
    Append(Vec<Unsequenced>, Option<AppendReply>),
    Outcome(SessionId, String, Outcome),
    Check {
        conn: ConnId,
        session: SessionId,
        request_id: String,
        content: Value,
    },
    Wanted {
        conn: ConnId,
        session: SessionId,
    },
}

/// Binds `addr` like `tether_tokio::serve` and runs the node on the Redis at `redis.url`
/// (`config.external_store` is set for you). `bound.events` carries what the application
/// handles (requests, session events); the store's own events are consumed by the node.
pub async fn serve(
    addr: &str,
    mut config: ServerConfig,
    redis: RedisConfig,
) -> Result<(Bound, RedisNode), NodeError> {
    config.external_store = true;
    // Connect first: a node that cannot reach its store must not accept clients.
    let client = redis::Client::open(redis.url.as_str()).map_err(StoreError::from)?;
    let connections = Connections::open(&client, &redis).await?;
    let mut bound = tether_tokio::serve(addr, config.clone(), None).await?;
    let events = std::mem::replace(&mut bound.events, ServerEvents::closed());
    let (node, app_events) =
        RedisNode::start_with(bound.server.clone(), events, &config, redis, connections)?;
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

/// The node's Redis connections, opened before it serves.
struct Connections {
    /// Reconnects by itself after Redis restarts or the link drops.
    redis: ConnectionManager,
    pubsub: redis::aio::PubSub,
    client: redis::Client,
}

impl Connections {
    async fn open(client: &redis::Client, config: &RedisConfig) -> Result<Self, StoreError> {
        let mut redis = ConnectionManager::new(client.clone()).await?;
        let _: String = redis::cmd("PING").query_async(&mut redis).await?;
        let mut pubsub = client.get_async_pubsub().await?;
        // Subscribed before any session can attach here: no notification is missed.
        pubsub
            .subscribe(Keys::new(&config.prefix).channel())
            .await?;
        Ok(Self {
            redis,
            pubsub,
            client: client.clone(),
        })
    }
}

impl RedisNode {
    /// Runs the store side of a started server (`tether_driver::Server::start` or an adapter's
    /// serve, with `server_config.external_store` set): consumes `events`, answers the
    /// machine's store requests, and returns the events the application should see.
    pub async fn start(
        server: Server,
        events: ServerEvents,
        server_config: &ServerConfig,
        config: RedisConfig,
    ) -> Result<(RedisNode, ServerEvents), StoreError> {
        let client = redis::Client::open(config.url.as_str())?;
        let connections = Connections::open(&client, &config).await?;
        Self::start_with(server, events, server_config, config, connections)
    }

    fn start_with(
        server: Server,
        events: ServerEvents,
        server_config: &ServerConfig,
        config: RedisConfig,
        connections: Connections,
    ) -> Result<(RedisNode, ServerEvents), StoreError> {
        if !server_config.external_store {
            return Err(StoreError::NotStoreMode);
        }
        let mut node_id = [0u8; 8];
        getrandom::fill(&mut node_id).map_err(|e| {
            StoreError::Redis(redis::RedisError::from((
                redis::ErrorKind::ClientError,
                "no OS entropy for the node id",
                e.to_string(),
            )))
        })?;
        let node_id: String = node_id.iter().map(|b| format!("{b:02x}")).collect();
        let (work_tx, work_rx) = mpsc::unbounded();
        let (app_tx, app_events) = ServerEvents::channel(1024);
        let inner = Arc::new(Inner {
            server,
            redis: connections.redis,
            keys: Keys::new(&config.prefix).with_node(node_id),
            limits: Limits {
                log_max: server_config.recovery_session_events.max(1),
                session_ttl: server_config.session_ttl,
                dedup_ttl: server_config.dedup_ttl,
                presence_ttl: config.presence_ttl,
            },
            work: work_tx,
            presence_due: tokio::sync::Notify::new(),
            presence_written: Mutex::new(Vec::new()),
        });
        tokio::spawn(pump(inner.clone(), events, app_tx));
        tokio::spawn(worker(inner.clone(), work_rx));
        tokio::spawn(subscriber(
            inner.clone(),
            connections.pubsub,
            connections.client,
        ));
        tokio::spawn(presence_loop(inner.clone()));
        Ok((RedisNode { inner }, app_events))
    }

    /// The server handle (respond, broadcast, health, shutdown...).
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// Publishes a tracked event to `session`, wherever its client is connected. Returns the
    /// sequence the store assigned.
    pub async fn publish(
        &self,
        session: &SessionId,
        kind: &str,
        fields: Vec<(String, Value)>,
    ) -> Result<u64, StoreError> {
        self.publish_many(session, kind, vec![fields]).await
    }

    /// Publishes several events of one `kind` in one store round trip; returns the last
    /// sequence.
    pub async fn publish_many(
        &self,
        session: &SessionId,
        kind: &str,
        events: Vec<Vec<(String, Value)>>,
    ) -> Result<u64, StoreError> {
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
            .work
            .unbounded_send(Work::Append(prepared, Some(tx)))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Clients connected to any node (of `agent`, or all), as their nodes last refreshed them.
    pub async fn presence(&self, agent: Option<&str>) -> Result<Vec<PresenceInfo>, StoreError> {
        let mut redis = self.inner.redis.clone();
        let pattern = self.inner.keys.presence_pattern();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut redis)
            .await?;
        let mut all: Vec<PresenceInfo> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .filter(|p: &PresenceInfo| agent.is_none_or(|a| p.channels.iter().any(|c| c == a)))
            .collect();
        all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        Ok(all)
    }

    /// This node's id (part of its presence keys and client ids).
    pub fn node_id(&self) -> &str {
        self.inner.keys.node()
    }
}

/// Passes the application's events on; hands the store's to the worker without waiting (the
/// hub may be waiting for this loop while the worker waits for the hub).
async fn pump(inner: Arc<Inner>, mut events: ServerEvents, mut app: mpsc::Sender<ServerEvent>) {
    while let Some(event) = events.next().await {
        let work = match event {
            ServerEvent::SessionWanted { conn, session } => Work::Wanted { conn, session },
            ServerEvent::StoreSession(stored) => Work::Meta(stored),
            ServerEvent::StoreAppend(pending) => Work::Append(vec![pending], None),
            ServerEvent::RequestCheck {
                conn,
                session,
                request_id,
                content,
            } => Work::Check {
                conn,
                session,
                request_id,
                content,
            },
            ServerEvent::OutcomeRecorded {
                session,
                request_id,
                outcome,
            } => Work::Outcome(session, request_id, outcome),
            other => {
                if matches!(other, ServerEvent::PresenceChanged { .. }) {
                    inner.presence_due.notify_one();
                }
                // Nobody listening is fine: the node keeps serving.
                let _ = app.send(other).await;
                continue;
            }
        };
        if inner.work.unbounded_send(work).is_err() {
            return;
        }
    }
}

/// Most store requests taken in one pass (consecutive appends share one pipeline).
const WORK_BATCH: usize = 256;

async fn worker(inner: Arc<Inner>, mut work: mpsc::UnboundedReceiver<Work>) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    loop {
        let first = tokio::select! {
            w = work.next() => match w { Some(w) => w, None => return },
            () = &mut stopped => return,
        };
        let mut batch = vec![first];
        while batch.len() < WORK_BATCH {
            match work.try_recv() {
                Ok(w) => batch.push(w),
                _ => break,
            }
        }
        let mut appends: Vec<(Vec<Unsequenced>, Option<AppendReply>)> = Vec::new();
        for w in batch {
            if let Work::Append(events, reply) = w {
                appends.push((events, reply));
                continue;
            }
            // Anything else waits for the appends before it, in order.
            inner.append(std::mem::take(&mut appends)).await;
            inner.handle(w).await;
        }
        inner.append(appends).await;
    }
}

impl Inner {
    async fn handle(&self, work: Work) {
        let result = match work {
            Work::Meta(stored) => self.write_meta(&stored).await,
            Work::Outcome(session, request_id, outcome) => {
                self.store_outcome(&session, &request_id, &outcome).await
            }
            Work::Check {
                conn,
                session,
                request_id,
                content,
            } => self.check_request(conn, session, request_id, content).await,
            Work::Wanted { conn, session } => self.provide(conn, session).await,
            Work::Append(events, reply) => {
                self.append(vec![(events, reply)]).await;
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!("session store: {e}");
        }
    }

    /// Numbers and appends the events in one pipeline, one script call per run of one
    /// session's events; each caller gets its last sequence.
    async fn append(&self, batches: Vec<(Vec<Unsequenced>, Option<AppendReply>)>) {
        if batches.is_empty() {
            return;
        }
        let mut runs: Vec<(&SessionId, Vec<&Unsequenced>)> = Vec::new();
        for e in batches.iter().flat_map(|(events, _)| events) {
            match runs.last_mut() {
                Some((s, run)) if *s == &e.session && run.len() < wire::RUN_MAX => run.push(e),
                _ => runs.push((&e.session, vec![e])),
            }
        }
        let mut pipe = redis::pipe();
        for (session, run) in &runs {
            wire::append_command(&mut pipe, &self.keys, &self.limits, session, run);
        }
        let mut redis = self.redis.clone();
        let lasts: Result<Vec<u64>, _> = pipe.query_async(&mut redis).await;
        let lasts = match lasts {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("session store: append failed: {e}");
                for (_, reply) in batches {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(StoreError::Failed(e.to_string())));
                    }
                }
                return;
            }
        };
        // The sequence of every event, in order (0 = its session is unknown).
        let numbers: Vec<u64> = runs
            .iter()
            .zip(lasts)
            .flat_map(|((_, run), last)| {
                let first = (last + 1).saturating_sub(run.len() as u64);
                (0..run.len() as u64).map(move |k| if last == 0 { 0 } else { first + k })
            })
            .collect();
        drop(runs);
        let mut numbers = numbers.into_iter();
        for (events, reply) in batches {
            let mut last = Ok(0);
            for e in events {
                match numbers.next() {
                    Some(n) if n > 0 => {
                        if last.is_ok() {
                            last = Ok(n);
                        }
                    }
                    _ => last = Err(StoreError::UnknownSession(e.session.clone())),
                }
            }
            match reply {
                Some(reply) => {
                    let _ = reply.send(last);
                }
                None => {
                    if let Err(e) = last {
                        tracing::warn!("session store: {e}");
                    }
                }
            }
        }
    }

    async fn write_meta(&self, stored: &StoredSession) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        wire::meta_pipeline(&self.keys, &self.limits, stored)
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }

    async fn store_outcome(
        &self,
        session: &SessionId,
        request_id: &str,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let text = serde_json::to_string(outcome).unwrap_or_default();
        redis::cmd("SET")
            .arg(self.keys.request(session, request_id))
            .arg(text)
            .arg("PX")
            .arg(millis(self.limits.dedup_ttl))
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }

    async fn check_request(
        &self,
        conn: ConnId,
        session: SessionId,
        request_id: String,
        content: Value,
    ) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        // Marks the id seen and returns what was there, in one step (Redis ≥ 7.0).
        let previous: Result<Option<String>, _> = redis::cmd("SET")
            .arg(self.keys.request(&session, &request_id))
            .arg("")
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(self.limits.dedup_ttl))
            .query_async(&mut redis)
            .await;
        // If the store cannot say, hand it out: the local dedup window still guards resends on
        // this node, and losing a request is worse than a rare double delivery.
        let seen = match &previous {
            Ok(None) | Err(_) => None,
            Ok(Some(text)) => Some(serde_json::from_str::<Outcome>(text).ok()),
        };
        self.server
            .apply(move |m, now| {
                m.admit_request(now, conn, &session, &request_id, content, seen);
            })
            .await?;
        previous.map(drop).map_err(StoreError::from)
    }

    async fn provide(&self, conn: ConnId, session: SessionId) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let read = wire::read_session(&mut redis, &self.keys, &session).await;
        let head = read.as_ref().ok().and_then(|s| s.as_ref().map(|s| s.head));
        let answer = read.map_err(|e| StoreUnavailable(e.to_string()));
        self.server
            .apply(move |m, now| m.provide_session(now, conn, answer))
            .await?;
        if let Some(head) = head {
            // Events appended after the read whose notification came before the attach.
            self.catch_up(&session, head).await?;
        }
        Ok(())
    }

    /// Reads the log after `after` and ingests it (no-op if this node does not hold the
    /// session's connection).
    async fn catch_up(&self, session: &SessionId, after: u64) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let events = wire::read_log(&mut redis, &self.keys, session, after + 1).await?;
        if events.is_empty() {
            return Ok(());
        }
        let sid = session.clone();
        self.server
            .apply(move |m, now| {
                if ingest_all(m, now, &sid, events).is_some() {
                    // The log was trimmed past what this node needs: the client's resume
                    // (anywhere) reports the loss instead of waiting here forever.
                    m.release_holder(now, &sid);
                }
            })
            .await?;
        Ok(())
    }

    /// Writes this node's presence and refreshes its held sessions' TTLs.
    async fn refresh_presence(&self) -> Result<(), StoreError> {
        let (presence, held) = self
            .server
            .apply(|m, _| (m.presence(), m.held_sessions()))
            .await?;
        let mut pipe = redis::pipe();
        let mut written = Vec::with_capacity(presence.len());
        for p in presence {
            let key = self.keys.presence(&p.client_id);
            // Connection labels are per node: prefixed, they stay unique across nodes.
            let p = PresenceInfo {
                client_id: format!("{}:{}", self.keys.node(), p.client_id),
                ..p
            };
            let text = serde_json::to_string(&p).unwrap_or_default();
            pipe.cmd("SET")
                .arg(&key)
                .arg(text)
                .arg("PX")
                .arg(millis(self.limits.presence_ttl))
                .ignore();
            written.push(key);
        }
        let gone: Vec<String> = {
            let mut last = self
                .presence_written
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let gone = last
                .iter()
                .filter(|k| !written.contains(k))
                .cloned()
                .collect();
            *last = written;
            gone
        };
        if !gone.is_empty() {
            pipe.cmd("DEL").arg(gone).ignore();
        }
        for (session, _) in &held {
            for key in [self.keys.meta(session), self.keys.log(session)] {
                pipe.cmd("PEXPIRE")
                    .arg(key)
                    .arg(millis(self.limits.session_ttl))
                    .ignore();
            }
        }
        let mut redis = self.redis.clone();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }

    async fn clear_presence(&self) {
        let keys = std::mem::take(
            &mut *self
                .presence_written
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if keys.is_empty() {
            return;
        }
        let mut redis = self.redis.clone();
        let _ = redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut redis)
            .await;
    }
}

/// Ingests `events` (ascending) into the machine; stops at a gap (the caller's catch-up read
/// covers it).
fn ingest_all(
    m: &mut tether_core::server::Server,
    now: std::time::Instant,
    session: &SessionId,
    events: Vec<Recorded>,
) -> Option<u64> {
    for e in events {
        match m.ingest(now, session, e) {
            Ok(tether_core::server::Ingest::Gap { expected }) => return Some(expected),
            Ok(tether_core::server::Ingest::NotHeld) => return None,
            Ok(_) => {}
            Err(err) => tracing::warn!("session store: {err}"),
        }
    }
    None
}

/// Most notifications ingested in one hub job.
const NOTIFY_BATCH: usize = 512;

/// Ingests notifications; re-subscribes (and catches every held session up) when the pub/sub
/// connection drops.
async fn subscriber(inner: Arc<Inner>, pubsub: redis::aio::PubSub, client: redis::Client) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    let mut stream = pubsub.into_on_message();
    loop {
        let first = tokio::select! {
            m = stream.next() => m,
            () = &mut stopped => return,
        };
        let Some(first) = first else {
            // Lost the subscription: resubscribe, then read what may have been missed.
            stream = loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = &mut stopped => return,
                }
                let Ok(mut p) = client.get_async_pubsub().await else {
                    continue;
                };
                if p.subscribe(inner.keys.channel()).await.is_ok() {
                    break p.into_on_message();
                }
            };
            let held = inner.server.apply(|m, _| m.held_sessions()).await;
            for (session, head) in held.unwrap_or_default() {
                if let Err(e) = inner.catch_up(&session, head).await {
                    tracing::warn!("session store: catch-up of {session}: {e}");
                }
            }
            continue;
        };
        let mut notes = Vec::new();
        notes.extend(wire::parse_notification(first.get_payload_bytes()));
        while notes.len() < NOTIFY_BATCH {
            match futures::FutureExt::now_or_never(stream.next()) {
                Some(Some(m)) => notes.extend(wire::parse_notification(m.get_payload_bytes())),
                _ => break,
            }
        }
        let gaps = inner
            .server
            .apply(move |m, now| {
                let mut gaps: Vec<(SessionId, u64)> = Vec::new();
                for (session, recorded) in notes {
                    if gaps.iter().any(|(s, _)| *s == session) {
                        continue; // the catch-up read below covers the rest
                    }
                    match m.ingest(now, &session, recorded) {
                        Ok(tether_core::server::Ingest::Gap { expected }) => {
                            gaps.push((session, expected));
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!("session store: {err}"),
                    }
                }
                gaps
            })
            .await;
        let Ok(gaps) = gaps else {
            return; // the server stopped
        };
        for (session, expected) in gaps {
            if let Err(e) = inner.catch_up(&session, expected - 1).await {
                tracing::warn!("session store: gap repair of {session}: {e}");
            }
        }
    }
}

/// Refreshes presence every third of its TTL and whenever it changes; clears it on shutdown.
async fn presence_loop(inner: Arc<Inner>) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    let period = (inner.limits.presence_ttl / 3).max(Duration::from_millis(10));
    loop {
        if let Err(e) = inner.refresh_presence().await {
            if matches!(e, StoreError::Server(_)) {
                break;
            }
            tracing::warn!("session store: presence refresh: {e}");
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = inner.presence_due.notified() => {}
            () = &mut stopped => break,
        }
    }
    inner.clear_presence().await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
