//! The reference model each client's events are checked against after every step, the
//! half-open deadline, and the end-state checks of [`Sim::settle`].
//!
//! Per client (across process restarts, since the application persists its position):
//! - **Order and holes.** Within one numbering (a session, restarted by a reported
//!   `ServerReset`), every delivered sequence is exactly one above the last position accounted
//!   for, where "accounted for" means delivered or inside a reported `Lost{from,to}` (which must
//!   itself start right after that position). A `ServerReset{head}` starts a new numbering in
//!   which everything up to `head` counts as reported; a `SessionReplaced` (which must name the
//!   session we had) starts the new session at 0. So nothing is delivered twice, nothing out of
//!   order, and no hole goes unreported.
//! - **Tokens.** Each published event carries a unique token; no token is delivered twice.
//! - **Connections.** Every `Connecting` is followed by exactly one terminal event
//!   (`Disconnected`, `AwaitingCredentials` or `Closed`) before the next `Connecting`; the client
//!   emits at most one `Closed` per process, and nothing after it.
//! - **Backoff.** Every `Reconnecting{delay}` is at most `max(backoff.max, 1.2 × retry_after)`
//!   (the floor only when the connection that just ended was rejected with a `retry_after`).
//! - **Requests.** Every request update names a request this client sent and not yet resolved;
//!   `Final`, `Duplicate` and `Ambiguous` resolve it exactly once.
//! - **Hygiene.** No `BadFrame` and no `ServerError` between our client and our server.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use tether_core::client::{DisconnectCause, Event, RequestStatus, State};

use super::world::Sim;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time since the origin.
    pub at: Duration,
    /// The client concerned, if any.
    pub client: Option<usize>,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client {
            Some(c) => write!(f, "at {:?}, client c{c}: {}", self.at, self.what),
            None => write!(f, "at {:?}: {}", self.at, self.what),
        }
    }
}

impl std::error::Error for Violation {}

/// Where a request stands, as the client application saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    Pending,
    Accepted,
    Done,
}

/// What one client application has seen (it outlives process restarts).
#[derive(Debug, Clone)]
pub(crate) struct ClientModel {
    pub(crate) session: Option<String>,
    /// Highest sequence accounted for (delivered or reported lost) in the current numbering.
    pub(crate) pos: u64,
    /// Current numbering: sequence → hash of the delivered frame.
    pub(crate) delivered: BTreeMap<u64, u64>,
    /// Current numbering: ranges reported lost.
    pub(crate) lost: Vec<(u64, u64)>,
    /// Current numbering: sequences up to this one are covered by a reported reset.
    pub(crate) reset_floor: u64,
    tokens: BTreeSet<u64>,
    /// `Closed` events of the current process.
    pub(crate) closed_events: u32,
    conn_open: bool,
    /// `retry_after` of the rejection that ended the last connection.
    floor: Option<Duration>,
    backoff_max: Duration,
    pub(crate) requests: BTreeMap<String, Req>,
    pub(crate) stats: ModelStats,
}

/// Counters of what the model saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ModelStats {
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) resets: u64,
    pub(crate) replaced: u64,
    pub(crate) connections: u64,
    pub(crate) resolved: u64,
}

impl ClientModel {
    pub(crate) fn new(backoff_max: Duration) -> Self {
        Self {
            session: None,
            pos: 0,
            delivered: BTreeMap::new(),
            lost: Vec::new(),
            reset_floor: 0,
            tokens: BTreeSet::new(),
            closed_events: 0,
            conn_open: false,
            floor: None,
            backoff_max,
            requests: BTreeMap::new(),
            stats: ModelStats::default(),
        }
    }

    /// The process restarted: connection-level expectations start over.
    pub(crate) fn restarted(&mut self) {
        self.closed_events = 0;
        self.conn_open = false;
        self.floor = None;
    }

    /// Whether `seq` is inside a reported loss of the current numbering.
    pub(crate) fn reported_lost(&self, seq: u64) -> bool {
        seq <= self.reset_floor || self.lost.iter().any(|&(a, b)| a <= seq && seq <= b)
    }

    /// A new numbering whose first `pos` sequences count as reported (a reset or a new
    /// session): nothing at or below `pos` is expected any more.
    fn new_numbering(&mut self, pos: u64) {
        self.pos = pos;
        self.reset_floor = pos;
        self.delivered.clear();
        self.lost.clear();
    }

