//! The sessions: each one's identity, owner, sequence, recovery window, dedup window and line
//! of history, and the table that owns them with the index of detached sessions by the time
//! they were detached (what expires next, and what makes room first).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::auth::Principal;
use super::config::ServerConfig;
use super::conns::ConnId;
use super::deadlines::Deadlines;
use super::log::{EventLog, Held};
use super::session::{Dedup, SessionId};
use super::window::Window;

/// One session: outlives its connection for the TTL. Whether it is attached changes only
/// through [`Sessions`], which keeps the expiry index in step.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) agent_id: String,
    pub(crate) owner: Principal,
    /// Last assigned cursor (0 = none yet).
    pub(crate) head: u64,
    /// What a resume can replay (records of the server's [`EventLog`]).
    pub(crate) window: Window,
    pub(crate) dedup: Dedup,
    pub(crate) version: u32,
    pub(crate) capabilities: Vec<String>,
    /// The owning connection, if attached.
    conn: Option<ConnId>,
    /// When the last connection went away (TTL start); set exactly while detached.
    detached_at: Option<Instant>,
    /// Identifies this line of history: a new value at every restore, because a restore from an
    /// older snapshot hands out again the numbers of the writes it lost.
    pub(crate) epoch: u64,
    /// The head when this epoch began (0 at creation, the restored head after a restore): a
    /// client of another epoch can trust numbers up to here and no further.
    pub(crate) epoch_start: u64,
}

/// Whether a session is attached to a connection, or since when it is not.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attachment {
    Attached(ConnId),
    Detached(Instant),
}

/// What a new session starts with.
pub(crate) struct NewSession {
    pub(crate) id: SessionId,
    pub(crate) agent_id: String,
    pub(crate) owner: Principal,
    pub(crate) head: u64,
    pub(crate) window: Window,
    pub(crate) dedup: Dedup,
    pub(crate) version: u32,
    pub(crate) capabilities: Vec<String>,
    pub(crate) epoch: u64,
    pub(crate) epoch_start: u64,
}

impl Session {
    /// The owning connection, if attached.
    #[inline]
    pub(crate) fn conn(&self) -> Option<ConnId> {
        self.conn
    }

    /// When it was detached, if it is.
    pub(crate) fn detached_at(&self) -> Option<Instant> {
        self.detached_at
    }

    /// Cursor of the oldest retained event; `head + 1` when nothing is retained.
    pub(crate) fn oldest_cursor(&self, log: &EventLog) -> u64 {
        self.window.oldest(log).unwrap_or(self.head + 1)
    }

    /// Appends record `held` (which this session's window holds from now on) as the session's
    /// next cursor (`head + 1`), recorded while `target` held the session, then evicts down to
    /// the config's per-session bounds. Returns the owning connection and the highest cursor no
    /// longer retained by this append (evicted, or found evicted from the log), if any.
    #[inline(always)]
    pub(crate) fn append(
        &mut self,
        log: &mut EventLog,
        held: Held,
        target: Option<ConnId>,
        config: &ServerConfig,
    ) -> (Option<ConnId>, Option<u64>) {
        self.head += 1;
        let forgotten = self.window.forget_evicted(log);
        self.window.push(log, self.head, held, target);
        let evicted = self.window.evict_to(
            log,
            config.recovery_session_events,
            config.recovery_session_bytes,
        );
        (self.conn, evicted.max(forgotten))
    }
}

/// Every session, and the detached ones by the time they were detached.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: BTreeMap<SessionId, Session>,
    detached: Deadlines<SessionId>,
}

impl Sessions {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn contains(&self, id: &SessionId) -> bool {
        self.map.contains_key(id)
    }

    #[inline]
    pub(crate) fn get(&self, id: &SessionId) -> Option<&Session> {
        self.map.get(id)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: &SessionId) -> Option<&mut Session> {
        self.map.get_mut(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Session> {
        self.map.values()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.map.values_mut()
    }

    /// The session ids, in order (tests).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &SessionId> {
        self.map.keys()
    }

    /// Adds a session, attached or detached (an id in use is replaced).
    pub(crate) fn insert(&mut self, new: NewSession, attachment: Attachment) {
        let id = new.id.clone();
        if let Some(old) = self.map.get_mut(&id) {
            self.detached.rearm(&id, &mut old.detached_at, None);
        }
        let (conn, detached_at) = match attachment {
            Attachment::Attached(conn) => (Some(conn), None),
            Attachment::Detached(at) => (None, Some(at)),
        };
        let mut session = Session {
            id: new.id,
            agent_id: new.agent_id,
            owner: new.owner,
            head: new.head,
            window: new.window,
            dedup: new.dedup,
            version: new.version,
            capabilities: new.capabilities,
            conn,
            detached_at: None,
            epoch: new.epoch,
            epoch_start: new.epoch_start,
        };
        self.detached
            .rearm(&id, &mut session.detached_at, detached_at);
        self.map.insert(id, session);
    }

    /// Removes a session (its window still holds its records: clear it).
    pub(crate) fn remove(&mut self, id: &SessionId) -> Option<Session> {
        let mut s = self.map.remove(id)?;
        self.detached.rearm(id, &mut s.detached_at, None);
        Some(s)
    }

    /// Makes `conn` the session's connection (a resume, or a takeover: the previous owner
    /// no longer owns it).
    pub(crate) fn attach(&mut self, id: &SessionId, conn: ConnId) {
        if let Some(s) = self.map.get_mut(id) {
            s.conn = Some(conn);
            self.detached.rearm(id, &mut s.detached_at, None);
        }
    }

    /// Detaches the session from `conn` at `now` if (and only if) `conn` still owns it; its
    /// TTL starts. Returns its agent when it was detached.
    pub(crate) fn detach_if_owner(
        &mut self,
        id: &SessionId,
        conn: ConnId,
        now: Instant,
    ) -> Option<String> {
        let s = self.map.get_mut(id)?;
        if s.conn != Some(conn) {
            return None; // taken over by a newer connection: not ours to touch
        }
        s.conn = None;
        self.detached.rearm(id, &mut s.detached_at, Some(now));
        Some(s.agent_id.clone())
    }

    /// The session detached the longest (what makes room first).
    pub(crate) fn longest_detached(&self) -> Option<&SessionId> {
        self.detached.first().map(|(_, id)| id)
    }

    /// When the next detached session expires.
    #[inline]
    pub(crate) fn next_expiry(&self, ttl: Duration) -> Option<Instant> {
        self.detached
            .first()
            .and_then(|(at, _)| at.checked_add(ttl))
    }

    /// Every session detached for at least `ttl` at `now`, in id order; they leave the index
    /// (remove them).
    pub(crate) fn pop_expired(&mut self, now: Instant, ttl: Duration, out: &mut Vec<SessionId>) {
        let expired = |at: Instant| at.checked_add(ttl).is_some_and(|end| now >= end);
        self.detached.pop_due(expired, out);
        for id in out.iter() {
            if let Some(s) = self.map.get_mut(id) {
                s.detached_at = None;
            }
        }
        out.sort_unstable();
    }

    /// Checks the expiry index against every session (tests).
    #[cfg(test)]
    pub(crate) fn check_index(&self) {
        let detached = self
            .map
            .values()
            .filter(|s| s.detached_at.is_some())
            .count();
        assert_eq!(
            detached,
            self.detached.len(),
            "one entry per detached session"
        );
        for s in self.map.values() {
            assert_eq!(s.conn.is_none(), s.detached_at.is_some(), "{}", s.id);
        }
    }
}
