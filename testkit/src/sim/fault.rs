//! What can go wrong ([`Fault`]) and what the applications do ([`Action`]), as plain values
//! scheduled at virtual times (a run's schedule is an explicit list, so a failing one can be
//! printed, replayed and shrunk by removing entries), and how the world applies them: crashes,
//! snapshots and restores, client restarts, freezes, publishes and requests.

use std::fmt;
use std::time::Duration;

use serde_json::json;

use tether_core::client::Client;
use tether_core::cursor::ResumeState;
use tether_core::rng::seed_from_u64;
use tether_core::server::{Audience, Server, ServerSnapshot};

use super::fingerprint::History;
use super::invariants::Req;
use super::link::{Direction, Payload};
use super::world::{Kind, Persisted, Sim};

/// Which state a restarted server instance starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restore {
    /// A snapshot taken at the moment of the crash: nothing is lost (synchronous persistence).
    Latest,
    /// The last snapshot persisted by [`Fault::Persist`]: whatever happened after it is lost
    /// (the "lost last writes" case). Without any persisted snapshot this is [`Restore::Empty`].
    Persisted,
    /// No snapshot at all: every session is gone.
    Empty,
}

/// A process whose clock can stall ([`Fault::Freeze`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The client with this index.
    Client(usize),
    /// The live server instance.
    Server,
}

/// A fault injected at a scheduled virtual time. Client indices that do not exist, or faults
/// that find nothing to act on (a cut with no open socket), do nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The client's current socket is cut: every message in flight is lost, and each side
    /// learns of the close after its own network delay (the client with no close code).
    Cut {
        /// The client.
        client: usize,
    },
    /// The client's current socket goes half-open: frames in `direction` vanish silently and
    /// neither side is told. Heartbeats must detect it.
    HalfOpen {
        /// The client.
        client: usize,
        /// The silent direction(s).
        direction: Direction,
    },
    /// Messages the client's sockets carry (both ways) are delayed by `extra` for `duration`.
    Slow {
        /// The client.
        client: usize,
        /// Added one-way delay.
        extra: Duration,
        /// How long the slowdown lasts.
        duration: Duration,
    },
    /// The live server persists a snapshot (serialised through JSON), to be used by a later
    /// [`Restore::Persisted`].
    Persist,
    /// The live server instance stops. With `graceful` it first calls `shutdown` (clients get
    /// their queued frames and a close 1001); otherwise it crashes (clients see cuts). The next
    /// instance takes over after `downtime`, restored as `restore` says; connections attempted
    /// meanwhile fail.
    Crash {
        /// The state the next instance starts from.
        restore: Restore,
        /// How long no instance answers.
        downtime: Duration,
        /// Shut down cleanly instead of crashing.
        graceful: bool,
    },
    /// Virtual time jumps forward by this much at once (a paused VM): every deadline in
    /// between fires late, all together.
    ClockJump(Duration),
    /// A process stalls for `duration` (a laptop lid, a GC pause, SIGSTOP): it processes no
    /// input and no timer; what arrives meanwhile is handled when it wakes.
    Freeze {
        /// The stalled process.
        target: Target,
        /// For how long.
        duration: Duration,
    },
    /// The client process restarts: its `resume_state()` goes through JSON into
    /// `Client::with_resume_state` (its socket dies with the process).
    RestartClient {
        /// The client.
        client: usize,
    },
}

