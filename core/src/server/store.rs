//! Store mode: sessions held in an external store shared by several gateway nodes.
//!
//! With [`ServerConfig::external_store`](super::ServerConfig::external_store) set, the machine
//! no longer assumes it holds every session, nor that it alone numbers a session's events. It
//! asks, sans-IO, on a channel of its own ([`Server::poll_store_request`]; the application's
//! [`ServerEvent`](super::ServerEvent)s carry no store traffic), and is fed the answers through the `handle_store_*`
//! inputs:
//!
//! | the machine asks | the store adapter does | and answers with |
//! |---|---|---|
//! | [`StoreRequest::ReadSession`] (a handshake names a session) | reads the session's metadata and retained events | [`Server::handle_store_session`] |
//! | [`StoreRequest::WriteSession`] (a session was created or attached) | writes its metadata (never its head) | [`Server::handle_store_written`] for a created one (its `hello_ok` waits) |
//! | [`StoreRequest::Append`] (a tracked frame: publish, `accepted`, `final`, `duplicate`) | assigns the next sequence atomically and appends | [`Server::handle_store_event`] on the node holding the session's connection |
//! | [`StoreRequest::CheckRequest`] (a `message` with a request id) | marks the id seen, or reads the outcome already stored | [`Server::handle_store_check`] |
//! | [`StoreRequest::WriteOutcome`] (the application answered) | stores the outcome for later duplicates | — |
//!
//! Sequences stay gap-free per session across nodes because only the store assigns them;
//! [`Server::handle_store_event`] appends strictly in order, drops what it already has and
//! reports a gap (the adapter reads the missing range from the store and hands it in first). A
//! node holding a detached copy of a session never trusts it: every resume asks the store.
//!
//! ```
//! use std::time::Instant;
//! use tether_core::server::{
//!     ConnId, ConnectInfo, Ingest, Server, ServerConfig, ServerEvent, StoreRequest,
//! };
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let config = ServerConfig { external_store: true, ..ServerConfig::default() };
//! let mut node = Server::new(config, now);
//! node.handle_connected(now, ConnId(1), ConnectInfo::default());
//! node.handle_text(now, ConnId(1), r#"{"type":"hello","agent_id":"a","protocol_min":1,"protocol_max":2}"#);
//! let session = loop {
//!     match node.poll_event() {
//!         Some(ServerEvent::SessionCreated { session, .. }) => break session,
//!         Some(_) => {}
//!         None => unreachable!("a new session is created without asking the store"),
//!     }
//! };
//! // Publishing asks the store for a sequence instead of assigning one.
//! node.publish(now, &session, "message", &[("content", "hi".into())]).unwrap();
//! let append = std::iter::from_fn(|| node.poll_store_request())
//!     .find_map(|r| match r { StoreRequest::Append(a) => Some(a), _ => None })
//!     .unwrap();
//! // The store numbered it 1; the node holding the connection hands it in and sends it.
//! let numbered = append.into_recorded(1);
//! assert_eq!(node.handle_store_event(now, &session, numbered), Ok(Ingest::Appended));
//! ```

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Principal;
use super::conns::ConnId;
use super::conns::Flush;
use super::handshake::{self, Handshake};
use super::session::{Dedup, Outcome, SessionId};
use super::sessions::{Attachment, NewSession};
use super::window::{Recorded, Window};
use super::Server;
use crate::wire::json::Obj;
use crate::wire::{close, ConnectErrorCode};

/// Longest session id looked up in the store (ours are 36-character uuids); longer ones are
/// treated as unknown without a lookup.
pub(crate) const MAX_STORED_ID: usize = 128;

/// What the machine asks of its session store (store mode only), polled with
/// [`Server::poll_store_request`] after every input, like the other outputs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StoreRequest {
    /// A handshake names this session: read it (metadata and retained events) and answer with
    /// [`Server::handle_store_session`] (the handshake waits).
    ReadSession {
        /// The connection whose handshake waits.
        conn: ConnId,
        /// The session id it asked for (unverified client input).
        session: SessionId,
    },
    /// A session was created (`created`) or attached here: write its metadata (agent, owner,
    /// epoch, version), never its head, which only the store advances. For a created one,
    /// answer with [`Server::handle_store_written`] once written (its `hello_ok` waits).
    WriteSession {
        /// The metadata (no events).
        session: Box<StoredSession>,
        /// Created by this handshake (rather than resumed).
        created: bool,
    },
    /// A tracked frame to number and append; the node holding the session's connection then
    /// hands it in with [`Server::handle_store_event`].
    Append(Unsequenced),
    /// A request arrived: has any node seen its id before? Answer with
    /// [`Server::handle_store_check`].
    CheckRequest {
        /// The connection it came on.
        conn: ConnId,
        /// The session.
        session: SessionId,
        /// The client's `request_id`, or a generated one.
        request_id: String,
        /// The `content` as sent (never empty).
        content: Value,
    },
    /// The application answered a request: store the outcome so a resend on any node gets it
    /// in its `duplicate`.
    WriteOutcome {
        /// The session.
        session: SessionId,
        /// The request.
        request_id: String,
        /// The answer.
        outcome: Outcome,
    },
}

