//! The writer: store writes done in order per session and sent until Redis answers, each
//! append run applied at most once; the bounded append queue they wait in; and the answers
//! handed out (publishers' ranges, requests' verdicts, sessions the store lost).

use std::ops::RangeInclusive;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either};
use futures::StreamExt;
use redis::{RedisError, Value};
use serde_json::Value as Json;
use tether_core::server::{ConnId, Outcome, SessionId, StoredSession, Unsequenced};
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};

use crate::error::StoreError;
use crate::link::{copy, transient};
use crate::node::Inner;
use crate::wire::{self, millis};

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

impl Write {
    pub(crate) fn with_room(mut self, permit: OwnedSemaphorePermit) -> Self {
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

/// Most writes taken in one pass.
const WRITE_BATCH: usize = 256;

/// Most events taken in one pass (several runs).
const WRITE_BATCH_EVENTS: usize = 4 * wire::RUN_MAX;

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
    pub(crate) fn count_queue(&self) {
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
                                let why = || match &reply {
                                    Err(e) => StoreError::Redis(copy(e)),
                                    Ok(v) => StoreError::UnexpectedReply(v.clone()),
                                };
                                let mut machine = false;
                                for (_, w) in waiters {
                                    match w {
                                        Some(w) => {
                                            let _ = w.send(Err(why()));
                                        }
                                        None => machine = true,
                                    }
                                }
                                if machine {
                                    tracing::error!(
                                        "session store: responses of {session} not stored: {}",
                                        why()
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
                    m.handle_store_written(now, session);
                }
                for (conn, session, request_id, content, seen) in admits {
                    m.handle_store_check(now, conn, &session, &request_id, content, seen);
                }
                lost.into_iter()
                    .filter(|s| m.handle_store_lost(now, s))
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
