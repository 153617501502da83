//! Applying the acceptor's decision: a refused handshake is answered; an accepted one binds
//! its connection to the session it names (a resume, or a takeover of a half-open socket) or
//! to a new one, sets up the replay and queues the reply ahead of anything else.

use std::time::Instant;

use super::auth::Principal;
use super::conns::{Binding, ConnId, Flush};
use super::event::ServerEvent;
use super::handshake::{self, Accepted, Attached, Handshake, Refusal, Refused};
use super::session::{Dedup, SessionId};
use super::sessions::{Attachment, NewSession};
use super::store::StoreRequest;
use super::Server;
use crate::heartbeat::HeartbeatConfig;
use crate::version::V2;
use crate::wire::{close, Policy};

impl Server {
    /// A `hello` or `join`: the acceptor decides, then the session is attached, the replay
    /// set up and the reply queued first. In store mode a handshake naming a session waits for
    /// the store's answer first (`handle_store_session` runs it again).
    pub(super) fn on_handshake(&mut self, now: Instant, conn: ConnId, hs: Handshake) {
        let accepted = match handshake::accept(&hs, &self.config) {
            Ok(a) => a,
            Err(refused) => return self.refuse(conn, refused),
        };
        if self.park_for_store(conn, &hs) {
            return;
        }
        let (sid, resumed) = match self.attach(now, conn, &accepted, &hs) {
            Ok(x) => x,
            Err(why) => return self.refuse(conn, handshake::refuse_attach(&hs, why)),
        };
        let version = accepted.version;
        let since = self.effective_since(&sid, resumed, hs.since(), hs.epoch());
        let info = self.start_replay(
            conn,
            &sid,
            since,
            hs.replays_with_seq(version),
            version >= V2,
        );
        self.note_resume_loss(conn, info.lost);
        let status = hs.reports_status(version).then(|| {
            (
                self.presence_values(&accepted.agent),
                self.health_value(now),
            )
        });
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let session = Attached {
            session_id: sid.as_str(),
            resumed,
            head: s.head,
            epoch: s.epoch,
            replay: info,
            since,
        };
        let reply = hs.reply(
            &accepted,
            session,
            status,
            (self.policy(), self.config.versions),
        );
        // The reply is the first frame after the request: ahead of anything queued (e.g. a
        // ping), in its own order.
        for frame in reply.into_iter().rev() {
            self.conns.push_front_control(conn, frame.into());
        }
    }

    /// A refused handshake: its reply first, no close (the socket stays usable, as on the
    /// reference); the handshake deadline keeps running.
    pub(super) fn refuse(&mut self, conn: ConnId, refused: Refused) {
        if let Some(error) = refused.bad_input {
            self.bad_input(conn, error);
        }
        self.conns.push_front_control(conn, refused.reply.into());
        self.events.push_back(ServerEvent::ConnectionRejected {
            conn,
            code: refused.code,
        });
    }

    /// Binds `conn` to the session `hs` names (resume, takeover) or to a new one; whether it
    /// was resumed.
    fn attach(
        &mut self,
        now: Instant,
        conn: ConnId,
        accepted: &Accepted,
        hs: &Handshake,
    ) -> Result<(SessionId, bool), Refusal> {
        let principal = self
            .conns
            .get(conn)
            .and_then(|c| c.principal.clone())
            .ok_or(Refusal::NotOwner)?;
        let existing = self.resumable(hs.session_id(), &principal, &accepted.agent)?;
        self.release_previous(now, conn, existing.as_ref());
        let caps = hs.capabilities();
        let resumed = existing.is_some();
        let sid = match existing {
            Some(sid) => {
                self.resume(now, conn, &sid, accepted.version, caps);
                sid
            }
            None => self.create(conn, principal, accepted, caps)?,
        };
        let hb = HeartbeatConfig {
            interval: self.config.heartbeat_interval.unwrap_or_default(),
            missed_beats: self.config.missed_beats,
        };
        let binding = Binding {
            session: sid.clone(),
            agent_id: accepted.agent.clone(),
            version: accepted.version,
        };
        self.conns.bind(conn, binding, hb, now);
        if self.config.external_store {
            self.announce_to_store(conn, &sid, resumed);
        }
        self.events.push_back(ServerEvent::PresenceChanged {
            agent_id: accepted.agent.clone(),
        });
        Ok((sid, resumed))
    }

