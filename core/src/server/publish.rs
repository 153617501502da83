//! The application's commands: publishing tracked frames (stamped, recorded in the session's
//! window, routed to its connection), responses, broadcasts, disconnects and shutdown.

use std::time::Instant;

use serde_json::Value;

use super::conns::{ConnId, Flush};
use super::event::CommandError;
use super::log::Held;
use super::output::shrink;
use super::session::{self, Outcome, SessionId};
use super::store::StoreRequest;
use super::text::FrameText;
use super::Server;
use crate::wire::json::Obj;
use crate::wire::{close, encode};

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
            self.store_requests.push_back(StoreRequest::WriteOutcome {
                session: session.clone(),
                request_id: request_id.to_owned(),
                outcome: outcome.clone(),
            });
        }
        let answer = (&outcome.content, &outcome.outcome_json());
        self.record(now, session, "response", |o| {
            encode::final_response(o, answer, session.as_str(), request_id)
        })
        .ok_or_else(|| CommandError::UnknownSession(session.clone()))
    }

    /// Sends an untracked GatewayEvent-shaped frame (`{"type","data","event_id","timestamp",
    /// "source":"gateway","target":null}`) to every connection bound to a session. Returns how
    /// many got it.
    pub fn broadcast(&mut self, now: Instant, kind: &str, data: &Value) -> usize {
        let event_id = session::uuid4(&mut self.rng);
        let timestamp = self.wall(now);
        let frame: FrameText = encode::broadcast(kind, data, event_id, timestamp).into();
        let max = self.config.max_control_frames.max(1);
        let mut full = Vec::new();
        let sent = self.conns.push_control_to_bound(&frame, max, &mut full);
        for id in full {
            self.slow_consumer(now, id);
        }
        sent
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

    /// Graceful shutdown: every connection gets its queued frames, then close
    /// [`wire::close::GOING_AWAY`](crate::wire::close::GOING_AWAY) `server_shutdown`; new connections are refused. Take a [`snapshot`](Self::snapshot)
    /// afterwards to persist the sessions.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        for id in self.conns.ids() {
            self.close_conn(
                now,
                id,
                close::GOING_AWAY,
                "server_shutdown".into(),
                Flush::All,
            );
        }
    }

    /// Stamps and records a tracked frame built by `build(obj)` after its `type`, then wakes
    /// the owner. `None` if the session does not exist. In store mode the frame goes to the
    /// store for its sequence instead ([`StoreRequest::Append`], cursor reported as 0).
    pub(super) fn record(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        build: impl for<'a> FnOnce(Obj<'a>) -> Obj<'a>,
    ) -> Option<u64> {
        if self.config.external_store {
            let pending = self.unsequenced(now, session, kind, build);
            self.store_requests.push_back(StoreRequest::Append(pending));
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
        // Evicted before the append (the record is held already), so that the append finds
        // what this took from the session's window: an owner not yet sent it is closed here,
        // with the publish, not later by the output.
        self.log_time = self.log_time.max(now);
        self.log.evict(timestamp);
        let (owner, evicted) = s.append(&mut self.log, held, target, &self.config);
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
        // Before the append, as in `record`.
        self.log_time = self.log_time.max(now);
        self.log.evict(wall);
        let (owner, evicted) = s.append(&mut self.log, held, target, &self.config);
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
            self.slow_consumer(now, owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::server::ConnId;

    #[test]
    fn encoded_fields_make_the_same_frames_as_values() {
        use crate::server::{
            CommandError, ConnectInfo, Server, ServerConfig, ServerTransmit, SessionId,
        };
        use crate::wire::EventBatch;
        let t0 = crate::test_origin();
        let config = ServerConfig {
            agents: vec!["echo".into()],
            epoch_at_start: 1_700_000_000.0,
            ..ServerConfig::default()
        };
        let mut s = Server::new(config, t0);
        let conn = ConnId(1);
        s.handle_connected(t0, conn, ConnectInfo::default());
        s.handle_text(t0, conn, r#"{"type":"hello","agent_id":"echo"}"#);
        let mut texts = Vec::new();
        let drain = |s: &mut Server, texts: &mut Vec<String>| {
            while let Some((c, t)) = s.poll_transmit() {
                if let ServerTransmit::Frame(f) = t {
                    s.handle_sent(t0, c, f.len());
                    texts.push(f.to_string());
                }
            }
        };
        drain(&mut s, &mut texts);
        let hello_ok: serde_json::Value = serde_json::from_str(&texts[0]).unwrap();
        let sid = SessionId(hello_ok["session_id"].as_str().unwrap().to_owned());
        texts.clear();

        let fields = [
            ("content", serde_json::json!("a \"line\"")),
            ("n", 1.into()),
        ];
        s.publish(t0, &sid, "message", &fields).unwrap();
        let mut batch = EventBatch::new();
        batch
            .push_json(r#"{"content":"a \"line\"","n":1}"#)
            .unwrap();
        batch.push_json("{}").unwrap();
        let mut encoded = batch.iter();
        assert_eq!(
            s.publish_encoded(t0, &sid, "message", encoded.next().unwrap()),
            Ok(2)
        );
        assert_eq!(
            s.publish_encoded(t0, &sid, "tick", encoded.next().unwrap()),
            Ok(3)
        );
        let empty = batch.iter().nth(1).unwrap();
        assert_eq!(
            s.publish_encoded(t0, &sid, "replay", empty),
            Err(CommandError::ReservedKind("replay".into()))
        );
        let unknown = SessionId("nope".into());
        assert_eq!(
            s.publish_encoded(t0, &unknown, "tick", empty),
            Err(CommandError::UnknownSession(unknown.clone()))
        );
        drain(&mut s, &mut texts);
        assert_eq!(
            texts,
            [
                r#"{"type":"message","content":"a \"line\"","n":1,"cursor":1,"seq":1}"#,
                r#"{"type":"message","content":"a \"line\"","n":1,"cursor":2,"seq":2}"#,
                r#"{"type":"tick","cursor":3,"seq":3}"#,
            ]
        );
    }
}