    /// Checks one event against the model and updates it.
    pub(crate) fn observe(&mut self, event: &Event) -> Result<(), String> {
        if self.closed_events > 0 {
            return Err(format!("event after Closed: {event:?}"));
        }
        match event {
            Event::Delivered(d) => {
                if d.seq != self.pos + 1 {
                    return Err(if d.seq <= self.pos {
                        format!(
                            "seq {} delivered after {} was accounted for (twice or out of order)",
                            d.seq, self.pos
                        )
                    } else {
                        format!(
                            "seq {} delivered after {}: {}..={} neither delivered nor reported lost",
                            d.seq,
                            self.pos,
                            self.pos + 1,
                            d.seq - 1
                        )
                    });
                }
                self.pos = d.seq;
                self.delivered.insert(d.seq, fnv(d.payload.as_bytes()));
                self.stats.delivered += 1;
                if let Some(token) = token_of(&d.payload) {
                    if !self.tokens.insert(token) {
                        return Err(format!("published event p={token} delivered twice"));
                    }
                }
            }
            Event::Lost { from, to } => {
                if *from != self.pos + 1 || to < from {
                    return Err(format!(
                        "Lost{{{from}..={to}}} does not start right after position {}",
                        self.pos
                    ));
                }
                self.pos = *to;
                self.lost.push((*from, *to));
                self.stats.lost += to - from + 1;
            }
            Event::Gap { expected, received }
                if *expected != self.pos + 1 || received <= expected =>
            {
                return Err(format!(
                    "Gap{{{expected}, {received}}} inconsistent with position {}",
                    self.pos
                ));
            }
            Event::ServerReset { cursor, head } => {
                if head >= cursor {
                    return Err(format!("ServerReset with head {head} >= cursor {cursor}"));
                }
                self.stats.resets += 1;
                self.new_numbering(*head);
            }
            Event::SessionReplaced { previous, current } => {
                if self.session.as_deref() != Some(previous.as_str()) {
                    return Err(format!(
                        "SessionReplaced names {previous}, but the session was {:?}",
                        self.session
                    ));
                }
                self.stats.replaced += 1;
                self.session = Some(current.clone());
                self.new_numbering(0);
            }
            Event::StateChanged(state) => self.observe_state(state)?,
            Event::Request(u) => {
                let Some(req) = self.requests.get_mut(&u.request_id) else {
                    return Err(format!("update for unknown request {}", u.request_id));
                };
                if *req == Req::Done {
                    return Err(format!(
                        "request {} updated after its final status: {:?}",
                        u.request_id, u.status
                    ));
                }
                *req = match u.status {
                    RequestStatus::Accepted => Req::Accepted,
                    _ => {
                        self.stats.resolved += 1;
                        Req::Done
                    }
                };
            }
            Event::Closed(_) => {
                self.conn_open = false;
                self.closed_events += 1;
            }
            Event::BadFrame(e) => return Err(format!("bad frame from our own server: {e}")),
            Event::ServerError(e) => return Err(format!("server error frame: {e:?}")),
            _ => {}
        }
        Ok(())
    }

    fn observe_state(&mut self, state: &State) -> Result<(), String> {
        match state {
            State::Connecting { .. } => {
                if self.conn_open {
                    return Err("Connecting before the previous connection ended".into());
                }
                self.conn_open = true;
            }
            State::Connected { session_id, .. } => {
                if !self.conn_open {
                    return Err("Connected without Connecting".into());
                }
                self.stats.connections += 1;
                match &self.session {
                    None => {
                        self.session = Some(session_id.clone());
                        self.new_numbering(0);
                    }
                    Some(s) if s != session_id => {
                        return Err(format!(
                            "connected to {session_id} while the session was {s}, \
                             without SessionReplaced"
                        ));
                    }
                    Some(_) => {}
                }
            }
            State::Disconnected { cause } => {
                if !self.conn_open {
                    return Err(format!("Disconnected ({cause:?}) twice for one connection"));
                }
                self.conn_open = false;
                self.floor = match cause {
                    DisconnectCause::Rejected(r) => r.retry_after,
                    _ => None,
                };
            }
            State::Reconnecting { delay, .. } => {
                let bound = self
                    .backoff_max
                    .max(self.floor.map_or(Duration::ZERO, |f| f.mul_f64(1.2)));
                if *delay > bound + Duration::from_micros(1) {
                    return Err(format!(
                        "reconnect delay {delay:?} above the bound {bound:?}"
                    ));
                }
            }
            State::AwaitingCredentials => self.conn_open = false,
            // The core's enums are `#[non_exhaustive]`: a state this model does not know
            // is a violation until the model learns what it means.
            other => return Err(format!("state unknown to the model: {other:?}")),
        }
        Ok(())
    }
}

