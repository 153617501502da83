//! Presence and health (PROTOCOL.md §11 shapes) and memory statistics.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Server;

/// One connected client (`PresenceInfo.to_dict` shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceInfo {
    /// The connection label (`conn-<id>`).
    pub client_id: String,
    /// Always `online` for connected clients.
    pub status: String,
    /// Last inbound frame, epoch seconds.
    pub last_seen: f64,
    /// `session_id` and `agent_id`.
    pub metadata: serde_json::Map<String, Value>,
    /// The agent, as the only channel.
    pub channels: Vec<String>,
}

/// The liveness part of [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    /// Whether pings and reaping are on.
    pub enabled: bool,
    /// Ping interval, ms.
    pub interval_ms: u64,
    /// Silent intervals before a reap.
    pub missed_beats_before_reap: u32,
    /// Connections reaped so far.
    pub reaped_connections: u64,
}

/// Gateway health, in the reference key order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `healthy`, or `stopped` after shutdown.
    pub status: String,
    /// Seconds since start.
    pub uptime: f64,
    /// Registered agents.
    pub agents: usize,
    /// Sessions held (attached or not).
    pub sessions: usize,
    /// Open connections.
    pub clients: usize,
    /// Channel status (none in the core).
    pub channels: serde_json::Map<String, Value>,
    /// Last inbound frame from anyone, epoch seconds.
    pub last_inbound_at: f64,
    /// Heartbeat settings and counters.
    pub liveness: Liveness,
}

/// Current memory use, to check the bounds (tests, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Sessions held.
    pub sessions: usize,
    /// Connections known.
    pub connections: usize,
    /// Largest recovery window, events (held against `recovery_session_events`).
    pub max_window_events: usize,
    /// Largest recovery window, bytes (held against `recovery_session_bytes`).
    pub max_window_bytes: usize,
    /// Bytes of the event log shared by every window, each event counted once (held against
    /// `recovery_total_bytes`).
    pub log_bytes: usize,
    /// Events in the shared log (each once, however many sessions it went to).
    pub log_events: usize,
    /// Longest control queue.
    pub max_control_frames: usize,
    /// Largest dedup window.
    pub max_dedup: usize,
    /// Pending application events.
    pub pending_events: usize,
}

impl Server {
    /// Every connected (bound) client, of every agent.
    pub fn presence(&self) -> Vec<PresenceInfo> {
        self.presence_filtered(None, usize::MAX)
    }

    /// At most `limit` entries: a handshake must not cost O(connections) (the herd simulation
    /// showed every reconnect scanning and sending the whole list).
    fn presence_filtered(&self, agent: Option<&str>, limit: usize) -> Vec<PresenceInfo> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.is_closing())
            .filter_map(|(id, c)| c.bound.as_ref().map(|b| (id, c, b)))
            .filter(|(_, _, b)| agent.is_none_or(|a| a == b.agent_id))
            .map(|(id, c, b)| {
                let mut metadata = serde_json::Map::new();
                metadata.insert("session_id".into(), Value::from(b.session.as_str()));
                metadata.insert("agent_id".into(), Value::from(b.agent_id.as_str()));
                PresenceInfo {
                    client_id: id.label(),
                    status: "online".into(),
                    last_seen: c.last_inbound_wall,
                    metadata,
                    channels: vec![b.agent_id.clone()],
                }
            })
            .take(limit)
            .collect()
    }

    pub(super) fn presence_values(&self, agent: &str) -> Vec<Value> {
        self.presence_filtered(Some(agent), self.config.handshake_presence_limit)
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect()
    }

    /// Health at `now`.
    pub fn health(&self, now: Instant) -> Health {
        let interval = self.config.heartbeat_interval.unwrap_or_default();
        Health {
            status: if self.shutting_down {
                "stopped"
            } else {
                "healthy"
            }
            .into(),
            uptime: now.saturating_duration_since(self.start).as_secs_f64(),
            agents: self.config.agents.len(),
            sessions: self.sessions.len(),
            clients: self.conns.len(),
            channels: serde_json::Map::new(),
            last_inbound_at: self.last_inbound_wall,
            liveness: Liveness {
                enabled: !interval.is_zero(),
                interval_ms: interval.as_millis() as u64,
                missed_beats_before_reap: self.config.missed_beats,
                reaped_connections: self.reaped,
            },
        }
    }

    pub(super) fn health_value(&self, now: Instant) -> Value {
        // Through text, so the struct's key order survives only where serde_json keeps it;
        // the typed `Health` is the reference for consumers.
        serde_json::from_str(&crate::wire::json::json(&self.health(now))).unwrap_or(Value::Null)
    }

    /// Current memory use.
    pub fn stats(&self) -> ServerStats {
        let mut st = ServerStats {
            sessions: self.sessions.len(),
            connections: self.conns.len(),
            pending_events: self.events.len(),
            log_bytes: self.log.bytes(),
            log_events: self.log.events(),
            ..ServerStats::default()
        };
        for s in self.sessions.values() {
            st.max_window_events = st.max_window_events.max(s.window.len());
            st.max_window_bytes = st.max_window_bytes.max(s.window.bytes());
            st.max_dedup = st.max_dedup.max(s.dedup.entries.len());
        }
        for (_, c) in self.conns.iter() {
            st.max_control_frames = st.max_control_frames.max(c.control.len());
        }
        st
    }

    /// The head cursor of a session (last assigned), if it exists.
    pub fn session_head(&self, session: &crate::server::SessionId) -> Option<u64> {
        self.sessions.get(session).map(|s| s.head)
    }

    /// The session a connection is bound to.
    pub fn session_of(&self, conn: crate::server::ConnId) -> Option<&crate::server::SessionId> {
        self.conns.get(conn)?.bound.as_ref().map(|b| &b.session)
    }
}
