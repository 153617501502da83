//! The server loops: one hub task owns the sans-IO [`Machine`]; one task per connection owns
//! its socket. Connection tasks forward what they read to the hub and write what the hub routes
//! to them (`feed` for every queued frame, one `flush`), then report the written frames back so
//! the machine's in-flight window counts real wire bytes.
//!
//! Costs are per batch, not per frame: the hub handles every input that is ready before it
//! routes, routes each connection's frames into that connection's [`queue`](crate::queue) under
//! one lock with one wake-up, and a connection task takes its whole queue at once.
//!
//! Here: the application's handle ([`Server`]) and its streams; the hub in `hub.rs`, the
//! connection task in `connection.rs`, snapshot files in `snapshot.rs`.

mod connection;
mod hub;
mod snapshot;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::channel::{mpsc, oneshot};
use futures::future;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tether_core::server::{
    Audience, CommandError, ConnId, ConnectInfo, Health, Outcome, PresenceInfo, RestoreError,
    Server as Machine, ServerConfig, ServerEvent, ServerSnapshot, ServerStats, SessionId,
    StoreRequest,
};
use tether_core::wire::EventBatch;

use crate::metrics::ServerMetrics;
use crate::queue::{self, Ledger};
use crate::{Runtime, WebSocket};

use connection::ConnState;
use hub::{Batch, Command, Hub, Input, Reply, Written};
pub use snapshot::{load_snapshot, save_snapshot};

/// Inputs queued for the hub before connection tasks wait (backpressure on readers).
const HUB_QUEUE: usize = 4096;

/// Server events queued for the application before the hub waits for it.
const EVENT_QUEUE: usize = 4096;

/// Events a `publish_many` or `publish_batch` call may carry.
pub const PUBLISH_MANY_MAX: usize = 4096;

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Errors of the server handle.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The machine refused the command (unknown session, reserved kind, ...).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The snapshot could not be restored.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Reading or writing the snapshot file failed.
    #[error("snapshot file {path}: {source}")]
    SnapshotFile {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The snapshot file is not a snapshot.
    #[error("snapshot file {path}: {source}")]
    SnapshotFormat {
        /// The file.
        path: String,
        /// What failed.
        source: serde_json::Error,
    },
    /// The server has shut down.
    #[error("the server is shut down")]
    Stopped,
    /// The OS gave no entropy for the seed of session ids (a sandbox without `getrandom`, or a
    /// very early boot): check the host, or give `ServerConfig::seed` a value of its own.
    #[error("no OS entropy for the session-id seed")]
    Entropy(#[source] getrandom::Error),
    /// A `publish_many` or `publish_batch` batch larger than [`PUBLISH_MANY_MAX`].
    #[error("{0} events in one publish_many call (at most {max})", max = PUBLISH_MANY_MAX)]
    BatchTooLarge(usize),
}

/// How a server runs, beyond its machine's [`ServerConfig`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Prometheus metrics (default on). Off, the hub and the connection tasks count and time
    /// nothing and `GET /metrics` answers 404.
    pub metrics: bool,
    /// Sessions saved by a previous run ([`load_snapshot`]), restored at start (their clients
    /// resume them by id); `None` (the default): none.
    pub snapshot: Option<ServerSnapshot>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            metrics: true,
            snapshot: None,
        }
    }
}

impl ServerOptions {
    /// These options with metrics on or off.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// These options restoring `snapshot` (a snapshot, or what [`load_snapshot`] returned).
    pub fn snapshot(mut self, snapshot: impl Into<Option<ServerSnapshot>>) -> Self {
        self.snapshot = snapshot.into();
        self
    }
}

/// The application's handle to a running server: publish, respond, broadcast, snapshot, shut
/// down. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    hub: mpsc::Sender<Input>,
    /// Where connection tasks report the frames they wrote (`handle_sent_frames`).
    sent: Arc<Ledger<Written>>,
    next_conn: Arc<AtomicU64>,
    stopped: future::Shared<oneshot::Receiver<()>>,
    metrics: ServerMetrics,
    /// Components reported failing ([`Server::set_failing`]), for `/ready`.
    failing: Arc<std::sync::Mutex<Vec<&'static str>>>,
    /// Store mode: the machine's store requests, until the store adapter takes them.
    store_requests: Arc<std::sync::Mutex<Option<StoreRequests>>>,
}

/// The server's [`ServerEvent`]s: requests to answer, sessions created/resumed/expired,
/// presence changes, bad input. The hub waits when the application falls behind, so keep
/// consuming this stream.
pub struct ServerEvents {
    rx: mpsc::Receiver<ServerEvent>,
}

impl ServerEvents {
    /// A stream that is already finished (a placeholder after moving the real one away).
    pub fn closed() -> Self {
        let (_, rx) = mpsc::channel(0);
        Self { rx }
    }

