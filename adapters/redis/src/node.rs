//! The node's loops: the pump (the machine's store requests), the writer (ordered store
//! writes, retried until Redis answers, each applied at most once), the notification reader,
//! the handshake reads, and the health probe.

use std::collections::HashMap;
use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either};
use futures::{SinkExt, StreamExt};
use redis::{PushInfo, PushKind, RedisError, Value};
use serde_json::Value as Json;
use tether_core::server::{
    ConnId, Ingest, Outcome, Recorded, ServerEvent, SessionId, StoreUnavailable, StoredSession,
    Unsequenced,
};
use tether_driver::metrics::StoreMetrics;
use tether_driver::{BoxFuture, Runtime, Server, ServerEvents};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::keys::Keys;
use crate::link::{copy, transient, Link, Pushes};
use crate::subs::Subscriptions;
use crate::wire::{self, Note, Scripts};
use crate::{millis, Limits, StoreError};

/// Appended events' ranges (or the error), for a publisher.
pub(crate) type AppendReply = oneshot::Sender<Result<RangeInclusive<u64>, StoreError>>;

/// Room taken in the append queue, given back when the store has answered.
pub(crate) type Room = Option<OwnedSemaphorePermit>;

/// A store write, done in order by the writer (metadata before appends, `accepted` before
/// `final`) and retried until Redis answers.
pub(crate) enum Write {
    /// A session's metadata (`created`: just created here; subscribe first).
    Meta {
        stored: Box<StoredSession>,
        created: bool,
        room: Room,
    },
    /// Events of one session to number and append, for a publisher (`reply`) or the machine.
    Append {
        events: Vec<Unsequenced>,
        reply: Option<AppendReply>,
        room: Room,
    },
    /// A request's outcome, for duplicates on any node.
    Outcome {
        session: SessionId,
        request_id: String,
        outcome: Outcome,
        room: Room,
    },
    /// A request seen here: has any node seen it before?
    Check {
        conn: ConnId,
        session: SessionId,
        request_id: String,
        content: Json,
        room: Room,
    },
    /// Does this session still exist in the store? (After the metadata writes before it.)
    Verify(SessionId),
}