    /// The held session `requested` names, if `principal` may resume it for `agent`.
    fn resumable(
        &self,
        requested: Option<&str>,
        principal: &Principal,
        agent: &str,
    ) -> Result<Option<SessionId>, Refusal> {
        let Some(sid) = requested.map(|r| SessionId(r.to_owned())) else {
            return Ok(None);
        };
        let Some(s) = self.sessions.get(&sid) else {
            return Ok(None);
        };
        if s.owner != *principal {
            return Err(Refusal::NotOwner);
        }
        if s.agent_id != agent {
            return Err(Refusal::AgentMismatch);
        }
        Ok(Some(sid))
    }

    /// A second handshake on a connection releases its previous session (it keeps its TTL
    /// and stays resumable) unless it asks for the same one.
    fn release_previous(&mut self, now: Instant, conn: ConnId, next: Option<&SessionId>) {
        let previous = self
            .conns
            .get(conn)
            .and_then(|c| c.bound.as_ref().map(|b| b.session.clone()));
        let Some(prev) = previous.filter(|p| next != Some(p)) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(conn) {
            c.bound = None;
            c.replay = None;
        }
        self.detach_if_owner(now, &prev, conn);
    }

    /// A connection whose session another one took over (a half-open old socket): closed at
    /// once (`SESSION_TAKEN_OVER`); its later close cannot touch the session.
    pub(super) fn taken_over(&mut self, now: Instant, old: ConnId) {
        self.close_conn(
            now,
            old,
            close::SESSION_TAKEN_OVER,
            "session_taken_over".into(),
            Flush::Nothing,
        );
    }

    /// Makes `conn` the owner of `sid`; a half-open old socket is closed
    /// ([`taken_over`](Self::taken_over)).
    fn resume(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: &SessionId,
        version: u32,
        caps: &[String],
    ) {
        let old_owner = self
            .sessions
            .get(sid)
            .and_then(|s| s.conn())
            .filter(|c| *c != conn);
        self.sessions.attach(sid, conn);
        if let Some(old) = old_owner {
            self.taken_over(now, old);
        }
        if let Some(s) = self.sessions.get_mut(sid) {
            s.version = version;
            s.capabilities = caps.to_vec();
        }
        self.events.push_back(ServerEvent::SessionResumed {
            session: sid.clone(),
            conn,
            taken_over_from: old_owner,
            lost: None, // known once the replay is set up: `note_resume_loss`
        });
    }

    /// A new session for `conn`, with a fresh server-chosen id (never the client's: ids stay
    /// unguessable); at the session cap the longest-detached one makes room.
    fn create(
        &mut self,
        conn: ConnId,
        owner: Principal,
        accepted: &Accepted,
        caps: &[String],
    ) -> Result<SessionId, Refusal> {
        if !self.make_room() {
            return Err(Refusal::Full);
        }
        let mut sid = SessionId::random(&mut self.rng);
        while self.sessions.contains(&sid) {
            sid = SessionId::random(&mut self.rng);
        }
        let session = NewSession {
            id: sid.clone(),
            agent_id: accepted.agent.clone(),
            owner,
            head: 0,
            window: Default::default(),
            dedup: Dedup::default(),
            version: accepted.version,
            capabilities: caps.to_vec(),
            epoch: self.rng.next_u64(),
            epoch_start: 0,
        };
        self.sessions.insert(session, Attachment::Attached(conn));
        self.events.push_back(ServerEvent::SessionCreated {
            session: sid.clone(),
            conn,
            agent_id: accepted.agent.clone(),
        });
        Ok(sid)
    }

    /// Store mode: the session's metadata goes to the store; a new session's client learns
    /// its id only once other nodes can publish to it (`handle_store_written`).
    fn announce_to_store(&mut self, conn: ConnId, sid: &SessionId, resumed: bool) {
        if let Some(stored) = self.stored_session(sid) {
            self.store_requests.push_back(StoreRequest::WriteSession {
                session: Box::new(stored),
                created: !resumed,
            });
        }
        if !resumed {
            if let Some(c) = self.conns.get_mut(conn) {
                c.awaiting_store = true;
            }
        }
    }

    /// The limits `hello_ok` advertises.
    pub(super) fn policy(&self) -> Policy {
        Policy {
            max_payload: Some(self.config.max_frame_bytes as u64),
            max_buffered_bytes: Some(self.config.max_buffered_bytes as u64),
            max_queued_frames: Some(self.config.max_queued_frames as u64),
            heartbeat_ms: Some(
                self.config
                    .heartbeat_interval
                    .unwrap_or_default()
                    .as_millis() as u64,
            ),
            max_attachment_bytes: Some(10_485_760),
            max_attachments: Some(10),
            chunk_bytes: Some(262_144),
            extra: Default::default(),
        }
    }
}
