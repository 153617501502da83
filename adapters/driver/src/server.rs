//! The server loops: one hub task owns the sans-IO [`Machine`]; one task per connection owns
//! its socket. Connection tasks forward what they read to the hub and write what the hub routes
//! to them (`feed` for every queued frame, one `flush`), then report the written frames back so
//! the machine's in-flight window counts real wire bytes.
//!
//! Costs are per batch, not per frame: the hub handles every input that is ready before it
//! routes, routes each connection's frames into that connection's [`queue`](crate::queue) under
//! one lock with one wake-up, and a connection task takes its whole queue at once.

use std::collections::HashMap;
use std::path::Path;
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
    Audience, CommandError, ConnId, ConnectInfo, FrameText, Health, Outcome, PresenceInfo,
    RestoreError, Server as Machine, ServerConfig, ServerEvent, ServerSnapshot, ServerStats,
    ServerTransmit, SessionId, StoreRequest,
};
use tether_core::wire::EventBatch;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;
use tungstenite::Utf8Bytes;

use crate::metrics::ServerMetrics;
use crate::queue::{self, Ledger, Receiver as OutReceiver, Sender as OutSender};
use crate::{BoxFuture, Runtime, WebSocket};

/// Inputs queued for the hub before connection tasks wait (backpressure on readers).
const HUB_QUEUE: usize = 4096;
/// Server events queued for the application before the hub waits for it.
const EVENT_QUEUE: usize = 4096;
/// Frames a connection task writes per wake-up before flushing and yielding.
const WRITE_BATCH: usize = 256;
/// Inputs the hub handles before it routes what they produced (and looks at its timer).
const HUB_BATCH: usize = 256;
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

enum Out {
    /// The machine's frame text (live events share it with the recovery window), with the instant
    /// of the `publish` that produced it when known (for the publish-to-write histogram).
    Frame(FrameText, Option<Instant>),
    Close(u16, String),
}

enum Input {
    // Boxed: every queued input (and every connection task's future) is as big as the
    // largest variant.
    Attach(ConnId, Box<ConnectInfo>, OutSender<Out>),
    Text(ConnId, Utf8Bytes),
    Binary(ConnId, usize),
    Closed(ConnId),
    Command(Box<Command>),
}

enum Command {
    Publish(
        SessionId,
        String,
        Vec<(String, Value)>,
        Reply<Result<u64, CommandError>>,
    ),
    /// No reply for `publish_nowait`.
    PublishMany(
        SessionId,
        String,
        Box<dyn Batch>,
        Option<Reply<Result<u64, CommandError>>>,
    ),
    /// No reply for `publish_to_nowait`.
    PublishTo(
        Audience,
        String,
        Vec<(String, Value)>,
        Option<Reply<Result<usize, CommandError>>>,
    ),
    Respond(SessionId, String, Outcome, Reply<Result<u64, CommandError>>),
    /// No reply for `broadcast_nowait`.
    Broadcast(String, Value, Option<Reply<usize>>),
    Disconnect(ConnId, u16, String),
    Presence(Reply<Vec<PresenceInfo>>),
    Health(Reply<Health>),
    Stats(Reply<ServerStats>),
    Snapshot(Reply<ServerSnapshot>),
    Metrics(Reply<String>),
    Shutdown(Reply<ServerSnapshot>),
    /// Runs a closure on the machine inside the hub (store adapters feed answers this way).
    Apply(MachineJob),
}

/// Work done on the machine inside the hub, at the hub's `now`.
type MachineJob = Box<dyn FnOnce(&mut Machine, Instant) + Send>;

type Reply<T> = oneshot::Sender<T>;

/// A connection task's report: it wrote this many frames of this many bytes in all. Reported
/// through a [`Ledger`], not the hub's input channel: one report per flush of every connection
/// is the busiest input of a fan-out, and the hub takes all of them in one swap.
type Written = (ConnId, usize, usize);

/// Events of a [`Server::publish_many`] call, whatever the type of their field names.
trait Batch: Send {
    /// Publishes the events in order, stopping at the first refusal; returns the last cursor
    /// and how many were published.
    fn publish(
        self: Box<Self>,
        machine: &mut Machine,
        now: Instant,
        session: &SessionId,
        kind: &str,
    ) -> (Result<u64, CommandError>, u64);
}