/// An application action at a scheduled virtual time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The server application publishes `count` tracked `message` events to the client's
    /// session (each carries a unique token `p`).
    Publish {
        /// The client whose session receives them.
        client: usize,
        /// How many.
        count: u32,
    },
    /// The server application publishes `count` tracked `message` events to every session at
    /// once ([`Server::publish_to`](tether_core::server::Server::publish_to); each carries a unique
    /// token `p`, the same in every session).
    Broadcast {
        /// How many.
        count: u32,
    },
    /// The client application sends a request (`send_with_id`, id `c<client>-r<n>`).
    Send {
        /// The client.
        client: usize,
    },
    /// The client application stops its client for good (`disconnect`).
    Disconnect {
        /// The client.
        client: usize,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cut { client } => write!(f, "cut c{client}"),
            Self::HalfOpen { client, direction } => write!(f, "half-open c{client} {direction:?}"),
            Self::Slow {
                client,
                extra,
                duration,
            } => write!(f, "slow c{client} +{extra:?} for {duration:?}"),
            Self::Persist => write!(f, "persist snapshot"),
            Self::Crash {
                restore,
                downtime,
                graceful,
            } => write!(
                f,
                "{} server, restore {restore:?} after {downtime:?}",
                if *graceful { "shut down" } else { "crash" }
            ),
            Self::ClockJump(d) => write!(f, "clock jump {d:?}"),
            Self::Freeze { target, duration } => write!(f, "freeze {target:?} for {duration:?}"),
            Self::RestartClient { client } => write!(f, "restart c{client} from resume state"),
        }
    }
}

impl Sim {
    // ------------------------------------------------------------------------------ faults

    pub(crate) fn apply_fault(&mut self, fault: Fault) {
        self.stats.faults += 1;
        if self.config.trace > 0 {
            self.trace_line(format!("FAULT {fault}"));
        }
        match fault {
            Fault::Cut { client } => {
                if let Some(link) = self.clients.get(client).and_then(|c| c.link) {
                    self.cut_link(link);
                }
            }
            Fault::HalfOpen { client, direction } => {
                if let Some(link) = self.clients.get(client).and_then(|c| c.link) {
                    if let Some(l) = self.links.get_mut(&link) {
                        l.up.silent |= direction.up();
                        l.down.silent |= direction.down();
                        // Neither side can notice while it is frozen: the detection deadline
                        // starts when the later of the two wakes (found by the sim fuzzer).
                        let server_wakes = self
                            .active
                            .and_then(|i| self.instances[i].frozen_until)
                            .unwrap_or(self.now);
                        let client_wakes = self.clients[client].frozen_until.unwrap_or(self.now);
                        let since = self.now.max(server_wakes).max(client_wakes);
                        self.half_open.entry(link).or_insert(since);
                    }
                }
            }
            Fault::Slow {
                client,
                extra,
                duration,
            } => {
                if let Some(c) = self.clients.get_mut(client) {
                    c.slow = Some((self.now + duration, extra));
                }
            }
            Fault::Persist => {
                let Some(server) = self.server() else {
                    return;
                };
                let json = snapshot_json(&server.snapshot(self.instant()));
                self.persisted = Some(Persisted {
                    at: self.now,
                    json,
                    lineage: self.lineage.clone(),
                });
            }
            Fault::Crash {
                restore,
                downtime,
                graceful,
            } => self.crash(restore, downtime, graceful),
            Fault::ClockJump(d) => {
                self.now += d;
                // Frames in flight arrive late and count as fresh signs of life.
                let now = self.now;
                for since in self.half_open.values_mut() {
                    *since = (*since).max(now);
                }
            }
            Fault::Freeze { target, duration } => {
                let until = self.now + duration;
                for since in self.half_open.values_mut() {
                    *since = (*since).max(until);
                }
                match target {
                    Target::Client(c) if c < self.clients.len() => {
                        let sc = &mut self.clients[c];
                        if sc.disconnected_by_app {
                            return;
                        }
                        sc.frozen_until = Some(sc.frozen_until.map_or(until, |u| u.max(until)));
                        let (at, gen) = (sc.frozen_until.unwrap_or(until), sc.gen);
                        self.push(at, Kind::WakeClient(c, gen));
                    }
                    Target::Client(_) => {}
                    Target::Server => {
                        if let Some(i) = self.active {
                            let inst = &mut self.instances[i];
                            inst.frozen_until =
                                Some(inst.frozen_until.map_or(until, |u| u.max(until)));
                            let (at, gen) = (inst.frozen_until.unwrap_or(until), inst.gen);
                            self.push(at, Kind::WakeServer(i, gen));
                            self.server_deadline = None;
                        }
                    }
                }
            }
            Fault::RestartClient { client } => self.restart_client(client),
        }
    }

