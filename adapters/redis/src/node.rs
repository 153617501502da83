//! A gateway node: [`serve`], its handle ([`RedisNode`]: publish, presence, shutdown), what
//! its loops share ([`Inner`]) and the runtime they run on.

use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use serde_json::Value as Json;
use tether_core::server::{PresenceInfo, ServerConfig, SessionId};
use tether_driver::metrics::StoreMetrics;
use tether_driver::{
    Bound, BoxFuture, Runtime, ServeError, Server, ServerEvents, PUBLISH_MANY_MAX,
};
use tokio::sync::{Notify, Semaphore};

use crate::config::{EvictionCheck, RedisConfig};
use crate::error::{NodeError, StoreError};
use crate::health::{health_loop, Health};
use crate::keys::Keys;
use crate::link::{Link, Pushes};
use crate::presence::presence_loop;
use crate::requests::{pump, relay};
use crate::subscriber::subscriber;
use crate::subscriptions::Subscriptions;
use crate::wire::{self, Scripts};
use crate::worker::{writer, RunIds, Write};

/// Starts a gateway node on the Redis of `redis`, on any runtime: checks Redis first (a node
/// that cannot reach its store must not accept clients), then calls `bind` with `config`
/// (`external_store` set for you) to bind the listener with an adapter's `serve`, and runs the
/// node's loops on `runtime` (the adapter's runtime). `bound.events` carries what the
/// application handles (requests, session events); the store's own events are consumed by the
/// node. On tokio:
/// `serve(TokioRuntime, config, redis, |config| tether_tokio::serve(TokioRuntime, addr, config,
/// ServerOptions::default()))`
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

/// A gateway node's link to the shared store. Cheap to clone.
#[derive(Clone)]
pub struct RedisNode {
    inner: Arc<Inner>,
    /// Each of the node's loops drops its sender when it ends; awaited by
    /// [`RedisNode::shutdown`].
    loops: Arc<std::sync::Mutex<Vec<oneshot::Receiver<()>>>>,
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
        let requests = server.store_requests().ok_or(StoreError::NotStoreMode)?;
        let mut node_id = [0u8; 8];
        getrandom::fill(&mut node_id).map_err(StoreError::Entropy)?;
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
            subs: Subscriptions::default(),
            runs: RunIds::new(u64::from_le_bytes(node_id)),
            presence_due: tokio::sync::Notify::new(),
            metrics,
            retry_every: config.reconnect_max.max(Duration::from_millis(1)),
        });
        let (queued_tx, queued) = mpsc::unbounded();
        let loops = [
            inner.run(pump(inner.clone(), requests, queued_tx)),
            inner.run(relay(inner.clone(), events, queued, app_tx)),
            inner.run(writer(inner.clone(), writes_rx)),
            inner.run(subscriber(inner.clone(), connection.pushes)),
            inner.run(health_loop(inner.clone())),
            inner.run(presence_loop(inner.clone())),
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
        fields: Vec<(String, Json)>,
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
        events: Vec<Vec<(String, Json)>>,
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
                        let fields: Vec<(&str, Json)> = fields
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

/// The server figures the store needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) log_max: usize,
    pub(crate) session_ttl: Duration,
    pub(crate) dedup_ttl: Duration,
    pub(crate) presence_ttl: Duration,
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

/// The runtime the node's loops run on: tether-driver's [`Runtime`], object-safe so that the
/// node's types do not carry it as a parameter.
pub(crate) trait Tasks: Send + Sync {
    /// Runs `future` in the background.
    fn spawn(&self, future: BoxFuture<()>);
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;
}

impl<R: Runtime> Tasks for R {
    fn spawn(&self, future: BoxFuture<()>) {
        Runtime::spawn(self, future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        self.sleep_until(self.now() + duration)
    }
}

/// What the loops share.
pub(crate) struct Inner {
    pub(crate) runtime: Arc<dyn Tasks>,
    pub(crate) server: Server,
    pub(crate) link: Link,
    pub(crate) keys: Keys,
    pub(crate) limits: Limits,
    pub(crate) scripts: Scripts,
    pub(crate) writes: mpsc::UnboundedSender<Write>,
    /// The append queue's room, in events (requests, outcomes and metadata count one).
    pub(crate) room: Arc<Semaphore>,
    pub(crate) room_max: usize,
    pub(crate) health: Health,
    pub(crate) subs: Subscriptions,
    pub(crate) runs: RunIds,
    pub(crate) presence_due: Notify,
    pub(crate) metrics: StoreMetrics,
    /// Delay between attempts while the store is unreachable.
    pub(crate) retry_every: Duration,
}

impl Inner {
    /// Runs `task` on the node's runtime.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(Box::pin(task));
    }

    /// Runs one of the node's loops; the receiver completes when it has ended.
    pub(crate) fn run(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> oneshot::Receiver<()> {
        let (ended, on_end) = oneshot::channel();
        self.spawn(async move {
            task.await;
            drop(ended);
        });
        on_end
    }

    /// Completes after `duration`.
    pub(crate) fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        self.runtime.sleep(duration)
    }
}