impl<K: AsRef<str> + Send + 'static> Batch for Vec<Vec<(K, Value)>> {
    fn publish(
        self: Box<Self>,
        machine: &mut Machine,
        now: Instant,
        session: &SessionId,
        kind: &str,
    ) -> (Result<u64, CommandError>, u64) {
        let mut events = *self;
        // One scratch list for the whole batch: the values move into it, the names are
        // borrowed from the batch, which outlives the loop.
        let mut fields: Vec<(&str, Value)> = Vec::new();
        publish_in_order(machine, session, events.iter_mut(), |machine, event| {
            fields.clear();
            for entry in event.iter_mut() {
                let value = std::mem::take(&mut entry.1);
                let entry: &(K, Value) = entry;
                fields.push((entry.0.as_ref(), value));
            }
            machine.publish(now, session, kind, &fields)
        })
    }
}

impl Batch for EventBatch {
    fn publish(
        self: Box<Self>,
        machine: &mut Machine,
        now: Instant,
        session: &SessionId,
        kind: &str,
    ) -> (Result<u64, CommandError>, u64) {
        publish_in_order(machine, session, self.iter(), |machine, fields| {
            machine.publish_encoded(now, session, kind, fields)
        })
    }
}

/// Publishes `events` in order with `publish_one`, stopping at the first refusal; returns the
/// last cursor (the session's head for no event) and how many were published.
fn publish_in_order<E>(
    machine: &mut Machine,
    session: &SessionId,
    events: impl IntoIterator<Item = E>,
    mut publish_one: impl FnMut(&mut Machine, E) -> Result<u64, CommandError>,
) -> (Result<u64, CommandError>, u64) {
    let mut last = machine
        .session_head(session)
        .ok_or_else(|| CommandError::UnknownSession(session.clone()));
    let mut published = 0;
    for event in events {
        last = publish_one(machine, event);
        if last.is_err() {
            break;
        }
        published += 1;
    }
    (last, published)
}

/// How a server runs, beyond its machine's [`ServerConfig`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Prometheus metrics (default on). Off, the hub and the connection tasks count and time
    /// nothing and `GET /metrics` answers 404.
    pub metrics: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { metrics: true }
    }
}

impl ServerOptions {
    /// These options with metrics on or off.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
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
    /// Starts the hub, with the sessions of `snapshot` if given (clients resume them by id).
    pub fn start<R: Runtime>(
        runtime: R,
        config: ServerConfig,
        snapshot: Option<ServerSnapshot>,
    ) -> Result<(Server, ServerEvents), ServerError> {
        Self::start_with(runtime, config, snapshot, ServerOptions::default())
    }

