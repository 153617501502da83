//! The application's commands: publishing tracked frames (stamped, recorded in the session's
//! window, routed to its connection), responses, broadcasts, disconnects and shutdown.

use std::time::Instant;

use serde_json::Value;

use super::conns::{ConnId, Flush};
use super::event::{CommandError, ServerEvent};
use super::frames::{self, Obj};
use super::log::Held;
use super::output::shrink;
use super::session::{self, Outcome, SessionId};
use super::text::FrameText;
use super::Server;

/// Frame types the application cannot publish: they belong to the protocol itself.
const RESERVED_KINDS: &[&str] = &[
    "hello",
    "hello_ok",
    "hello_error",
    "join",
    "joined",
    "replay",
    "replay_end",
    "snapshot",
    "ping",
    "pong",
    "resync",
    "left",
];

/// Refuses protocol frame types.
fn check_kind(kind: &str) -> Result<(), CommandError> {
    if kind.is_empty() || RESERVED_KINDS.contains(&kind) {
        return Err(CommandError::ReservedKind(kind.to_owned()));
    }
    Ok(())
}

/// Refuses protocol frame types and the fields the server sets itself.
pub(super) fn check_publishable(kind: &str, fields: &[(&str, Value)]) -> Result<(), CommandError> {
    check_kind(kind)?;
    if let Some((k, _)) = fields
        .iter()
        .find(|(k, _)| matches!(*k, "type" | "cursor" | "seq"))
    {
        return Err(CommandError::ReservedField((*k).to_owned()));
    }
    Ok(())
}

impl Server {
    /// Records a tracked frame `{"type":kind, fields..., "cursor":n, "seq":n}` in the session
    /// and sends it to the session's connection if one is attached. A detached session keeps
    /// it for its resume. Returns the cursor.
    pub fn publish(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        fields: &[(&str, Value)],
    ) -> Result<u64, CommandError> {
        check_publishable(kind, fields)?;
        self.record(now, session, kind, |o| {
            fields.iter().fold(o, |o, (k, v)| o.value(k, v))
        })
        .ok_or_else(|| CommandError::UnknownSession(session.clone()))
    }

    /// Like [`publish`](Self::publish) with fields the application has already encoded (an
    /// [`EventBatch`](crate::wire::EventBatch) checked them): their text goes into the frame as
    /// it is, so the frame reads `{"type":kind,<fields>,"cursor":n,"seq":n}`. For streaming
    /// producers: nothing is moved, re-encoded or dropped per field.
    pub fn publish_encoded(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        fields: crate::wire::EncodedFields<'_>,
    ) -> Result<u64, CommandError> {
        check_kind(kind)?;
        self.record(now, session, kind, |o| o.members(fields.as_str()))
            .ok_or_else(|| CommandError::UnknownSession(session.clone()))
    }

    /// Sends the tracked `final` response of a request, with `request_id` echoed, and remembers
    /// the outcome so a resend of the request gets it in its `duplicate`.
    pub fn respond(
        &mut self,
        now: Instant,
        session: &SessionId,
        request_id: &str,
        outcome: Outcome,
    ) -> Result<u64, CommandError> {
        // In store mode the outcome and the `final` go to the store: a local copy evicted or
        // expired while the application worked must not lose the answer.
        match self.sessions.get_mut(session) {
            Some(s) => {
                if let Some(e) = s.dedup.find_mut(request_id) {
                    if e.outcome.is_some() {
                        return Err(CommandError::AlreadyAnswered(request_id.to_owned()));
                    }
                    e.outcome = Some(outcome.clone());
                }
            }
            None if self.config.external_store => {}
            None => return Err(CommandError::UnknownSession(session.clone())),
        }
        if self.config.external_store {
            self.events.push_back(ServerEvent::OutcomeRecorded {
                session: session.clone(),
                request_id: request_id.to_owned(),
                outcome: outcome.clone(),
            });
        }
        self.record(now, session, "response", |o| {
            o.str("status", "final")
                .value("content", &outcome.content)
                .field("outcome", &outcome.outcome_json())
                .str("session_id", session.as_str())
                .str("request_id", request_id)
        })
        .ok_or_else(|| CommandError::UnknownSession(session.clone()))
    }

