//! [`MemoryStore`]: the session store of store mode, in memory, with the semantics of the Redis
//! adapter (`tether-redis`'s scripts): the reference another store adapter can be compared with.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;
use tether_core::server::{Outcome, Recorded, SessionId, StoredSession, Unsequenced};

/// An in-memory session store with the Redis adapter's semantics: metadata records, a trimmed
/// log per session, request ids.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    /// Metadata as last written (their `head` and `events` are unused: see `heads` and `log`).
    pub meta: BTreeMap<SessionId, StoredSession>,
    /// Each session's head: created "if absent" by a metadata write, advanced only by appends.
    pub heads: BTreeMap<SessionId, u64>,
    /// The retained events of each session, the newest `keep`.
    pub log: BTreeMap<SessionId, VecDeque<Recorded>>,
    /// How many events a session's log retains.
    pub keep: usize,
    /// Request ids seen, with their outcome once recorded.
    pub requests: BTreeMap<(SessionId, String), Option<Outcome>>,
    /// Bookkeeping for the checks, never trimmed: the field `n` of every `message` the store
    /// numbered, by (session, sequence). (Events of kind `message` must carry `n`; other kinds
    /// are numbered without it.)
    pub numbered: BTreeMap<(SessionId, u64), u64>,
}

impl MemoryStore {
    /// An empty store whose logs keep the newest `keep` events.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    /// `WriteSession`: the metadata is written, the head only if absent (HSETNX).
    ///
    /// # Panics
    /// If the write carries events (metadata writes never do).
    pub fn write_meta(&mut self, s: StoredSession) {
        assert!(s.events.is_empty(), "metadata writes carry no events");
        self.heads.entry(s.session_id.clone()).or_insert(s.head);
        let id = s.session_id.clone();
        self.meta.insert(
            id,
            StoredSession {
                head: 0,
                events: Vec::new(),
                ..s
            },
        );
    }

    /// `Append`: the next sequence, atomically; the log keeps the newest `keep`.
    ///
    /// # Panics
    /// If the numbered frame does not carry its number as `cursor` and `seq`, or is a
    /// `message` without `n`.
    pub fn append(&mut self, u: Unsequenced) -> (SessionId, Recorded) {
        let sid = u.session.clone();
        let head = self.heads.entry(sid.clone()).or_insert(0);
        *head += 1;
        let rec = u.into_recorded(*head);
        let v: Value = serde_json::from_str(&rec.frame).expect("a numbered frame is JSON");
        assert_eq!(v["cursor"], rec.cursor, "numbered frame: {}", rec.frame);
        assert_eq!(v["seq"], rec.cursor, "numbered frame: {}", rec.frame);
        if rec.kind == "message" {
            let n = v["n"].as_u64().expect("the cluster's messages carry n");
            self.numbered.insert((sid.clone(), rec.cursor), n);
        }
        let log = self.log.entry(sid.clone()).or_default();
        log.push_back(rec.clone());
        while log.len() > self.keep {
            log.pop_front();
        }
        (sid, rec)
    }

    /// `ReadSession`: the metadata plus the retained events, or `None` if unknown.
    pub fn read(&self, id: &SessionId) -> Option<StoredSession> {
        let m = self.meta.get(id)?;
        Some(StoredSession {
            head: self.head(id),
            events: self
                .log
                .get(id)
                .map_or_else(Vec::new, |l| l.iter().cloned().collect()),
            ..m.clone()
        })
    }

    /// The session's head (0 if unknown).
    pub fn head(&self, id: &SessionId) -> u64 {
        self.heads.get(id).copied().unwrap_or(0)
    }

    /// XRANGE from `from`: the retained events numbered `from` or later.
    pub fn since(&self, id: &SessionId, from: u64) -> Vec<Recorded> {
        self.log.get(id).map_or_else(Vec::new, |l| {
            l.iter().filter(|r| r.cursor >= from).cloned().collect()
        })
    }

    /// `CheckRequest`: marks the id seen (SETNX) and answers `None` the first time, else what
    /// is stored for it (`Some(None)`: seen, no outcome yet).
    pub fn check_request(&mut self, sid: &SessionId, rid: &str) -> Option<Option<Outcome>> {
        let key = (sid.clone(), rid.to_owned());
        if let Some(o) = self.requests.get(&key) {
            return Some(o.clone());
        }
        self.requests.insert(key, None);
        None
    }

    /// Forgets a session entirely (a flush, or the store's own expiry).
    pub fn forget(&mut self, id: &SessionId) {
        self.meta.remove(id);
        self.heads.remove(id);
        self.log.remove(id);
    }
}
