//! Persistence: every session's state as a serde value, and a server rebuilt from it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::session::{Dedup, DedupEntry, Outcome, SessionId};
use super::sessions::{Attachment, NewSession};
use super::window::{Recorded, Retained, Window};
use super::{RestoreError, Server, ServerConfig};

/// 2: event ids and targets in compact form (`event_id` a uuid string, `target` a `ConnId`).
const FORMAT: u32 = 2;

/// All sessions, as persisted. Times are ages relative to the snapshot's `now`, so a restore
/// at another `Instant` origin keeps TTLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    /// Format version of this structure.
    pub format: u32,
    /// Wall-clock time of the snapshot, epoch seconds.
    pub taken_at: f64,
    /// The sessions.
    pub sessions: Vec<SessionSnapshot>,
}

/// One session, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// Its id.
    pub session_id: SessionId,
    /// Its agent.
    pub agent_id: String,
    /// The principal that owns it.
    pub owner: Principal,
    /// Last assigned cursor (== sequence).
    pub head: u64,
    /// Last negotiated protocol version.
    pub protocol_version: u32,
    /// Last offered capabilities.
    pub capabilities: Vec<String>,
    /// The retained events, oldest first.
    pub events: Vec<Recorded>,
    /// The request dedup window, oldest first.
    pub dedup: Vec<DedupSnapshot>,
    /// How long it had been detached (a session attached at snapshot time counts as detached
    /// at the snapshot).
    pub detached_for_ms: u64,
    /// The connection that owned it at snapshot time (presence info; not restored as a bond).
    pub last_client: Option<String>,
}

/// One remembered request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DedupSnapshot {
    /// The request id.
    pub request_id: String,
    /// Its age, ms.
    pub age_ms: u64,
    /// The final outcome, if answered.
    pub outcome: Option<Outcome>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Server {
    /// Every session's state at `now` (sequence, recovery window, dedup window, version,
    /// owner). An event published to many sessions appears in each one's `events` (as the frame
    /// that session was sent).
    pub fn snapshot(&self, now: Instant) -> ServerSnapshot {
        let sessions = self
            .sessions
            .values()
            .map(|s| SessionSnapshot {
                session_id: s.id.clone(),
                agent_id: s.agent_id.clone(),
                owner: s.owner.clone(),
                head: s.head,
                protocol_version: s.version,
                capabilities: s.capabilities.clone(),
                events: s
                    .window
                    .iter(&self.log)
                    .map(Retained::to_recorded)
                    .collect(),
                dedup: s
                    .dedup
                    .entries
                    .iter()
                    .map(|e| DedupSnapshot {
                        request_id: e.request_id.clone(),
                        age_ms: ms(now.saturating_duration_since(e.at)),
                        outcome: e.outcome.clone(),
                    })
                    .collect(),
                detached_for_ms: s
                    .detached_at()
                    .map_or(0, |d| ms(now.saturating_duration_since(d))),
                last_client: s.conn().map(|c| c.label()),
            })
            .collect();
        ServerSnapshot {
            format: FORMAT,
            taken_at: self.wall(now),
            sessions,
        }
    }

    /// A server holding `snapshot`'s sessions, all detached (clients resume them by id with
    /// their cursor and get exactly the missed events). Windows are re-bounded by `config`
    /// (events older than `recovery_window` leave at the first append or timer);
    /// sessions beyond `max_sessions` are dropped, most recently detached kept.
    pub fn restore(
        config: ServerConfig,
        snapshot: ServerSnapshot,
        now: Instant,
    ) -> Result<Self, RestoreError> {
        if snapshot.format != FORMAT {
            return Err(RestoreError::UnsupportedFormat(snapshot.format));
        }
        let mut server = Self::new(config, now);
        let mut all = snapshot.sessions;
        all.sort_by_key(|s| s.detached_for_ms);
        all.truncate(server.config.max_sessions);
        let mut events = Vec::new();
        for snap in all {
            let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
            let mut dedup = Dedup::default();
            for d in snap
                .dedup
                .into_iter()
                .rev()
                .take(server.config.dedup_max)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                dedup.entries.push_back(DedupEntry {
                    request_id: d.request_id,
                    at: ago(d.age_ms),
                    outcome: d.outcome,
                });
            }
            events.push((snap.session_id.clone(), snap.events));
            let session = NewSession {
                id: snap.session_id,
                agent_id: snap.agent_id,
                owner: snap.owner,
                head: snap.head,
                window: Window::default(),
                dedup,
                version: snap.protocol_version,
                capabilities: snap.capabilities,
                epoch: server.rng.next_u64(),
                epoch_start: snap.head,
            };
            let detached = Attachment::Detached(ago(snap.detached_for_ms));
            server.sessions.insert(session, detached);
        }
        // The log is oldest first, across sessions, so that events leave it by age in order.
        // Each session's events keep their order (their times are taken as non-decreasing).
        let mut order = Vec::new();
        for (s, (_, list)) in events.iter().enumerate() {
            let mut at = f64::NEG_INFINITY;
            for (i, r) in list.iter().enumerate() {
                at = at.max(r.timestamp);
                order.push((at, s, i));
            }
        }
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        let mut lists: Vec<(SessionId, Vec<Option<Recorded>>)> = events
            .into_iter()
            .map(|(id, list)| (id, list.into_iter().map(Some).collect()))
            .collect();
        // An event's age counts from its record time (the downtime included), never from the
        // future.
        let wall = server.wall(now);
        for (at, s, i) in order {
            let (id, list) = &mut lists[s];
            if let (Some(session), Some(r)) = (server.sessions.get_mut(id), list[i].take()) {
                let head = session.head;
                let at = if at.is_finite() { at.min(wall) } else { wall };
                session.window.push_recorded(&mut server.log, r, head, at);
            }
        }
        let (max_events, max_bytes) = (
            server.config.recovery_session_events,
            server.config.recovery_session_bytes,
        );
        for session in server.sessions.values_mut() {
            session.window.forget_evicted(&server.log);
            session
                .window
                .evict_to(&mut server.log, max_events, max_bytes);
        }
        server.evict_log(now, wall);
        Ok(server)
    }
}