    /// Sends an untracked GatewayEvent-shaped frame (`{"type","data","event_id","timestamp",
    /// "source":"gateway","target":null}`) to every connection bound to a session. Returns how
    /// many got it.
    pub fn broadcast(&mut self, now: Instant, kind: &str, data: &Value) -> usize {
        let event_id = frames::uuid_string(session::uuid4(&mut self.rng));
        let timestamp = self.wall(now);
        let frame: FrameText = frames::frame(kind, |o| {
            o.field("data", data)
                .str("event_id", &event_id)
                .field("timestamp", &timestamp)
                .str("source", "gateway")
                .raw("target", "null")
                .end()
        })
        .into();
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.bound.is_some() && !c.is_closing())
            .map(|(id, _)| id)
            .collect();
        for id in &ids {
            self.push_control(now, *id, frame.clone());
        }
        ids.len()
    }

    /// Closes a connection gracefully: its queued frames and recorded events go out first,
    /// then `Close{code, reason}`. Its session stays resumable.
    pub fn disconnect(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u16,
        reason: &str,
    ) -> Result<(), CommandError> {
        if !self.conns.contains(conn) {
            return Err(CommandError::UnknownConnection(conn));
        }
        self.close_conn(now, conn, code, reason.into(), Flush::All);
        Ok(())
    }

    /// Graceful shutdown: every connection gets its queued frames, then close 1001
    /// `server_shutdown`; new connections are refused. Take a [`snapshot`](Self::snapshot)
    /// afterwards to persist the sessions.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        for id in self.conns.ids() {
            self.close_conn(now, id, 1001, "server_shutdown".into(), Flush::All);
        }
    }

    /// Stamps and records a tracked frame built by `build(obj)` after its `type`, then wakes
    /// the owner. `None` if the session does not exist. In store mode the frame goes to the
    /// store for its sequence instead ([`ServerEvent::StoreAppend`], cursor reported as 0).
    pub(super) fn record(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        build: impl for<'a> FnOnce(Obj<'a>) -> Obj<'a>,
    ) -> Option<u64> {
        if self.config.external_store {
            let pending = self.unsequenced(now, session, kind, build);
            self.events.push_back(ServerEvent::StoreAppend(pending));
            return Some(0);
        }
        let timestamp = self.wall(now);
        let s = self.sessions.get_mut(session)?;
        // Drawn only for an existing session: the PRNG stream stays what it always was.
        let event_id = session::uuid4(&mut self.rng);
        let n = s.head + 1;
        let target = s.conn();
        // Written once into the reused buffer, then shared by the log and the transmit.
        let scratch = &mut self.output.scratch;
        scratch.clear();
        let obj = Obj::start(scratch, kind);
        let kind_end = obj.len();
        let text = s.window.write(build(obj).tracked(n).as_str());
        shrink(scratch);
        let held = self
            .log
            .push((text, false, kind_end), (event_id, timestamp), timestamp, 1);
        let (owner, evicted) = s.append(&mut self.log, held, target, &self.config);
        self.evict_log(now, timestamp);
        self.after_append(now, owner, evicted);
        Some(n)
    }

    /// Appends log record `held` (held for it, recorded at wall time `wall` while `target` held
    /// the session) to `session` as its next cursor and routes it to the owner, which becomes
    /// a slow consumer if the append evicts what it was not sent yet.
    pub(super) fn append_record(
        &mut self,
        now: Instant,
        wall: f64,
        session: &SessionId,
        held: Held,
        target: Option<ConnId>,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            self.log.release(held.id);
            return;
        };
        let (owner, evicted) = s.append(&mut self.log, held, target, &self.config);
        self.evict_log(now, wall);
        self.after_append(now, owner, evicted);
    }

    /// After an append to a session bound to `owner` that evicted up to `evicted`: the owner
    /// becomes a slow consumer if it was not sent what was evicted, else it has a frame to
    /// send. One lookup of the connection (this runs for every published event).
    pub(super) fn after_append(
        &mut self,
        now: Instant,
        owner: Option<ConnId>,
        evicted: Option<u64>,
    ) {
        let Some(owner) = owner else {
            return;
        };
        if self.conns.new_event(owner, evicted) {
            self.close_conn(now, owner, 1013, "slow_consumer".into(), Flush::Nothing);
        }
    }
}