/// A session as the store holds it: metadata plus the retained events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Its id.
    pub session_id: SessionId,
    /// Its agent.
    pub agent_id: String,
    /// The principal that created it (only it may resume).
    pub owner: Principal,
    /// Last assigned sequence (0 = none yet).
    pub head: u64,
    /// The line of history (see `hello_ok.epoch`); stable for the session's life in a store.
    pub epoch: u64,
    /// The head when the epoch began (0 for a session born in the store).
    pub epoch_start: u64,
    /// Last negotiated protocol version.
    pub protocol_version: u32,
    /// Last offered capabilities.
    pub capabilities: Vec<String>,
    /// Retained events, oldest first, contiguous, ending at `head` (empty in
    /// [`StoreRequest::WriteSession`]).
    pub events: Vec<Recorded>,
}

/// A tracked frame waiting for its sequence from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsequenced {
    /// The session it belongs to.
    pub session: SessionId,
    /// Its `type`.
    pub kind: String,
    /// The frame text before its sequence: `{"type":<kind>,...` without `,"cursor":n,"seq":n}`.
    pub body: String,
    /// Its event id (a uuid on the wire).
    pub event_id: u128,
    /// Record time, epoch seconds.
    pub timestamp: f64,
}

impl Unsequenced {
    /// The frame as numbered `cursor` by the store, ready for [`Server::handle_store_event`].
    pub fn into_recorded(self, cursor: u64) -> Recorded {
        let mut frame = self.body;
        Obj::resume(&mut frame).tracked(cursor);
        Recorded {
            cursor,
            kind: self.kind,
            frame,
            event_id: self.event_id,
            timestamp: self.timestamp,
            target: None,
        }
    }
}

/// What [`Server::handle_store_event`] did with a sequenced frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// Appended and routed to the session's connection.
    Appended,
    /// Already held (cursor ≤ head): dropped.
    Duplicate,
    /// Cursors `expected..cursor` are missing: read them from the store and ingest them first.
    /// If the store no longer holds them (trimmed), call
    /// [`Server::handle_store_gap`]: the client reconnects, and its resume reports the loss.
    Gap {
        /// The next cursor this node needs.
        expected: u64,
    },
    /// No connection of this node holds the session: nothing to do (its next resume reads the
    /// store).
    NotHeld,
}

/// A sequenced frame [`Server::handle_store_event`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The frame does not start with `{"type":<kind>` or has cursor 0: not written by a tether
    /// node.
    #[error("malformed stored frame at cursor {0}")]
    Malformed(u64),
}