    /// A stream fed by the returned sender: for layers that consume the hub's events, act on
    /// some (e.g. a session store watching sessions detach) and pass the rest on to the
    /// application.
    pub fn channel(capacity: usize) -> (mpsc::Sender<ServerEvent>, Self) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Self { rx })
    }
}

/// Store mode: the machine's [`StoreRequest`]s, for the session store adapter (e.g.
/// `tether-redis`), which answers them through [`Server::apply`] (the `handle_store_*` inputs).
/// The hub waits when the store falls behind, so keep consuming this stream.
pub struct StoreRequests {
    rx: mpsc::Receiver<StoreRequest>,
}

impl Stream for StoreRequests {
    type Item = StoreRequest;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StoreRequest>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Stream for ServerEvents {
    type Item = ServerEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerEvent>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Server {
    /// Starts the hub on `runtime`, with the sessions of [`ServerOptions::snapshot`] if given
    /// (clients resume them by id).
    pub fn start<R: Runtime>(
        runtime: R,
        config: ServerConfig,
        options: ServerOptions,
    ) -> Result<(Server, ServerEvents), ServerError> {
        let ServerOptions { metrics, snapshot } = options;
        let mut config = config;
        // Session ids are bearer capabilities: unguessable unless the caller chose a seed.
        if config.seed.is_none() {
            config.seed = Some(crate::os_seed().map_err(ServerError::Entropy)?);
        }
        if config.epoch_at_start == 0.0 {
            config.epoch_at_start = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
        }
        let now = runtime.now();
        let machine = match snapshot {
            Some(s) => Machine::restore(config, s, now)?,
            None => Machine::new(config, now),
        };
        let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (store_tx, store_rx) = if machine.config().external_store {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            (Some(tx), Some(StoreRequests { rx }))
        } else {
            (None, None)
        };
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let sent = Arc::new(Ledger::default());
        let metrics = if metrics {
            ServerMetrics::new()
        } else {
            ServerMetrics::disabled()
        };
        let hub = Hub {
            _stopped: stopped_tx,
            metrics: metrics.clone(),
            attached_at: HashMap::new(),
            published_at: None,
            runtime: runtime.clone(),
            machine,
            inputs: hub_rx,
            sent: sent.clone(),
            written: Vec::new(),
            writers: HashMap::new(),
            transmits: Vec::new(),
            events: events_tx,
            store: store_tx,
            timer: None,
            shutdown: None,
        };
        runtime.spawn(Box::pin(hub.run()));
        Ok((
            Server {
                hub: hub_tx,
                sent,
                next_conn: Arc::new(AtomicU64::new(1)),
                stopped: stopped_rx.shared(),
                metrics,
                failing: Arc::default(),
                store_requests: Arc::new(std::sync::Mutex::new(store_rx)),
            },
            ServerEvents { rx: events_rx },
        ))
    }

    /// Store mode (`ServerConfig::external_store`): the machine's requests to the session store,
    /// for the store adapter. Taken once: `None` afterwards, and outside store mode.
    pub fn store_requests(&self) -> Option<StoreRequests> {
        self.store_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Resolves once the server has stopped (after [`Server::shutdown`]): accept loops end here.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stopped = self.stopped.clone();
        async move {
            let _ = stopped.await;
        }
    }

    /// Hands an upgraded WebSocket to the server: a task on `runtime` runs it.
    pub fn attach<R: Runtime, S: WebSocket>(&self, runtime: &R, socket: S, info: ConnectInfo) {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        // Unbounded here: the machine's in-flight window bounds what is routed to a connection.
        let (out_tx, out_rx) = queue::queue(usize::MAX);
        // The task announces itself (`Attach`) first: a wrapper future awaiting it would hold
        // the connection's future twice (the async-block layout), doubling each idle
        // connection's task.
        let state = ConnState {
            runtime: runtime.clone(),
            conn,
            socket,
            out: out_rx,
            hub: self.hub.clone(),
            sent: self.sent.clone(),
            metrics: self.metrics.clone(),
        };
        let task = connection::run(Box::new(state), Input::Attach(conn, Box::new(info), out_tx));
        runtime.spawn(Box::pin(task));
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ServerError> {
        let (tx, rx) = oneshot::channel();
        let mut hub = self.hub.clone();
        hub.send(Input::Command(Box::new(make(tx))))
            .await
            .map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)
    }

    /// Records a tracked event in `session` and sends it if the session's client is connected;
    /// a detached session keeps it for the client's resume. Returns its cursor. A server on a
    /// session store (`ServerConfig::external_store`) refuses `publish`, `publish_many` and
    /// `publish_batch` ([`CommandError::StoreMode`]): the store numbers events, so publish
    /// through it to learn their sequences (`publish_to` queues each session's event to the
    /// store, which takes it once Redis answers).
    pub async fn publish(
        &self,
        session: &SessionId,
        kind: &str,
        fields: Vec<(String, Value)>,
    ) -> Result<u64, ServerError> {
        let (s, k) = (session.clone(), kind.to_owned());
        Ok(self.ask(|r| Command::Publish(s, k, fields, r)).await??)
    }

    /// Publishes several events of one `kind` to `session` in one round trip to the hub (for
    /// streaming producers: [`Server::publish`] costs a round trip per event). They are recorded
    /// in order with consecutive cursors; returns the last cursor (the session's head when
    /// `events` is empty). On the first refused event (e.g. a reserved field) the rest of the
    /// batch is dropped and its error returned; the events before it stay published. At most
    /// [`PUBLISH_MANY_MAX`] events per call: split larger batches.
    ///
    /// Field names may be `&'static str` (no allocation per event) or `String`. The fastest
    /// way to stream is [`Server::publish_batch`], with fields the producer encodes itself.
    pub async fn publish_many<K: AsRef<str> + Send + 'static>(
        &self,
        session: &SessionId,
        kind: &str,
        events: Vec<Vec<(K, Value)>>,
    ) -> Result<u64, ServerError> {
        let len = events.len();
        self.publish_boxed(session, kind, Box::new(events), len)
            .await
    }

    /// Like [`Server::publish_many`] without waiting for the hub: returns once the batch is
    /// queued (waiting only while the hub's queue is full), so a streaming producer can prepare
    /// its next batch while the hub records this one. Batches are handled in the order they
    /// are queued. Nothing is reported back: a refused event (unknown session, reserved field)
    /// drops the rest of its batch silently; use `publish_many` when the cursor or the error
    /// matters.
    pub async fn publish_nowait<K: AsRef<str> + Send + 'static>(
        &self,
        session: &SessionId,
        kind: &str,
        events: Vec<Vec<(K, Value)>>,
    ) -> Result<(), ServerError> {
        let len = events.len();
        self.queue_boxed(session, kind, Box::new(events), len).await
    }