    fn crash(&mut self, restore: Restore, downtime: Duration, graceful: bool) {
        let Some(i) = self.active else {
            return;
        };
        if self.instances[i].frozen_until.is_some() {
            // A stalled process is killed as it stands: what it has not processed is lost.
            self.instances[i].frozen_until = None;
            self.instances[i].deferred.clear();
        }
        let now = self.instant();
        if graceful {
            if let Some(server) = self.instances[i].server.as_mut() {
                server.shutdown(now);
            }
            if self.stepwise {
                self.instances[i].history.record(("shutdown", now));
            }
            self.drain_server(i);
        }
        let latest = self.instances[i].server.as_ref().map(|s| s.snapshot(now));
        let from = match restore {
            Restore::Latest => latest.map(|snap| Persisted {
                at: self.now,
                json: snapshot_json(&snap),
                lineage: self.lineage.clone(),
            }),
            Restore::Persisted => self.persisted.clone(),
            Restore::Empty => None,
        };
        // Requests whose answer dies with this instance may stay unresolved for good.
        let since = from.as_ref().map(|p| p.at);
        for ((_, rid), (_, answered)) in &self.lineage.requests {
            let lost = match (answered, since) {
                (None, _) | (_, None) => true,
                (Some(t), Some(s)) => *t > s,
            };
            if lost {
                self.orphaned.insert(rid.clone());
            }
        }
        let gen = self.instances[i].gen;
        self.instances[i].server = None;
        self.instances[i].gen += 1;
        self.instances[i].open_conns = 0;
        self.active = None;
        self.server_deadline = None;
        let ids: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.instance == i && l.instance_gen == gen)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(l) = self.links.get_mut(&id) else {
                continue;
            };
            l.server_open = false;
            l.up.queue.clear();
            l.cut = true;
            // A graceful close already on its way reaches the client; a lost one does not.
            let closing_queued = graceful
                && l.down
                    .queue
                    .iter()
                    .any(|p| !p.lost && matches!(p.payload, Payload::Close(..)));
            if !closing_queued {
                l.down.queue.clear();
                if l.client_open {
                    let c = l.client;
                    let at = self.delay(c);
                    self.push(at, Kind::ClientClose(id));
                }
            }
        }
        let next = (i + 1) % self.instances.len();
        self.push(self.now + downtime, Kind::Restore(next, from.map(Box::new)));
    }

    pub(crate) fn restore(&mut self, i: usize, from: Option<Box<Persisted>>) {
        let now = self.instant();
        let mut config = self.config.server.clone();
        config.seed = Some(super::world::drawn_seed(&mut self.app_rng));
        let history = History::start(("restore", &config, from.as_ref().map(|p| &p.json), now));
        let server = match &from {
            Some(p) => match serde_json::from_str::<ServerSnapshot>(&p.json) {
                Ok(snap) => match Server::restore(config, snap, now) {
                    Ok(s) => s,
                    Err(e) => {
                        self.violate(None, format!("restore failed: {e}"));
                        return;
                    }
                },
                Err(e) => {
                    self.violate(None, format!("snapshot JSON does not round-trip: {e}"));
                    return;
                }
            },
            None => Server::new(config, now),
        };
        self.lineage = from.map(|p| p.lineage).unwrap_or_default();
        let inst = &mut self.instances[i];
        inst.server = Some(server);
        if self.stepwise {
            inst.history = history;
        }
        inst.gen += 1;
        inst.frozen_until = None;
        inst.deferred.clear();
        inst.open_conns = 0;
        self.active = Some(i);
        if self.config.trace > 0 {
            self.trace_line(format!("instance s{i} up"));
        }
    }

    fn restart_client(&mut self, c: usize) {
        if c >= self.clients.len() || self.clients[c].disconnected_by_app {
            return;
        }
        let state = self.clients[c].machine.resume_state();
        let json = serde_json::to_string(&state).unwrap_or_default();
        let state: ResumeState = match serde_json::from_str(&json) {
            Ok(s) => s,
            Err(e) => {
                self.violate(Some(c), format!("resume state does not round-trip: {e}"));
                return;
            }
        };
        if let Some(link) = self.clients[c].link.take() {
            // The process dies: the kernel closes its socket after what was already written.
            if let Some(l) = self.links.get_mut(&link) {
                l.client_open = false;
            }
            self.send_up(link, Payload::Close(1006, "process died".into()));
            self.gc_link(link);
        }
        let seed = self.app_rng.next_u64();
        let now = self.instant();
        let sc = &mut self.clients[c];
        sc.config.seed = Some(seed_from_u64(seed));
        sc.gen += 1;
        sc.frozen_until = None;
        sc.deferred.clear();
        sc.armed = None;
        sc.slow = None;
        sc.model.restarted();
        if self.stepwise {
            sc.history = History::start(("restart", &sc.config, &state, now));
        }
        sc.machine = Client::with_resume_state(sc.config.clone(), state, now);
        self.stats.client_inputs += 1;
        self.drain_client(c);
    }

    // ------------------------------------------------------------------------------ actions

    pub(crate) fn apply_action(&mut self, action: Action) {
        match action {
            Action::Publish { client, count } => {
                let Some(i) = self.active else {
                    return;
                };
                if self.instances[i].frozen_until.is_some()
                    || self
                        .clients
                        .get(client)
                        .is_none_or(|c| c.disconnected_by_app)
                {
                    return;
                }
                let Some(session) = self.app_sessions[client].clone() else {
                    return;
                };
                let now = self.instant();
                for _ in 0..count {
                    let token = self.next_token;
                    let inst = &mut self.instances[i];
                    let Some(server) = inst.server.as_mut() else {
                        return;
                    };
                    if self.stepwise {
                        inst.history.record(("publish", now, &session, token));
                    }
                    if server
                        .publish(now, &session, "message", &[("p", json!(token))])
                        .is_err()
                    {
                        break;
                    }
                    self.next_token += 1;
                    self.stats.published += 1;
                }
                self.drain_server(i);
            }
            Action::Broadcast { count } => {
                let Some(i) = self.active else {
                    return;
                };
                if self.instances[i].frozen_until.is_some() {
                    return;
                }
                let now = self.instant();
                let inst = &mut self.instances[i];
                let Some(server) = inst.server.as_mut() else {
                    return;
                };
                for _ in 0..count {
                    let token = self.next_token;
                    if self.stepwise {
                        inst.history.record(("broadcast", now, token));
                    }
                    let fields = [("p", json!(token))];
                    let Ok(sessions) = server.publish_to(now, &Audience::All, "message", &fields)
                    else {
                        break;
                    };
                    self.next_token += 1;
                    self.stats.published += sessions as u64;
                }
                self.drain_server(i);
            }
            Action::Send { client } => {
                let Some(sc) = self.clients.get_mut(client) else {
                    return;
                };
                if sc.frozen_until.is_some() || sc.disconnected_by_app {
                    return;
                }
                let id = format!("c{client}-r{}", sc.next_request);
                sc.next_request += 1;
                let now = self.origin + self.now;
                if self.stepwise {
                    sc.history.record(("send", now, &id));
                }
                if sc
                    .machine
                    .send_with_id(now, id.clone(), json!(format!("hello {id}")))
                    .is_ok()
                {
                    sc.model.requests.insert(id, Req::Pending);
                }
                self.drain_client(client);
            }
            Action::Disconnect { client } => {
                let Some(sc) = self.clients.get_mut(client) else {
                    return;
                };
                if sc.frozen_until.is_some() || sc.disconnected_by_app {
                    return;
                }
                sc.disconnected_by_app = true;
                let now = self.origin + self.now;
                if self.stepwise {
                    sc.history.record(("disconnect", now));
                }
                sc.machine.disconnect(now);
                self.drain_client(client);
            }
        }
    }
}

fn snapshot_json(s: &ServerSnapshot) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