/// Why the store could not answer a [`StoreRequest::ReadSession`]: the store's own error, kept
/// as the source for the adapter's logs. The client is told only that the store is unavailable
/// (`store_unavailable`, transient: it retries).
#[derive(Debug, Clone, thiserror::Error)]
#[error("session store unavailable")]
pub struct StoreUnavailable(#[source] pub Arc<dyn std::error::Error + Send + Sync>);

impl StoreUnavailable {
    /// The store failed with `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }
}

impl Server {
    /// Whether a handshake naming `requested` must first ask the store (store mode, an id of a
    /// plausible length, not already answered for this connection). Parks the handshake and
    /// asks [`StoreRequest::ReadSession`] when so. A second handshake needing the store while
    /// one is parked is refused (transient `handshake_in_progress`): answers name no session,
    /// so the first answer would otherwise complete the second handshake unasked.
    pub(super) fn park_for_store(&mut self, conn: ConnId, hs: &Handshake) -> bool {
        if !self.config.external_store {
            return false;
        }
        let requested = hs.session_id();
        let Some(id) = requested.filter(|id| !id.is_empty() && id.len() <= MAX_STORED_ID) else {
            return false;
        };
        let Some(c) = self.conns.get_mut(conn) else {
            return false;
        };
        if std::mem::take(&mut c.store_answered) {
            return false;
        }
        if c.parked.is_some() {
            let message = "A handshake on this connection is already waiting for the session store";
            let refused =
                handshake::refuse_for_now(hs, ConnectErrorCode::HandshakeInProgress, message);
            self.refuse(conn, refused);
            return true;
        }
        c.parked = Some(Box::new(hs.clone()));
        self.store_requests.push_back(StoreRequest::ReadSession {
            conn,
            session: SessionId(id.to_owned()),
        });
        true
    }

    /// The store's answer to [`StoreRequest::ReadSession`]: the session (installed here, newer
    /// than any local copy), `None` (unknown: the handshake gets a new session), or an error (the
    /// client is told to retry: `hello_error` `store_unavailable`, transient). The parked
    /// handshake then completes as usual. Answers for connections that closed meanwhile, or
    /// that asked for nothing, are ignored.
    pub fn handle_store_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        answer: Result<Option<StoredSession>, StoreUnavailable>,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        let Some(parked) = c.parked.take().map(|p| *p) else {
            return;
        };
        match answer {
            Err(e) => {
                let refused = handshake::refuse_for_now(
                    &parked,
                    ConnectErrorCode::StoreUnavailable,
                    &e.to_string(),
                );
                self.refuse(conn, refused);
                return;
            }
            Ok(Some(stored)) => self.install(now, stored),
            Ok(None) => self.forget_local_copy(now, conn, &parked),
        }
        if let Some(c) = self.conns.get_mut(conn) {
            c.store_answered = true;
        }
        self.on_handshake(now, conn, parked);
    }

    /// The store does not know the session `parked` asks for (flushed, expired there): a local
    /// copy is not resumed either. Events the store numbered after it would be lost without a
    /// word and their numbers handed out again; a new session tells the client instead. A
    /// connection of this node still bound to the copy loses it as in a takeover.
    fn forget_local_copy(&mut self, now: Instant, conn: ConnId, parked: &Handshake) {
        let requested = parked.session_id();
        let Some(sid) = requested.map(|id| SessionId(id.to_owned())) else {
            return;
        };
        let holder = self.sessions.get(&sid).and_then(|s| s.conn());
        if let Some(old) = holder.filter(|old| *old != conn) {
            self.taken_over(now, old);
        }
        self.expire(&sid);
    }

    /// Makes `stored` the local copy of its session, unless the local one is already newer
    /// (it ingested events after the store was read).
    fn install(&mut self, now: Instant, stored: StoredSession) {
        let (max_events, max_bytes) = (
            self.config.recovery_session_events,
            self.config.recovery_session_bytes,
        );
        // Kept from now on by this node's clock: the store's timestamps are other nodes'.
        let wall = self.wall(now);
        let mut window = Window::from_recorded(
            &mut self.log,
            stored.events,
            (stored.head, wall),
            max_events,
            max_bytes,
        );
        self.evict_log(now, wall);
        if let Some(s) = self.sessions.get_mut(&stored.session_id) {
            s.owner = stored.owner;
            s.agent_id = stored.agent_id;
            s.epoch = stored.epoch;
            s.epoch_start = stored.epoch_start;
            if stored.head >= s.head {
                s.head = stored.head;
                std::mem::swap(&mut s.window, &mut window);
            }
            window.clear(&mut self.log);
            return;
        }
        if !self.make_room() {
            window.clear(&mut self.log);
            return; // full of live sessions: the handshake is refused as usual
        }
        let session = NewSession {
            id: stored.session_id,
            agent_id: stored.agent_id,
            owner: stored.owner,
            head: stored.head,
            window,
            dedup: Dedup::default(),
            version: stored.protocol_version,
            capabilities: stored.capabilities,
            epoch: stored.epoch,
            epoch_start: stored.epoch_start,
        };
        self.sessions.insert(session, Attachment::Detached(now));
    }

    /// Sessions whose connection this node holds, with their heads: after a lost notification
    /// feed, read each one's log after its head from the store and hand it in with
    /// [`handle_store_event`](Self::handle_store_event).
    pub fn held_sessions(&self) -> Vec<(SessionId, u64)> {
        self.sessions
            .values()
            .filter(|s| s.conn().is_some())
            .map(|s| (s.id.clone(), s.head))
            .collect()
    }

    /// The store now holds `session`'s metadata (its [`StoreRequest::WriteSession`] was
    /// written). A handshake that created the session waits for this before its `hello_ok`
    /// goes out, so that when the client (or anyone it tells) learns the id, every node can
    /// publish to it. Nothing happens for a session no connection of this node waits for.
    pub fn handle_store_written(&mut self, _now: Instant, session: &SessionId) {
        let Some(conn) = self.sessions.get(session).and_then(|s| s.conn()) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(conn) {
            if std::mem::take(&mut c.awaiting_store) {
                self.conns.mark_ready(conn);
            }
        }
    }

    /// Whether a connection of this node holds `session` (notifications for it are ingested
    /// here).
    pub fn holds(&self, session: &SessionId) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.conn().is_some())
    }

    /// The store's metadata view of a local session (no events), as in
    /// [`StoreRequest::WriteSession`].
    pub fn stored_session(&self, session: &SessionId) -> Option<StoredSession> {
        let s = self.sessions.get(session)?;
        Some(StoredSession {
            session_id: s.id.clone(),
            agent_id: s.agent_id.clone(),
            owner: s.owner.clone(),
            head: s.head,
            epoch: s.epoch,
            epoch_start: s.epoch_start,
            protocol_version: s.version,
            capabilities: s.capabilities.clone(),
            events: Vec::new(),
        })
    }

    /// Builds a tracked frame for `session` without numbering it (any node may publish to any
    /// session; the store assigns the sequence). Same checks as [`Server::publish`].
    pub fn prepare(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        fields: &[(&str, Value)],
    ) -> Result<Unsequenced, super::CommandError> {
        super::publish::check_publishable(kind, fields)?;
        Ok(self.unsequenced(now, session, kind, |o| {
            fields.iter().fold(o, |o, (k, v)| o.value(k, v))
        }))
    }

    pub(super) fn unsequenced(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        build: impl for<'a> FnOnce(Obj<'a>) -> Obj<'a>,
    ) -> Unsequenced {
        let mut body = String::new();
        build(Obj::start(&mut body, kind));
        Unsequenced {
            session: session.clone(),
            kind: kind.to_owned(),
            body,
            event_id: super::session::uuid4(&mut self.rng),
            timestamp: self.wall(now),
        }
    }

    /// A frame numbered by the store (from its notification, or read back from its log), for a
    /// session whose connection this node may hold. It is appended only as the next cursor: see
    /// [`Ingest`].
    pub fn handle_store_event(
        &mut self,
        now: Instant,
        session: &SessionId,
        recorded: Recorded,
    ) -> Result<Ingest, IngestError> {
        if recorded.cursor == 0 {
            // Stores number from 1: a 0 would otherwise pass as an old duplicate.
            return Err(IngestError::Malformed(0));
        }
        let wall = self.wall(now);
        let Some(s) = self.sessions.get_mut(session) else {
            return Ok(Ingest::NotHeld);
        };
        let Some(owner) = s.conn() else {
            return Ok(Ingest::NotHeld);
        };
        let cursor = recorded.cursor;
        if cursor <= s.head {
            return Ok(Ingest::Duplicate);
        }
        if cursor > s.head + 1 {
            return Ok(Ingest::Gap {
                expected: s.head + 1,
            });
        }
        let held = s
            .window
            .store(&mut self.log, recorded, wall)
            .ok_or(IngestError::Malformed(cursor))?;
        self.append_record(now, wall, session, held, Some(owner));
        Ok(Ingest::Appended)
    }

    /// Closes the connection holding `session` ([`wire::close::STORE_GAP`](crate::wire::close::STORE_GAP) `store_gap`, after what it was already
    /// owed) so its client resumes and learns of events this node can no longer get from the
    /// store; returns whether one was held. For an [`Ingest::Gap`] the store cannot fill.
    pub fn handle_store_gap(&mut self, now: Instant, session: &SessionId) -> bool {
        let Some(conn) = self.sessions.get(session).and_then(|s| s.conn()) else {
            return false;
        };
        self.close_conn(now, conn, close::STORE_GAP, "store_gap".into(), Flush::All);
        true
    }

    /// The store no longer holds `session` (flushed, evicted, restarted empty): events it
    /// numbered for it may be gone without a trace, so this node must not go on serving it.
    /// The connection holding it gets what this node already has, then close [`wire::close::SESSION_LOST`](crate::wire::close::SESSION_LOST)
    /// `session_lost`; its client reconnects, the store knows no such session, and the new
    /// handshake tells the client `SessionReplaced` (its pending requests become ambiguous)
    /// (The local copy cannot be resumed silently: every resume in store mode asks the store
    /// first.) Returns whether this node held the session's connection (a session held nowhere
    /// is reported to its client at its next resume).
    pub fn handle_store_lost(&mut self, now: Instant, session: &SessionId) -> bool {
        let Some(conn) = self.sessions.get(session).and_then(|s| s.conn()) else {
            return false;
        };
        self.close_conn(
            now,
            conn,
            close::SESSION_LOST,
            "session_lost".into(),
            Flush::All,
        );
        true
    }

    /// The store's verdict on a [`StoreRequest::CheckRequest`]: `None` = first sighting on any
    /// node (the application gets a [`ServerEvent::Request`](super::ServerEvent::Request) and the client `accepted`),
    /// `Some(outcome)` = seen before (the client gets `duplicate`, with the outcome once known).
    /// The request is handled even if its connection closed meanwhile: the store already
    /// counts it as seen, so dropping it would lose it.
    pub fn handle_store_check(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: &SessionId,
        request_id: &str,
        content: Value,
        seen: Option<Option<Outcome>>,
    ) {
        match seen {
            Some(outcome) => self.record_duplicate(now, session, request_id, outcome),
            None => self.accept_request(now, conn, session, request_id.to_owned(), content),
        }
    }
}