    /// Like [`Server::publish_many`] with each event's fields already encoded by the
    /// producer: an [`EventBatch`] holds them as JSON objects in one buffer (serialize a
    /// struct into it with [`EventBatch::push`]) and the hub copies their text into the
    /// frames as it is. The fastest way to stream: the producer allocates per batch, and the
    /// hub neither re-encodes nor drops field values. At most [`PUBLISH_MANY_MAX`] events.
    pub async fn publish_batch(
        &self,
        session: &SessionId,
        kind: &str,
        events: EventBatch,
    ) -> Result<u64, ServerError> {
        let len = events.len();
        self.publish_boxed(session, kind, Box::new(events), len)
            .await
    }

    /// [`Server::publish_batch`] without waiting for the hub, as [`Server::publish_nowait`].
    pub async fn publish_batch_nowait(
        &self,
        session: &SessionId,
        kind: &str,
        events: EventBatch,
    ) -> Result<(), ServerError> {
        let len = events.len();
        self.queue_boxed(session, kind, Box::new(events), len).await
    }

    /// A batch, with the hub's answer.
    async fn publish_boxed(
        &self,
        session: &SessionId,
        kind: &str,
        events: Box<dyn Batch>,
        len: usize,
    ) -> Result<u64, ServerError> {
        if len > PUBLISH_MANY_MAX {
            return Err(ServerError::BatchTooLarge(len));
        }
        let (s, k) = (session.clone(), kind.to_owned());
        Ok(self
            .ask(|r| Command::PublishMany(s, k, events, Some(r)))
            .await??)
    }

    /// A batch, queued without an answer.
    async fn queue_boxed(
        &self,
        session: &SessionId,
        kind: &str,
        events: Box<dyn Batch>,
        len: usize,
    ) -> Result<(), ServerError> {
        if len > PUBLISH_MANY_MAX {
            return Err(ServerError::BatchTooLarge(len));
        }
        let (s, k) = (session.clone(), kind.to_owned());
        self.tell(Command::PublishMany(s, k, events, None)).await
    }

    /// Records one tracked event in every session of `audience` (each numbers it with its own
    /// cursor) and sends it to their connected clients; detached sessions keep it for their
    /// resume. Its text is stored once however many sessions it goes to (see
    /// [`Machine::publish_to`]). Returns how many sessions recorded it.
    pub async fn publish_to(
        &self,
        audience: Audience,
        kind: &str,
        fields: Vec<(String, Value)>,
    ) -> Result<usize, ServerError> {
        let k = kind.to_owned();
        Ok(self
            .ask(|r| Command::PublishTo(audience, k, fields, Some(r)))
            .await??)
    }

