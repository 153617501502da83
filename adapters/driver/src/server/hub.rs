//! The hub: the one task that owns the server machine. It takes the handles' commands and the
//! connection tasks' input in batches, drives the machine, routes its frames to the connection
//! tasks, sends its events to the application and its store requests to the store, and keeps
//! its timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use futures::future;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tether_core::server::{
    Audience, CommandError, ConnId, ConnectInfo, Health, Outcome, PresenceInfo, Server as Machine,
    ServerEvent, ServerSnapshot, ServerStats, ServerTransmit, SessionId, StoreRequest,
};
use tether_core::wire::EventBatch;
use tungstenite::Utf8Bytes;

use super::connection::Out;
use super::CLOSE_GRACE;
use crate::metrics::ServerMetrics;
use crate::queue::{Ledger, Sender as OutSender};
use crate::{BoxFuture, Runtime};

/// Inputs the hub handles before it routes what they produced (and looks at its timer).
const HUB_BATCH: usize = 256;

pub(super) enum Input {
    // Boxed: every queued input (and every connection task's future) is as big as the
    // largest variant.
    Attach(ConnId, Box<ConnectInfo>, OutSender<Out>),
    Text(ConnId, Utf8Bytes),
    Binary(ConnId, usize),
    Closed(ConnId),
    Command(Box<Command>),
}

pub(super) enum Command {
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
pub(super) type MachineJob = Box<dyn FnOnce(&mut Machine, Instant) + Send>;

pub(super) type Reply<T> = oneshot::Sender<T>;

/// A connection task's report: it wrote this many frames of this many bytes in all. Reported
/// through a [`Ledger`], not the hub's input channel: one report per flush of every connection
/// is the busiest input of a fan-out, and the hub takes all of them in one swap.
pub(super) type Written = (ConnId, usize, usize);

/// Events of a [`Server::publish_many`] call, whatever the type of their field names.
pub(super) trait Batch: Send {
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
pub(super) fn publish_in_order<E>(
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

pub(super) struct Hub<R: Runtime> {
    /// Dropped when the hub ends, which resolves [`Server::stopped`].
    pub(super) _stopped: oneshot::Sender<()>,
    pub(super) metrics: ServerMetrics,
    /// When each connection still in its handshake was attached (resume latency).
    pub(super) attached_at: HashMap<ConnId, Instant>,
    /// The instant of the publish being routed right now (publish-to-write latency).
    pub(super) published_at: Option<Instant>,
    pub(super) runtime: R,
    pub(super) machine: Machine,
    pub(super) inputs: mpsc::Receiver<Input>,
    /// The connection tasks' reports of written frames, and the buffer they are taken into.
    pub(super) sent: Arc<Ledger<Written>>,
    pub(super) written: Vec<Written>,
    pub(super) writers: HashMap<ConnId, OutSender<Out>>,
    /// The machine's transport actions of one routing pass, a connection's run after another.
    pub(super) transmits: Vec<(ConnId, ServerTransmit)>,
    pub(super) events: mpsc::Sender<ServerEvent>,
    /// Store mode: where the machine's store requests go.
    pub(super) store: Option<mpsc::Sender<StoreRequest>>,
    pub(super) timer: Option<(Instant, BoxFuture<()>)>,
    /// Shutdown requested: reply with the snapshot when every connection is gone (or at the
    /// deadline).
    pub(super) shutdown: Option<(Instant, Reply<ServerSnapshot>)>,
}

enum HubWake {
    Input(Option<Input>),
    /// Reports of written frames (taken into `written`).
    Written,
    Timer,
}

impl<R: Runtime> Hub<R> {
    pub(super) async fn run(mut self) {
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