/// Whether the store answers, and who must know.
pub(crate) struct Health {
    up: AtomicBool,
    /// Wakes the health loop (the store went down, or the connection was replaced).
    wake: Notify,
    /// Wakes publishers waiting for room: with the store down, a full queue is an error.
    down: Notify,
    /// The node is stopping: failures are expected, nothing is logged.
    stopping: AtomicBool,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            up: AtomicBool::new(true),
            wake: Notify::new(),
            down: Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

/// Append run ids: unique per node (its random id) and per run.
pub(crate) struct RunIds {
    node: u64,
    next: AtomicU64,
}

impl RunIds {
    pub(crate) fn new(node: u64) -> Self {
        Self {
            node,
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> u128 {
        (u128::from(self.node) << 64) | u128::from(self.next.fetch_add(1, Ordering::Relaxed))
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

/// Most writes taken in one pass.
const WRITE_BATCH: usize = 256;
/// Most events taken in one pass (several runs).
const WRITE_BATCH_EVENTS: usize = 4 * wire::RUN_MAX;
/// Most notifications ingested in one hub job.
const NOTIFY_BATCH: usize = 512;
/// Attempts of a handshake's read before the client is told to retry.
const READ_ATTEMPTS: u32 = 3;

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

    /// Notes a failed command; returns whether it may succeed later (then the store is
    /// considered down until a command succeeds, with one log line per outage).
    pub(crate) fn failed(&self, e: &RedisError) -> bool {
        let transient = transient(e);
        if transient && self.health.up.swap(false, Ordering::AcqRel) {
            self.server.set_failing("store", true);
            self.metrics.up.set(0);
            if !self.health.stopping.load(Ordering::Acquire) {
                tracing::warn!(
                    "session store unreachable ({e}); retrying every {:?}",
                    self.retry_every
                );
            }
            self.health.down.notify_waiters();
            self.health.wake.notify_one();
        }
        transient
    }

    /// The node is stopping: store failures from now on are expected and not logged.
    pub(crate) fn stopping(&self) {
        self.health.stopping.store(true, Ordering::Release);
    }

    /// Notes a command the store answered.
    pub(crate) fn answered(&self) {
        if !self.health.up.swap(true, Ordering::AcqRel) {
            self.server.set_failing("store", false);
            self.metrics.up.set(1);
            tracing::info!("session store reachable again");
            self.health.wake.notify_one();
        }
    }

    fn count_queue(&self) {
        let used = self.room_max.saturating_sub(self.room.available_permits());
        self.metrics
            .append_queue
            .set(i64::try_from(used).unwrap_or(i64::MAX));
    }

    /// Takes room for `n` events in the append queue: waits while the store answers; with
    /// the store down and the queue full, [`StoreError::Backlogged`].
    pub(crate) async fn reserve(&self, n: usize) -> Result<OwnedSemaphorePermit, StoreError> {
        if n > self.room_max {
            return Err(StoreError::BatchTooLarge {
                events: n,
                max: self.room_max,
            });
        }
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        loop {
            let down = self.health.down.notified();
            futures::pin_mut!(down);
            down.as_mut().enable();
            match self.room.clone().try_acquire_many_owned(n32) {
                Ok(p) => {
                    self.count_queue();
                    return Ok(p);
                }
                Err(TryAcquireError::Closed) => return Err(StoreError::Stopped),
                Err(TryAcquireError::NoPermits) => {}
            }
            if !self.health.is_up() {
                return Err(StoreError::Backlogged {
                    queued: self.room_max,
                });
            }
            let acquire = pin!(self.room.clone().acquire_many_owned(n32));
            if let Either::Left((p, _)) = future::select(acquire, &mut down).await {
                self.count_queue();
                return p.map_err(|_| StoreError::Stopped);
            }
        }
    }

    /// Reads the log after `after` and ingests it (no-op if this node does not hold the
    /// session's connection).
    pub(crate) async fn catch_up(&self, session: &SessionId, after: u64) -> Result<(), RedisError> {
        let events = wire::read_log(&mut self.link.clone(), &self.keys, session, after + 1).await?;
        self.answered();
        if events.is_empty() {
            return Ok(());
        }
        let sid = session.clone();
        let _ = self
            .server
            .apply(move |m, now| {
                if ingest_all(m, now, &sid, events).is_some() {
                    // The log was trimmed past what this node needs: the client's resume
                    // (anywhere) reports the loss instead of waiting here forever.
                    m.release_holder(now, &sid);
                }
            })
            .await;
        Ok(())
    }

    /// After the connection was replaced or the store came back: subscribe again, read what
    /// the held sessions may have missed, and check (through the presence refresh) that they
    /// still exist.
    async fn resync(&self) {
        if let Err(e) = self.subs.resubscribe(&self.link, &self.keys).await {
            self.failed(&e);
            return;
        }
        let Ok(held) = self.server.apply(|m, _| m.held_sessions()).await else {
            return;
        };
        for (session, head) in held {
            if let Err(e) = self.catch_up(&session, head).await {
                self.failed(&e);
                return;
            }
        }
        self.presence_due.notify_one();
    }

    fn unsubscribe_later(self: &Arc<Self>, session: SessionId, generation: u64) {
        let inner = self.clone();
        self.spawn(async move {
            inner
                .subs
                .unsubscribe(&inner.link, &inner.keys, &session, generation)
                .await;
        });
    }
}

/// Passes the application's events on; queues the store's (waiting for room in the append
/// queue, so memory stays bounded) and starts the handshakes' reads.
pub(crate) async fn pump(
    inner: Arc<Inner>,
    mut events: ServerEvents,
    mut app: mpsc::Sender<ServerEvent>,
) {
    // `SessionCreated` of sessions whose metadata is not queued yet: the application learns
    // of a session only after its metadata write, so that its publishes through this node
    // come after it (the machine emits `StoreSession` right after `SessionCreated`).
    let mut created: HashMap<SessionId, ServerEvent> = HashMap::new();
    while let Some(event) = events.next().await {
        let mut announce = None;
        let write = match event {
            ServerEvent::SessionWanted { conn, session } => {
                inner.spawn(provide(inner.clone(), conn, session));
                continue;
            }
            ServerEvent::StoreSession(stored) => {
                announce = created.remove(&stored.session_id);
                Write::Meta {
                    created: announce.is_some(),
                    stored,
                    room: None,
                }
            }
            ServerEvent::StoreAppend(pending) => Write::Append {
                events: vec![pending],
                reply: None,
                room: None,
            },
            ServerEvent::RequestCheck {
                conn,
                session,
                request_id,
                content,
            } => Write::Check {
                conn,
                session,
                request_id,
                content,
                room: None,
            },
            ServerEvent::OutcomeRecorded {
                session,
                request_id,
                outcome,
            } => Write::Outcome {
                session,
                request_id,
                outcome,
                room: None,
            },
            other => {
                match &other {
                    ServerEvent::SessionCreated { session, .. } => {
                        created.insert(session.clone(), other);
                        continue;
                    }
                    ServerEvent::SessionDetached { session } => {
                        if let Some(generation) = inner.subs.generation(session) {
                            inner.unsubscribe_later(session.clone(), generation);
                        }
                    }
                    ServerEvent::PresenceChanged { .. } => inner.presence_due.notify_one(),
                    _ => {}
                }
                // Nobody listening is fine: the node keeps serving.
                let _ = app.send(other).await;
                continue;
            }
        };
        let Ok(room) = inner.room.clone().acquire_owned().await else {
            return;
        };
        inner.count_queue();
        if inner.writes.unbounded_send(write.with_room(room)).is_err() {
            return;
        }
        if let Some(created) = announce {
            let _ = app.send(created).await;
        }
    }
}

impl Write {
    fn with_room(mut self, permit: OwnedSemaphorePermit) -> Self {
        match &mut self {
            Write::Meta { room, .. }
            | Write::Append { room, .. }
            | Write::Outcome { room, .. }
            | Write::Check { room, .. } => *room = Some(permit),
            Write::Verify(_) => {}
        }
        self
    }

    fn session(&self) -> &SessionId {
        match self {
            Write::Meta { stored, .. } => &stored.session_id,
            Write::Append { events, .. } => &events[0].session,
            Write::Outcome { session, .. }
            | Write::Check { session, .. }
            | Write::Verify(session) => session,
        }
    }
}

/// One command of a pass, and what to do with its reply.
enum Op {
    Meta(Box<StoredSession>, bool),
    /// A run: consecutive events of one session, numbered by one script call under `id`;
    /// `waiters` get their slices (event counts, in order).
    Run {
        id: u128,
        events: Vec<Unsequenced>,
        waiters: Vec<(usize, Option<AppendReply>)>,
    },
    Outcome(String, String),
    Check {
        conn: ConnId,
        request_id: String,
        content: Json,
        token: String,
    },
    Verify,
}

/// How long a stopping node keeps trying to store the writes still queued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Does the writes in order, retrying what failed transiently until the store answers. When
/// the server stops, the writes already queued (e.g. its last responses) are still stored,
/// for up to [`SHUTDOWN_GRACE`].
pub(crate) async fn writer(inner: Arc<Inner>, mut writes: mpsc::UnboundedReceiver<Write>) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    // Resolves at the end of the grace period, once the server has stopped.
    let grace = async {
        stopped.await;
        inner.sleep(SHUTDOWN_GRACE).await;
    };
    futures::pin_mut!(grace);
    let mut draining = false;
    let mut tokens = 0u64;
    loop {
        let first = if draining {
            match writes.try_recv() {
                Ok(w) => w,
                Err(_) => return,
            }
        } else {
            match future::select(writes.next(), pin!(inner.server.stopped())).await {
                Either::Left((Some(w), _)) => w,
                Either::Left((None, _)) => return,
                Either::Right(_) => {
                    draining = true;
                    continue;
                }
            }
        };
        let mut batch = vec![first];
        let mut events = 0;
        while batch.len() < WRITE_BATCH && events < WRITE_BATCH_EVENTS {
            match writes.try_recv() {
                Ok(w) => {
                    if let Write::Append { events: e, .. } = &w {
                        events += e.len();
                    }
                    batch.push(w);
                }
                _ => break,
            }
        }
        // Per session, in order (sessions are independent of each other).
        let mut sessions: Vec<(SessionId, Vec<Op>)> = Vec::new();
        let mut rooms = Vec::new();
        for w in batch {
            let session = w.session().clone();
            let at = match sessions.iter().position(|(s, _)| *s == session) {
                Some(i) => i,
                None => {
                    sessions.push((session, Vec::new()));
                    sessions.len() - 1
                }
            };
            let ops = &mut sessions[at].1;
            let op = match w {
                Write::Meta {
                    stored,
                    created,
                    room,
                } => {
                    rooms.push(room);
                    Op::Meta(stored, created)
                }
                Write::Append {
                    events,
                    reply,
                    room,
                } => {
                    rooms.push(room);
                    if let Some(Op::Run {
                        events: run,
                        waiters,
                        ..
                    }) = ops.last_mut()
                    {
                        if run.len() + events.len() <= wire::RUN_MAX {
                            waiters.push((events.len(), reply));
                            run.extend(events);
                            continue;
                        }
                    }
                    Op::Run {
                        id: inner.runs.next(),
                        waiters: vec![(events.len(), reply)],
                        events,
                    }
                }
                Write::Outcome {
                    request_id,
                    outcome,
                    room,
                    ..
                } => {
                    rooms.push(room);
                    let text = serde_json::to_string(&outcome).unwrap_or_default();
                    Op::Outcome(request_id, text)
                }
                Write::Check {
                    conn,
                    request_id,
                    content,
                    room,
                    ..
                } => {
                    rooms.push(room);
                    tokens += 1;
                    Op::Check {
                        conn,
                        request_id,
                        content,
                        // Not JSON: never mistaken for an outcome.
                        token: format!("?{}:{tokens}", inner.keys.node()),
                    }
                }
                Write::Verify(_) => Op::Verify,
            };
            ops.push(op);
        }
        // A new session's notifications are subscribed before its metadata exists.
        for (session, ops) in &sessions {
            if ops.iter().any(|op| matches!(op, Op::Meta(_, true))) {
                if let Err(e) = inner
                    .subs
                    .subscribe(&inner.link, &inner.keys, session, false)
                    .await
                {
                    inner.failed(&e);
                }
            }
        }
        let Some(replies) = inner.send(&sessions, &mut grace).await else {
            let left = sessions.iter().map(|(_, ops)| ops.len()).sum::<usize>();
            tracing::error!(
                "session store: stopped with {left} writes Redis did not take (unreachable)"
            );
            return;
        };
        drop(rooms);
        inner.count_queue();
        inner.settle(sessions, replies).await;
    }
}

impl Inner {
    fn command(&self, session: &SessionId, op: &Op, by_text: bool) -> redis::Cmd {
        match op {
            Op::Meta(stored, created) => wire::meta_command(
                &self.scripts,
                by_text,
                &self.keys,
                &self.limits,
                stored,
                *created,
            ),
            Op::Run { id, events, .. } => {
                let run: Vec<&Unsequenced> = events.iter().collect();
                wire::append_command(&self.scripts, by_text, &self.keys, &self.limits, *id, &run)
            }
            Op::Outcome(request_id, text) => {
                let mut c = redis::cmd("SET");
                c.arg(self.keys.request(session, request_id))
                    .arg(text)
                    .arg("PX")
                    .arg(millis(self.limits.dedup_ttl));
                c
            }
            Op::Check {
                request_id, token, ..
            } => {
                // Claims the id and returns what was there, in one step (Redis ≥ 7.0); a
                // retry finds its own claim.
                let mut c = redis::cmd("SET");
                c.arg(self.keys.request(session, request_id))
                    .arg(token)
                    .arg("NX")
                    .arg("GET")
                    .arg("PX")
                    .arg(millis(self.limits.dedup_ttl));
                c
            }
            Op::Verify => {
                let mut c = redis::cmd("EXISTS");
                c.arg(self.keys.meta(session));
                c
            }
        }
    }

    /// Sends every op until each has an answer that will not change by sending it again;
    /// `None` if the node stopped meanwhile.
    async fn send(
        &self,
        sessions: &[(SessionId, Vec<Op>)],
        stopped: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Option<Vec<Vec<Result<Value, RedisError>>>> {
        let mut replies: Vec<Vec<Option<Result<Value, RedisError>>>> = sessions
            .iter()
            .map(|(_, ops)| ops.iter().map(|_| None).collect())
            .collect();
        let mut by_text = false;
        loop {
            // Per session, the ops from its first unanswered one on (a session's order holds).
            let pending: Vec<(usize, usize)> = replies
                .iter()
                .enumerate()
                .filter_map(|(s, r)| r.iter().position(Option::is_none).map(|from| (s, from)))
                .collect();
            if pending.is_empty() {
                break;
            }
            let groups: Vec<Vec<redis::Cmd>> = pending
                .iter()
                .map(|&(s, from)| {
                    let (session, ops) = &sessions[s];
                    ops[from..]
                        .iter()
                        .map(|op| self.command(session, op, by_text))
                        .collect()
                })
                .collect();
            let results = self.link.exec(&groups).await;
            let mut retry = None;
            let mut unknown_script = false;
            for (&(s, from), result) in pending.iter().zip(results) {
                let values: Vec<Result<Value, RedisError>> = match result {
                    Ok(values) => values.into_iter().map(Value::extract_error).collect(),
                    Err(e) => (from..replies[s].len()).map(|_| Err(copy(&e))).collect(),
                };
                for (k, value) in values.into_iter().enumerate() {
                    match value {
                        Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                            unknown_script = true;
                            break;
                        }
                        Err(e) if transient(&e) => {
                            retry = Some(e);
                            break;
                        }
                        answer => replies[s][from + k] = Some(answer),
                    }
                }
            }
            by_text = unknown_script;
            match retry {
                None => self.answered(),
                Some(e) => {
                    self.failed(&e);
                    let unanswered = replies.iter().flatten().filter(|r| r.is_none()).count();
                    self.metrics.retries.inc_by(unanswered as u64);
                    let pause = self.sleep(self.retry_every);
                    if let Either::Right(_) = future::select(pause, &mut *stopped).await {
                        return None;
                    }
                }
            }
        }
        Some(
            replies
                .into_iter()
                .map(|r| r.into_iter().flatten().collect())
                .collect(),
        )
    }

    /// Hands out the answers: publishers' ranges, requests' verdicts, and sessions the store
    /// lost (their holders' clients are told at once).
    async fn settle(
        &self,
        sessions: Vec<(SessionId, Vec<Op>)>,
        replies: Vec<Vec<Result<Value, RedisError>>>,
    ) {
        let mut lost: Vec<SessionId> = Vec::new();
        let mut stored: Vec<SessionId> = Vec::new();
        let mut admits = Vec::new();
        for ((session, ops), replies) in sessions.into_iter().zip(replies) {
            for (op, reply) in ops.into_iter().zip(replies) {
                let number = |r: &Result<Value, RedisError>| match r {
                    Ok(Value::Int(n)) => Some(*n),
                    _ => None,
                };
                match op {
                    Op::Meta(..) | Op::Verify => match (number(&reply), reply) {
                        (Some(0), _) => lost.push(session.clone()),
                        (_, Err(e)) => tracing::error!("session store: {session}: {e}"),
                        _ => {
                            if matches!(op, Op::Meta(_, true)) {
                                stored.push(session.clone());
                            }
                        }
                    },
                    Op::Outcome(..) => {
                        if let Err(e) = reply {
                            tracing::error!("session store: outcome in {session}: {e}");
                        }
                    }
                    Op::Run { waiters, .. } => {
                        let total: usize = waiters.iter().map(|(n, _)| n).sum();
                        let last = number(&reply).and_then(|n| u64::try_from(n).ok());
                        match (last, reply) {
                            (Some(0), _) => {
                                lost.push(session.clone());
                                for (_, w) in waiters.into_iter() {
                                    if let Some(w) = w {
                                        let _ = w
                                            .send(Err(StoreError::UnknownSession(session.clone())));
                                    }
                                }
                            }
                            (Some(last), _) => {
                                let mut next = (last + 1).saturating_sub(total as u64);
                                for (n, w) in waiters {
                                    let range = next..=next + n as u64 - 1;
                                    next += n as u64;
                                    if let Some(w) = w {
                                        let _ = w.send(Ok(range));
                                    }
                                }
                            }
                            (None, reply) => {
                                let why = match reply {
                                    Err(e) => e,
                                    Ok(v) => RedisError::from((
                                        redis::ErrorKind::TypeError,
                                        "unexpected append reply",
                                        format!("{v:?}"),
                                    )),
                                };
                                let mut machine = false;
                                for (_, w) in waiters {
                                    match w {
                                        Some(w) => {
                                            let _ = w.send(Err(StoreError::Redis(copy(&why))));
                                        }
                                        None => machine = true,
                                    }
                                }
                                if machine {
                                    tracing::error!(
                                        "session store: responses of {session} not stored: {why}"
                                    );
                                }
                            }
                        }
                    }
                    Op::Check {
                        conn,
                        request_id,
                        content,
                        token,
                    } => {
                        let previous: Option<String> = match reply {
                            Ok(Value::Nil) => None,
                            Ok(v) => redis::from_owned_redis_value(v).ok(),
                            Err(e) => {
                                // The store cannot say: hand it out (the local dedup window
                                // still guards resends here; losing a request is worse than a
                                // rare double delivery).
                                tracing::error!("session store: request check: {e}");
                                None
                            }
                        };
                        let seen = match previous {
                            None => None,
                            Some(p) if p == token => None, // our own claim, sent again
                            Some(p) => Some(serde_json::from_str::<Outcome>(&p).ok()),
                        };
                        admits.push((conn, session.clone(), request_id, content, seen));
                    }
                }
            }
        }
        if lost.is_empty() && admits.is_empty() && stored.is_empty() {
            return;
        }
        lost.dedup();
        let held_lost = self
            .server
            .apply(move |m, now| {
                for session in &stored {
                    m.session_stored(now, session);
                }
                for (conn, session, request_id, content, seen) in admits {
                    m.admit_request(now, conn, &session, &request_id, content, seen);
                }
                lost.into_iter()
                    .filter(|s| m.session_lost(now, s))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
        for session in held_lost {
            self.metrics.sessions_lost.inc();
            tracing::warn!(
                "session store: session {session} is gone from Redis (flushed, evicted or \
                 restarted empty); its client was told (close 4010 session_lost)"
            );
        }
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
            Ok(Ingest::Gap { expected }) => return Some(expected),
            Ok(Ingest::NotHeld) => return None,
            Ok(_) => {}
            Err(err) => tracing::error!("session store: {err}"),
        }
    }
    None
}

/// Answers a handshake that names a session: subscribes to its notifications, reads it
/// (retrying a dropped connection), hands the answer to the machine, then reads what was
/// appended meanwhile.
async fn provide(inner: Arc<Inner>, conn: ConnId, session: SessionId) {
    if !Keys::storable(&session) {
        let _ = inner
            .server
            .apply(move |m, now| m.provide_session(now, conn, Ok(None)))
            .await;
        return;
    }
    let subscribed = inner
        .subs
        .subscribe(&inner.link, &inner.keys, &session, true)
        .await;
    if let Err(e) = subscribed {
        inner.failed(&e);
    }
    let mut attempt = 0;
    let read = loop {
        attempt += 1;
        match wire::read_session(&mut inner.link.clone(), &inner.keys, &session).await {
            Ok(read) => {
                inner.answered();
                break Ok(read);
            }
            Err(e) if inner.failed(&e) && attempt < READ_ATTEMPTS => {
                inner.sleep(inner.retry_every).await;
            }
            Err(e) => break Err(StoreUnavailable(e.to_string())),
        }
    };
    let head = read.as_ref().ok().and_then(|s| s.as_ref().map(|s| s.head));
    let sid = session.clone();
    let held = inner
        .server
        .apply(move |m, now| {
            m.provide_session(now, conn, read);
            m.holds(&sid)
        })
        .await
        .unwrap_or(false);
    let generation = inner.subs.unpin(&session, held);
    match (held, head) {
        (true, Some(head)) => {
            // Events appended after the read whose notification came before the attach.
            if let Err(e) = inner.catch_up(&session, head).await {
                inner.failed(&e);
            }
        }
        (false, _) => {
            if let Some(generation) = generation {
                inner.unsubscribe_later(session, generation);
            }
        }
        _ => {}
    }
}

/// Ingests notifications; a connection replaced wakes the health loop, which resubscribes
/// and catches the held sessions up.
pub(crate) async fn subscriber(inner: Arc<Inner>, mut pushes: Pushes) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    loop {
        let first = match future::select(pushes.next(), &mut stopped).await {
            Either::Left((Some(push), _)) => push,
            Either::Left((None, _)) | Either::Right(_) => return,
        };
        let mut notes: Vec<(SessionId, Vec<Recorded>, Option<u64>)> = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(push) = next.take() {
            taken += 1;
            match note_of(&inner, push) {
                Some(Note::Events(session, events)) => {
                    let generation = inner.subs.generation(&session);
                    match notes.iter_mut().find(|(s, _, _)| *s == session) {
                        Some((_, all, _)) => all.extend(events),
                        None => notes.push((session, events, generation)),
                    }
                }
                Some(Note::Gone(session)) => {
                    let _ = inner.writes.unbounded_send(Write::Verify(session));
                }
                None => {}
            }
            if taken < NOTIFY_BATCH {
                next = futures::FutureExt::now_or_never(pushes.next()).flatten();
            }
        }
        if notes.is_empty() {
            continue;
        }
        let outcome = inner
            .server
            .apply(move |m, now| {
                let mut gaps: Vec<(SessionId, u64)> = Vec::new();
                let mut not_held: Vec<(SessionId, Option<u64>)> = Vec::new();
                for (session, events, generation) in notes {
                    for recorded in events {
                        match m.ingest(now, &session, recorded) {
                            Ok(Ingest::Gap { expected }) => {
                                // The catch-up read below covers the rest.
                                gaps.push((session.clone(), expected));
                                break;
                            }
                            Ok(Ingest::NotHeld) => {
                                not_held.push((session.clone(), generation));
                                break;
                            }
                            Ok(_) => {}
                            Err(err) => tracing::error!("session store: {err}"),
                        }
                    }
                }
                (gaps, not_held)
            })
            .await;
        let Ok((gaps, not_held)) = outcome else {
            return; // the server stopped
        };
        for (session, generation) in not_held {
            if let Some(generation) = generation {
                inner.unsubscribe_later(session, generation);
            }
        }
        for (session, expected) in gaps {
            if let Err(e) = inner.catch_up(&session, expected - 1).await {
                inner.failed(&e);
            }
        }
    }
}

/// What a push says: a notification (counted), or the library's notice that a connection
/// dropped (the health loop then resynchronises).
fn note_of(inner: &Inner, push: PushInfo) -> Option<Note> {
    match push.kind {
        PushKind::Disconnection => {
            inner.health.wake.notify_one();
            None
        }
        PushKind::SMessage | PushKind::Message => {
            inner.metrics.notifications.inc();
            let mut data = push.data.into_iter();
            let channel: Vec<u8> = redis::from_owned_redis_value(data.next()?).ok()?;
            inner.keys.session_of_channel(&channel)?;
            let payload: Vec<u8> = redis::from_owned_redis_value(data.next()?).ok()?;
            wire::parse_notification(&payload)
        }
        _ => None,
    }
}

/// Probes the store while it is down (so `/ready` recovers even when the node is idle), and
/// resynchronises once it is back or after a connection was replaced.
pub(crate) async fn health_loop(inner: Arc<Inner>) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    loop {
        if let Either::Right(_) =
            future::select(pin!(inner.health.wake.notified()), &mut stopped).await
        {
            break;
        }
        while !inner.health.is_up() {
            let pause = inner.sleep(inner.retry_every);
            if let Either::Right(_) = future::select(pause, &mut stopped).await {
                inner.stopping();
                return;
            }
            let ping: Result<String, _> = redis::cmd("PING")
                .query_async(&mut inner.link.clone())
                .await;
            match ping {
                Ok(_) => inner.answered(),
                Err(e) => {
                    inner.failed(&e);
                }
            }
        }
        inner.resync().await;
    }
    inner.stopping();
}