impl Sim {
    /// How long a half-open socket may stay in use: the slower side's silence limit plus a
    /// ping interval, the other side's close travelling back, slowdowns and timer rounding.
    pub(crate) fn half_open_limit(&self) -> Duration {
        let server = self.config.server.heartbeat_interval.unwrap_or_default();
        let client = self
            .config
            .client
            .fallback_heartbeat
            .unwrap_or(server)
            .max(server);
        let factor = self.config.client.missed_beats.max(1);
        let net = &self.config.network;
        let trip = net.max_delay + net.spike_max + Duration::from_secs(3);
        (client * (factor + 1)).max(server * (self.config.server.missed_beats.max(1) + 1))
            + trip * 2
            + Duration::from_secs(1)
    }

    /// Half-open sockets must be given up by both sides within [`Self::half_open_limit`].
    pub(crate) fn check_half_open(&mut self) {
        if self.half_open.is_empty() {
            return;
        }
        let (now, limit) = (self.now, self.half_open_limit());
        let mut late = Vec::new();
        let (links, clients) = (&self.links, &self.clients);
        self.half_open.retain(|id, since| {
            let Some(l) = links.get(id) else {
                return false;
            };
            let client_uses = l.client_open && clients[l.client].link == Some(*id);
            if !client_uses && !l.server_open {
                return false;
            }
            if now > *since + limit {
                late.push((*id, l.client, client_uses, l.server_open, *since));
            }
            true
        });
        for (id, c, client_uses, server_uses, since) in late {
            let who = match (client_uses, server_uses) {
                (true, true) => "neither side",
                (true, false) => "the client",
                _ => "the server",
            };
            self.violate(
                Some(c),
                format!(
                    "socket {id} half-open since {:.3}s: {who} still uses it after {limit:?}",
                    since.as_secs_f64()
                ),
            );
        }
    }

    // ------------------------------------------------------------------------------ end

    /// The end-of-run checks (see [`Sim::settle`]).
    pub(crate) fn check_end(&mut self) -> Result<(), crate::sim::Violation> {
        let now = self.instant();
        let snapshot = self.server().map(|s| s.snapshot(now));
        let mut bad: Vec<(usize, String)> = Vec::new();
        for (c, sc) in self.clients.iter().enumerate() {
            let m = &sc.model;
            if sc.disconnected_by_app {
                if m.closed_events != 1 {
                    bad.push((
                        c,
                        format!("{} Closed events after disconnect", m.closed_events),
                    ));
                }
                continue;
            }
            if m.closed_events != 0 {
                bad.push((c, "Closed without a disconnect".into()));
                continue;
            }
            let Some(sid) = sc.machine.session_id() else {
                bad.push((c, "connected without a session".into()));
                continue;
            };
            if m.session.as_deref() != Some(sid) {
                bad.push((c, format!("model session {:?} != client {sid}", m.session)));
                continue;
            }
            let session = snapshot
                .as_ref()
                .and_then(|s| s.sessions.iter().find(|s| s.session_id.as_str() == sid));
            let Some(session) = session else {
                bad.push((c, format!("session {sid} unknown to the live server")));
                continue;
            };
            if m.pos != session.head {
                bad.push((
                    c,
                    format!(
                        "client accounted for events up to {}, the server's head is {} \
                         (events pending forever or numbering mixed)",
                        m.pos, session.head
                    ),
                ));
            }
            for e in &session.events {
                match m.delivered.get(&e.cursor) {
                    Some(h) if *h == fnv(e.frame.as_bytes()) => {}
                    Some(_) => bad.push((
                        c,
                        format!(
                            "seq {} delivered with other content than the server holds \
                             (a lost write's number was reused silently): {}",
                            e.cursor, e.frame
                        ),
                    )),
                    None if m.reported_lost(e.cursor) => {}
                    None => bad.push((
                        c,
                        format!(
                            "seq {} held by the server never delivered nor reported: {}",
                            e.cursor, e.frame
                        ),
                    )),
                }
            }
            for (rid, r) in &m.requests {
                if *r != Req::Done && !self.orphaned.contains(rid) {
                    bad.push((c, format!("request {rid} never resolved ({r:?})")));
                }
            }
        }
        match bad.into_iter().next() {
            Some((c, what)) => {
                self.violate(Some(c), what);
                Err(self
                    .violation
                    .clone()
                    .unwrap_or_else(|| self.violation_now(None, String::new())))
            }
            None => Ok(()),
        }
    }
}