    /// [`Server::start`] with [`ServerOptions`] (e.g. metrics off).
    pub fn start_with<R: Runtime>(
        runtime: R,
        config: ServerConfig,
        snapshot: Option<ServerSnapshot>,
        options: ServerOptions,
    ) -> Result<(Server, ServerEvents), ServerError> {
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
        let metrics = if options.metrics {
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
        let task = connection(Box::new(state), Input::Attach(conn, Box::new(info), out_tx));
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

/// Writes `snapshot` to `path` atomically (temporary file, then rename).
pub fn save_snapshot(path: &Path, snapshot: &ServerSnapshot) -> Result<(), ServerError> {
    let file_err = |source| ServerError::SnapshotFile {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_vec(snapshot).map_err(|source| ServerError::SnapshotFormat {
        path: path.display().to_string(),
        source,
    })?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).map_err(file_err)?;
    std::fs::rename(&tmp, path).map_err(file_err)
}

/// Reads a snapshot written by [`save_snapshot`]; `Ok(None)` if the file does not exist.
pub fn load_snapshot(path: &Path) -> Result<Option<ServerSnapshot>, ServerError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ServerError::SnapshotFormat {
                    path: path.display().to_string(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ServerError::SnapshotFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

struct Hub<R: Runtime> {
    /// Dropped when the hub ends, which resolves [`Server::stopped`].
    _stopped: oneshot::Sender<()>,
    metrics: ServerMetrics,
    /// When each connection still in its handshake was attached (resume latency).
    attached_at: HashMap<ConnId, Instant>,
    /// The instant of the publish being routed right now (publish-to-write latency).
    published_at: Option<Instant>,
    runtime: R,
    machine: Machine,
    inputs: mpsc::Receiver<Input>,
    /// The connection tasks' reports of written frames, and the buffer they are taken into.
    sent: Arc<Ledger<Written>>,
    written: Vec<Written>,
    writers: HashMap<ConnId, OutSender<Out>>,
    /// The machine's transport actions of one routing pass, a connection's run after another.
    transmits: Vec<(ConnId, ServerTransmit)>,
    events: mpsc::Sender<ServerEvent>,
    /// Store mode: where the machine's store requests go.
    store: Option<mpsc::Sender<StoreRequest>>,
    timer: Option<(Instant, BoxFuture<()>)>,
    /// Shutdown requested: reply with the snapshot when every connection is gone (or at the
    /// deadline).
    shutdown: Option<(Instant, Reply<ServerSnapshot>)>,
}

enum HubWake {
    Input(Option<Input>),
    /// Reports of written frames (taken into `written`).
    Written,
    Timer,
}

impl<R: Runtime> Hub<R> {
    async fn run(mut self) {
        loop {
            self.route_transmits();
            self.deliver_events().await;
            if self.shutdown_complete() {
                return;
            }
            self.arm_timer();
            let wake = self.wake().await;
            let now = self.runtime.now();
            // Confirmations first: they may reopen windows for what this batch routes.
            self.confirm_written(now);
            match wake {
                HubWake::Written => {}
                HubWake::Timer => {
                    self.timer = None;
                    self.machine.handle_timeout(now);
                }
                HubWake::Input(None) => return, // every handle and connection is gone
                HubWake::Input(Some(input)) => {
                    self.on_input(now, input);
                    // Everything else already queued is handled before routing, so routing,
                    // event delivery and the timer cost once per batch, not once per input.
                    for _ in 1..HUB_BATCH {
                        match self.inputs.try_recv() {
                            Ok(input) => self.on_input(now, input),
                            Err(e) if e.is_closed() => return,
                            Err(_) => break,
                        }
                    }
                    // A busy hub still honours its deadlines.
                    if self.timer.as_ref().is_some_and(|(d, _)| now >= *d) {
                        self.timer = None;
                        self.machine.handle_timeout(now);
                    }
                }
            }
        }
    }

    fn on_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Attach(conn, info, writer) => {
                self.writers.insert(conn, writer);
                if self.metrics.is_enabled() {
                    self.attached_at.insert(conn, now);
                }
                self.machine.handle_connected(now, conn, *info);
            }
            Input::Text(conn, text) => self.machine.handle_text(now, conn, text.as_str()),
            Input::Binary(conn, len) => self.machine.handle_binary(now, conn, len),
            Input::Closed(conn) => {
                self.writers.remove(&conn);
                self.attached_at.remove(&conn);
                self.machine.handle_closed(now, conn);
            }
            Input::Command(command) => self.on_command(now, *command),
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Publish(_, _, _, reply) if self.machine.config().external_store => {
                let _ = reply.send(Err(CommandError::StoreMode));
            }
            Command::PublishMany(_, _, _, reply) if self.machine.config().external_store => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(CommandError::StoreMode));
                }
            }
            Command::Publish(session, kind, fields, reply) => {
                let fields: Vec<(&str, Value)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                let published = self.machine.publish(now, &session, &kind, &fields);
                if published.is_ok() {
                    self.count_published(now, 1);
                }
                let _ = reply.send(published);
            }
            Command::PublishMany(session, kind, events, reply) => {
                let (last, published) = events.publish(&mut self.machine, now, &session, &kind);
                if published > 0 {
                    self.count_published(now, published);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(last);
                }
            }
            Command::PublishTo(audience, kind, fields, reply) => {
                let fields: Vec<(&str, Value)> = fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                let published = self.machine.publish_to(now, &audience, &kind, &fields);
                if let Ok(sessions) = published {
                    self.count_published(now, sessions as u64);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(published);
                }
            }
            Command::Respond(session, request_id, outcome, reply) => {
                let _ = reply.send(self.machine.respond(now, &session, &request_id, outcome));
            }
            Command::Broadcast(kind, data, reply) => {
                let sent = self.machine.broadcast(now, &kind, &data);
                if let Some(reply) = reply {
                    let _ = reply.send(sent);
                }
            }
            Command::Disconnect(conn, code, reason) => {
                let _ = self.machine.disconnect(now, conn, code, &reason);
            }
            Command::Presence(reply) => {
                let _ = reply.send(self.machine.presence());
            }
            Command::Health(reply) => {
                let _ = reply.send(self.machine.health(now));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.machine.stats());
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.machine.snapshot(now));
            }
            Command::Metrics(reply) => {
                self.metrics.set_stats(&self.machine.stats());
                let _ = reply.send(self.metrics.encode());
            }
            Command::Apply(job) => job(&mut self.machine, now),
            Command::Shutdown(reply) => {
                self.machine.shutdown(now);
                self.shutdown = Some((now + CLOSE_GRACE * 5, reply));
            }
        }
    }

    /// Counts published events and notes when, for the publish-to-write histogram.
    fn count_published(&mut self, now: Instant, events: u64) {
        if self.metrics.is_enabled() {
            self.metrics.events_published.inc_by(events);
            self.published_at = Some(now);
        }
    }

    fn route_transmits(&mut self) {
        let published_at = self.published_at.take();
        // One connection's frames after another (one lookup per connection, not per frame).
        self.machine.poll_transmits(&mut self.transmits);
        let mut routed = self
            .transmits
            .drain(..)
            .map(|(conn, transmit)| {
                let out = match transmit {
                    ServerTransmit::Frame(text) => Out::Frame(text, published_at),
                    ServerTransmit::Close { code, reason } => Out::Close(code, reason),
                };
                (conn, out)
            })
            .peekable();
        while let Some((conn, first)) = routed.next() {
            let run = std::iter::once(first).chain(std::iter::from_fn(|| {
                routed.next_if(|(c, _)| *c == conn).map(|(_, out)| out)
            }));
            match self.writers.get(&conn) {
                Some(writer) => {
                    writer.push_all(run);
                }
                None => run.for_each(drop),
            }
        }
    }

    async fn deliver_events(&mut self) {
        // The store's first: an application event may wait for its store request (a store
        // announces a created session only once its metadata write is queued).
        while let Some(request) = self.machine.poll_store_request() {
            if let Some(store) = self.store.as_mut() {
                let _ = store.send(request).await;
            }
        }
        while let Some(event) = self.machine.poll_event() {
            if self.metrics.is_enabled() {
                self.observe(&event);
            }
            // Nobody listening is fine: the server keeps serving.
            let _ = self.events.send(event).await;
        }
    }

    /// Counts a server event, and times resumes.
    fn observe(&mut self, event: &ServerEvent) {
        self.metrics.observe(event);
        match event {
            ServerEvent::SessionResumed { conn, .. } => {
                if let Some(at) = self.attached_at.remove(conn) {
                    let latency = self.runtime.now().saturating_duration_since(at);
                    self.metrics.resume_latency.observe(latency.as_secs_f64());
                }
            }
            ServerEvent::SessionCreated { conn, .. } => {
                self.attached_at.remove(conn);
            }
            _ => {}
        }
    }

    fn shutdown_complete(&mut self) -> bool {
        let done = match &self.shutdown {
            Some((deadline, _)) => self.writers.is_empty() || self.runtime.now() >= *deadline,
            None => false,
        };
        if done {
            if let Some((_, reply)) = self.shutdown.take() {
                let _ = reply.send(self.machine.snapshot(self.runtime.now()));
            }
        }
        done
    }

    fn arm_timer(&mut self) {
        let deadline = [
            self.machine.poll_timeout(),
            self.shutdown.as_ref().map(|(d, _)| *d),
        ]
        .into_iter()
        .flatten()
        .min();
        match (deadline, &self.timer) {
            (None, _) => self.timer = None,
            (Some(d), Some((armed, _))) if *armed <= d => {}
            (Some(d), _) => self.timer = Some((d, self.runtime.sleep_until(d))),
        }
    }

    /// Feeds the machine every report of written frames taken so far, and those still in the
    /// ledger.
    fn confirm_written(&mut self, now: Instant) {
        if self.written.is_empty() {
            self.sent.take(&mut self.written);
        }
        for (conn, frames, bytes) in self.written.drain(..) {
            self.machine.handle_sent_frames(now, conn, frames, bytes);
        }
    }

    async fn wake(&mut self) -> HubWake {
        future::poll_fn(|cx| {
            if let Poll::Ready(input) = self.inputs.poll_next_unpin(cx) {
                return Poll::Ready(HubWake::Input(input));
            }
            if self.written.is_empty() && self.sent.poll_take(cx, &mut self.written).is_ready() {
                return Poll::Ready(HubWake::Written);
            }
            match self.timer.as_mut() {
                Some((_, sleep)) => sleep.as_mut().poll(cx).map(|()| HubWake::Timer),
                None => Poll::Pending,
            }
        })
        .await
    }
}