    /// [`Server::publish_to`] without waiting for the hub: returns once the event is queued
    /// (waiting only while the hub's queue is full). Nothing is reported back: a refused event
    /// (reserved kind or field) is dropped; use `publish_to` when the error matters.
    pub async fn publish_to_nowait(
        &self,
        audience: Audience,
        kind: &str,
        fields: Vec<(String, Value)>,
    ) -> Result<(), ServerError> {
        self.tell(Command::PublishTo(audience, kind.to_owned(), fields, None))
            .await
    }

    /// Answers a request (`ServerEvent::Request`) with its final outcome.
    pub async fn respond(
        &self,
        session: &SessionId,
        request_id: &str,
        outcome: Outcome,
    ) -> Result<u64, ServerError> {
        let (s, id) = (session.clone(), request_id.to_owned());
        Ok(self.ask(|r| Command::Respond(s, id, outcome, r)).await??)
    }

    /// Sends an untracked event to every bound connection; returns how many got it.
    pub async fn broadcast(&self, kind: &str, data: Value) -> Result<usize, ServerError> {
        let kind = kind.to_owned();
        self.ask(|r| Command::Broadcast(kind, data, Some(r))).await
    }

    /// Like [`Server::broadcast`] without waiting for the hub: returns once the broadcast is
    /// queued (waiting only while the hub's queue is full). Broadcasts keep their order. For
    /// a stream of broadcasts this lets every connection's frames be written in batches.
    pub async fn broadcast_nowait(&self, kind: &str, data: Value) -> Result<(), ServerError> {
        self.tell(Command::Broadcast(kind.to_owned(), data, None))
            .await
    }

    /// Queues a command without a reply.
    async fn tell(&self, command: Command) -> Result<(), ServerError> {
        let mut hub = self.hub.clone();
        hub.send(Input::Command(Box::new(command)))
            .await
            .map_err(|_| ServerError::Stopped)
    }

    /// Closes one connection gracefully (its session stays resumable).
    pub async fn disconnect(&self, conn: ConnId, code: u16, reason: &str) {
        let _ = self
            .tell(Command::Disconnect(conn, code, reason.to_owned()))
            .await;
    }

    /// Connected clients (PROTOCOL.md §11 shape).
    pub async fn presence(&self) -> Result<Vec<PresenceInfo>, ServerError> {
        self.ask(Command::Presence).await
    }

    /// Health (PROTOCOL.md §11 shape).
    pub async fn health(&self) -> Result<Health, ServerError> {
        self.ask(Command::Health).await
    }

    /// Marks a component the server depends on (e.g. `"store"`, its session store) as
    /// failing or recovered. While any is failing, `GET /ready` answers 503 and names it, so a
    /// load balancer sends new clients elsewhere; connected clients are not touched.
    pub fn set_failing(&self, component: &'static str, failing: bool) {
        let mut all = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|c| *c != component);
        if failing {
            all.push(component);
        }
    }

    /// The components reported failing by [`Server::set_failing`], in the order they failed.
    pub fn failing(&self) -> Vec<&'static str> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counters and bounds.
    pub async fn stats(&self) -> Result<ServerStats, ServerError> {
        self.ask(Command::Stats).await
    }

    /// The metrics registry's handles (counters are live; gauges are set at each scrape).
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// The Prometheus text exposition, with the gauges refreshed from the machine.
    pub async fn metrics_text(&self) -> Result<String, ServerError> {
        self.ask(Command::Metrics).await
    }

    /// Runs `job` on the server machine inside the hub, at the hub's clock, and returns its
    /// result; frames and events it causes are routed as after any input. For code that drives
    /// the machine's sans-IO hooks from outside, e.g. a session store answering a
    /// [`StoreRequest`]. Never call this from the task that consumes [`ServerEvents`] or
    /// [`StoreRequests`] while holding one back: the hub may be waiting for that consumer.
    pub async fn apply<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Machine, Instant) -> T + Send + 'static,
    ) -> Result<T, ServerError> {
        self.ask(|reply| {
            Command::Apply(Box::new(move |machine, now| {
                let _ = reply.send(job(machine, now));
            }))
        })
        .await
    }

    /// All sessions, for persistence.
    pub async fn snapshot(&self) -> Result<ServerSnapshot, ServerError> {
        self.ask(Command::Snapshot).await
    }

    /// Graceful shutdown: every connection gets its queued frames, then a close; new ones are
    /// refused. Resolves, with the final snapshot, once every connection has closed (or after a
    /// grace period for connections that do not).
    pub async fn shutdown(&self) -> Result<ServerSnapshot, ServerError> {
        self.ask(Command::Shutdown).await
    }
}