/// The token `"p":n` of a published event, if any.
pub(crate) fn token_of(payload: &str) -> Option<u64> {
    let rest = &payload[payload.find("\"p\":")? + 4..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// FNV-1a, 64 bits: a deterministic fingerprint of a frame.
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_core::client::{Delivered, RequestUpdate};

    fn delivered(seq: u64, p: u64) -> Event {
        Event::Delivered(Delivered {
            kind: "message".into(),
            seq,
            cursor: seq,
            replayed: false,
            payload: format!(r#"{{"type":"message","p":{p},"cursor":{seq},"seq":{seq}}}"#).into(),
        })
    }

    fn connected(model: &mut ClientModel, session: &str) {
        let connecting = Event::StateChanged(State::Connecting { attempt: 0 });
        let connected = Event::StateChanged(State::Connected {
            version: 2,
            session_id: session.into(),
            resumed: false,
            legacy: false,
        });
        model.observe(&connecting).unwrap();
        model.observe(&connected).unwrap();
    }

    #[test]
    fn holes_must_be_reported_and_nothing_comes_twice() {
        let mut m = ClientModel::new(Duration::from_secs(1));
        connected(&mut m, "s1");
        m.observe(&delivered(1, 10)).unwrap();
        assert!(m.observe(&delivered(1, 10)).is_err(), "twice");
        let mut m2 = m.clone();
        assert!(m2.observe(&delivered(3, 12)).is_err(), "silent skip of 2");
        m.observe(&Event::Lost { from: 2, to: 3 }).unwrap();
        m.observe(&delivered(4, 13)).unwrap();
        assert!(
            m.observe(&Event::Lost { from: 7, to: 8 }).is_err(),
            "loss after a hole"
        );
        assert!(m.reported_lost(3) && !m.reported_lost(4));
        // A reset covers everything up to the new head; the same token never comes twice.
        m.observe(&Event::ServerReset { cursor: 4, head: 2 })
            .unwrap();
        m.observe(&delivered(3, 20)).unwrap();
        assert!(m.observe(&delivered(4, 13)).is_err(), "token 13 again");
    }

    #[test]
    fn sessions_connections_requests_and_backoff_are_checked() {
        let mut m = ClientModel::new(Duration::from_secs(1));
        connected(&mut m, "s1");
        let other = Event::SessionReplaced {
            previous: "nope".into(),
            current: "s2".into(),
        };
        assert!(m.clone().observe(&other).is_err(), "wrong previous session");
        let again = Event::StateChanged(State::Connecting { attempt: 1 });
        assert!(
            m.clone().observe(&again).is_err(),
            "no terminal event in between"
        );
        let slow = Event::StateChanged(State::Reconnecting {
            attempt: 1,
            delay: Duration::from_secs(2),
        });
        assert!(m.clone().observe(&slow).is_err(), "delay above backoff.max");
        m.requests.insert("r".into(), Req::Pending);
        let done = Event::Request(RequestUpdate {
            request_id: "r".into(),
            status: RequestStatus::Ambiguous,
        });
        m.observe(&done).unwrap();
        assert!(m.observe(&done).is_err(), "resolved twice");
        let closed = Event::Closed(tether_core::client::ClosedReason::Requested);
        m.observe(&closed).unwrap();
        assert!(m.observe(&delivered(1, 1)).is_err(), "event after Closed");
    }

    #[test]
    fn tokens_and_fingerprints() {
        assert_eq!(
            token_of(r#"{"type":"message","p":42,"cursor":1}"#),
            Some(42)
        );
        assert_eq!(token_of(r#"{"type":"response"}"#), None);
        assert_ne!(fnv(b"a"), fnv(b"b"));
    }
}