enum ConnWake {
    Socket(Option<Result<Message, tungstenite::Error>>),
    Out(Option<Out>),
}

/// Whether a frame is a tracked event (and a replayed one), for the delivery counters. Tracked
/// frames end with the `,"seq":n}` the server appends last, so only the last field is looked at.
fn tracked_kind(text: &[u8]) -> (bool, bool) {
    if text.starts_with(br#"{"type":"replay""#) {
        return (true, true);
    }
    let tracked = text.ends_with(b"}")
        && text
            .iter()
            .rposition(|&b| b == b',')
            .is_some_and(|i| text[i..].starts_with(br#","seq":"#));
    (tracked, false)
}

/// The machine's frame as the text message tungstenite writes: the frame shares the window's
/// chunk (no copy, no allocation), and it is not validated again as UTF-8 (it was built from
/// `str`s). The same frame tungstenite makes of a `Message::Text`.
fn text_message(text: FrameText) -> Message {
    Message::Frame(Frame::message(
        text.into_bytes(),
        OpCode::Data(Data::Text),
        true,
    ))
}

/// What a connection task owns. It lives in a box because an `async fn` keeps its arguments
/// twice in its future (as captured arguments and as locals), and an idle connection is
/// mostly its task.
struct ConnState<R, S> {
    runtime: R,
    conn: ConnId,
    socket: S,
    out: OutReceiver<Out>,
    hub: mpsc::Sender<Input>,
    sent: Arc<Ledger<Written>>,
    metrics: ServerMetrics,
}

/// One connection: announces itself to the hub (`attach`), then reads to the hub and writes
/// what the hub routes here.
async fn connection<R: Runtime, S: WebSocket>(mut state: Box<ConnState<R, S>>, attach: Input) {
    let ConnState {
        runtime,
        conn,
        socket,
        out,
        hub,
        sent,
        metrics,
    } = &mut *state;
    let conn = *conn;
    let counting = metrics.is_enabled();
    if hub.send(attach).await.is_err() {
        return;
    }
    let mut turn = false;
    loop {
        turn = !turn;
        let wake = future::poll_fn(|cx| {
            let socket_first = turn;
            for i in 0..2 {
                let ready = if (i == 0) == socket_first {
                    socket.poll_next_unpin(cx).map(ConnWake::Socket)
                } else {
                    out.poll_next(cx).map(ConnWake::Out)
                };
                if ready.is_ready() {
                    return ready;
                }
            }
            Poll::Pending
        })
        .await;
        match wake {
            ConnWake::Socket(Some(Ok(message))) => {
                let input = match message {
                    Message::Text(text) => Input::Text(conn, text),
                    Message::Binary(data) => Input::Binary(conn, data.len()),
                    Message::Ping(_) => {
                        // tungstenite queued the pong; push it out.
                        if socket.flush().await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(_) => break,
                };
                if hub.send(input).await.is_err() {
                    return;
                }
            }
            ConnWake::Socket(_) => break,
            ConnWake::Out(None) => break,
            ConnWake::Out(Some(first)) => {
                let (mut frames, mut bytes) = (0usize, 0usize);
                let (mut tracked, mut replayed) = (0u64, 0u64);
                let mut oldest_publish: Option<Instant> = None;
                let mut close = None;
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Out::Frame(text, published_at) => {
                            frames += 1;
                            bytes += text.len();
                            if counting {
                                let (is_tracked, is_replay) = tracked_kind(text.as_bytes());
                                tracked += u64::from(is_tracked);
                                replayed += u64::from(is_replay);
                                oldest_publish = oldest_publish.or(published_at);
                            }
                            if socket.feed(text_message(text)).await.is_err() {
                                close = Some((1011, String::new()));
                                break;
                            }
                        }
                        Out::Close(code, reason) => {
                            close = Some((code, reason));
                            break;
                        }
                    }
                    if frames < WRITE_BATCH {
                        next = out.try_next().ok().flatten();
                    }
                }
                let flushed = socket.flush().await.is_ok();
                if flushed && counting {
                    metrics.events_delivered.inc_by(tracked);
                    metrics.events_replayed.inc_by(replayed);
                    if let Some(at) = oldest_publish {
                        let latency = runtime.now().saturating_duration_since(at);
                        metrics.publish_to_write.observe(latency.as_secs_f64());
                    }
                }
                if frames > 0 {
                    sent.push((conn, frames, bytes));
                }
                if let Some((code, reason)) = close {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    let closing = Box::pin(async {
                        if socket.send(Message::Close(Some(frame))).await.is_ok() {
                            let _ = socket.close().await;
                        }
                    });
                    let grace = runtime.sleep_until(runtime.now() + CLOSE_GRACE);
                    let _ = future::select(closing, grace).await;
                    break;
                }
                if !flushed {
                    break;
                }
            }
        }
    }
    let _ = hub.send(Input::Closed(conn)).await;
}
