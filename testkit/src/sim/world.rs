//! The world: N client processes, server instances, the network between them, the
//! applications on both ends, and a virtual clock that jumps to the next thing that happens.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{Client, ClientConfig, ClientInput, Event};
use tether_core::rng::{seed_from_u64, Rng};
use tether_core::server::{Server, ServerConfig, ServerEvent, ServerInput, SessionId};

use super::fault::{Action, Fault};
use super::fingerprint::History;
use super::invariants::{ClientModel, Violation};
use super::link::{Link, NetworkConfig};

/// Everything a [`Sim`] needs up front. [`SimConfig::new`] gives sim-friendly figures: short
/// heartbeats (1 s, reaping after 2 s of silence), short handshake timeouts and backoff, so a
/// few simulated minutes exercise many reconnects.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The one seed: network delays, machine seeds, application timing.
    pub seed: u64,
    /// Latency model.
    pub network: NetworkConfig,
    /// Template of every client's config (its `seed` is replaced per client process).
    pub client: ClientConfig,
    /// Template of every server instance's config (its `seed` is replaced per instance).
    pub server: ServerConfig,
    /// Server instances that take over from one another on a crash (at least 1; one is live at
    /// a time, they share state only through snapshots).
    pub server_instances: usize,
    /// The server application answers each request after a delay uniform in `[0, this]`
    /// (`None`: it never answers; answer yourself with [`Sim::with_server`]).
    pub respond_within: Option<Duration>,
    /// Keep every client event and server event for inspection ([`Sim::events`],
    /// [`Sim::server_events`]).
    pub record_events: bool,
    /// Keep a human-readable trace of the last this-many steps ([`Sim::trace`]); 0: none.
    pub trace: usize,
    /// Check the server's memory bounds ([`tether_core::server::ServerStats`]) after every instant
    /// (costs O(sessions + connections) per instant).
    pub check_server_every_step: bool,
    /// For measurement only: a clock supplied by the caller (the core reads none) with which
    /// the time spent inside server calls is summed into [`SimStats::server_nanos`]. It never
    /// influences the simulation.
    pub stopwatch: Option<fn() -> Instant>,
}

impl SimConfig {
    /// Sim-friendly defaults for `seed`.
    pub fn new(seed: u64) -> Self {
        let client = ClientConfig {
            handshake_timeout: Duration::from_secs(2),
            // The legacy `joined` reply advertises no heartbeat: without a fallback a client on
            // that path would never notice a half-open socket.
            fallback_heartbeat: Some(Duration::from_secs(1)),
            backoff: BackoffConfig {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(3),
                jitter: Jitter::Full,
                ..BackoffConfig::default()
            },
            ..ClientConfig::new("sim")
        };
        let server = ServerConfig {
            handshake_timeout: Duration::from_secs(2),
            heartbeat_interval: Some(Duration::from_secs(1)),
            missed_beats: 2,
            session_ttl: Duration::from_secs(600),
            recovery_session_events: 256,
            ..ServerConfig::default()
        };
        Self {
            seed,
            network: NetworkConfig::default(),
            client,
            server,
            server_instances: 1,
            respond_within: Some(Duration::from_millis(300)),
            record_events: false,
            trace: 0,
            check_server_every_step: true,
            stopwatch: None,
        }
    }
}

/// A client of the simulation (its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Distinct virtual instants processed.
    pub instants: u64,
    /// Inputs fed to client machines (socket events, frames, timers).
    pub client_inputs: u64,
    /// Inputs fed to server machines (connects, frames, sent reports, closes, timers).
    pub server_inputs: u64,
    /// Frames the servers wrote.
    pub server_frames: u64,
    /// Bytes of those frames.
    pub server_bytes: u64,
    /// Events the servers emitted to their application.
    pub server_events: u64,
    /// Real nanoseconds spent in server calls (only with [`SimConfig::stopwatch`]).
    pub server_nanos: u64,
    /// Sockets the clients asked for (`Transmit::Open`).
    pub opens: u64,
    /// Requests handed to the server application.
    pub requests_to_app: u64,
    /// Sessions the servers created (`SessionCreated`).
    pub sessions_created: u64,
    /// Sessions the servers re-attached (`SessionResumed`).
    pub sessions_resumed: u64,
    /// Tracked events published by the server application.
    pub published: u64,
    /// Connections the server reaped for silence (close 4002).
    pub reaped: u64,
    /// Connections the server closed as slow consumers (close 1013).
    pub slow_consumers: u64,
    /// Connections displaced by a resume of their session elsewhere (close 4009).
    pub taken_over: u64,
    /// Faults applied.
    pub faults: u64,
    /// Tracked events delivered to client applications.
    pub delivered: u64,
    /// Events reported lost to client applications.
    pub lost: u64,
    /// `ServerReset` events.
    pub resets: u64,
    /// `SessionReplaced` events.
    pub replaced: u64,
}

/// A persisted server state: the snapshot as JSON, and what the application had seen then.
#[derive(Debug, Clone)]
pub(crate) struct Persisted {
    pub(crate) at: Duration,
    pub(crate) json: String,
    pub(crate) lineage: Lineage,
}

/// What the server application has seen in one line of server state (rolled back with it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Lineage {
    /// (session, request id) → how many times it reached the application, and when answered.
    pub(crate) requests: BTreeMap<(String, String), (u32, Option<Duration>)>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Connect(u64),
    DeliverUp(u64, u64),
    DeliverDown(u64, u64),
    ClientClose(u64),
    ServerClose(u64),
    ClientTimer(usize, u32),
    Respond {
        instance: usize,
        gen: u32,
        session: SessionId,
        request_id: String,
    },
    WakeClient(usize, u32),
    WakeServer(usize, u32),
    Restore(usize, Option<Box<Persisted>>),
}

#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) at: Duration,
    pub(crate) seq: u64,
    pub(crate) kind: Kind,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(crate) struct SimClient {
    pub(crate) machine: Client,
    pub(crate) config: ClientConfig,
    /// Process incarnation.
    pub(crate) gen: u32,
    /// The socket the client currently has (asked for and not closed on its side).
    pub(crate) link: Option<u64>,
    pub(crate) model: ClientModel,
    pub(crate) frozen_until: Option<Duration>,
    pub(crate) deferred: Vec<(u64, ClientInput)>,
    pub(crate) armed: Option<Duration>,
    pub(crate) disconnected_by_app: bool,
    pub(crate) slow: Option<(Duration, Duration)>,
    pub(crate) next_request: u64,
    pub(crate) log: Vec<Event>,
    /// What the machine was built from and fed (kept only in [`Sim::stepwise`] mode).
    pub(crate) history: History,
}

pub(crate) struct Instance {
    pub(crate) server: Option<Server>,
    pub(crate) gen: u32,
    pub(crate) frozen_until: Option<Duration>,
    pub(crate) deferred: Vec<ServerInput>,
    /// Connections this incarnation knows (connected, not yet reported closed).
    pub(crate) open_conns: usize,
    /// What the machine was built from and fed (kept only in [`Sim::stepwise`] mode).
    pub(crate) history: History,
}

/// The deterministic simulator: client machines and server instances over an in-memory
/// network with a virtual clock. See the [module docs](super) for an example.
pub struct Sim {
    pub(crate) origin: Instant,
    pub(crate) now: Duration,
    pub(crate) config: SimConfig,
    pub(crate) net_rng: Rng,
    pub(crate) app_rng: Rng,
    pub(crate) heap: BinaryHeap<Reverse<Item>>,
    pub(crate) seq: u64,
    pub(crate) faults: Vec<(Duration, Fault)>,
    pub(crate) next_fault: usize,
    pub(crate) actions: Vec<(Duration, Action)>,
    pub(crate) next_action: usize,
    pub(crate) clients: Vec<SimClient>,
    pub(crate) instances: Vec<Instance>,
    pub(crate) active: Option<usize>,
    pub(crate) links: BTreeMap<u64, Link>,
    pub(crate) next_link: u64,
    pub(crate) persisted: Option<Persisted>,
    pub(crate) lineage: Lineage,
    pub(crate) app_sessions: Vec<Option<SessionId>>,
    pub(crate) orphaned: BTreeSet<String>,
    pub(crate) pending_responds: usize,
    pub(crate) next_token: u64,
    pub(crate) server_deadline: Option<Duration>,
    pub(crate) stats: SimStats,
    pub(crate) opens: Vec<Duration>,
    pub(crate) server_log: Vec<ServerEvent>,
    pub(crate) trace: VecDeque<String>,
    pub(crate) violation: Option<Violation>,
    /// Half-open links → since when (pushed later by freezes): both sides must stop using
    /// them within the heartbeat bound.
    pub(crate) half_open: BTreeMap<u64, Duration>,
    /// Driven step by step by the exhaustive explorer ([`crate::exhaustive`]): messages take
    /// no time and wait in their pipes, and timers wait in the machines' deadlines, until the
    /// explorer picks which happens next; machine histories are kept for fingerprints.
    pub(crate) stepwise: bool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("clients", &self.clients.len())
            .field("links", &self.links.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulation whose virtual time starts at `origin` (take it once from the real clock in
    /// a test, or any `Instant`), with one live server instance and no clients yet.
    pub fn new(origin: Instant, config: SimConfig) -> Self {
        let mut root = Rng::from_u64(config.seed);
        let net_rng = root.fork();
        let mut app_rng = root.fork();
        let n = config.server_instances.max(1);
        let mut instances: Vec<Instance> = (0..n)
            .map(|_| Instance {
                server: None,
                gen: 0,
                frozen_until: None,
                deferred: Vec::new(),
                open_conns: 0,
                history: History::default(),
            })
            .collect();
        let mut server_config = config.server.clone();
        server_config.seed = Some(drawn_seed(&mut app_rng));
        instances[0].server = Some(Server::new(server_config, origin));
        instances[0].gen = 1;
        Self {
            origin,
            now: Duration::ZERO,
            config,
            net_rng,
            app_rng,
            heap: BinaryHeap::new(),
            seq: 0,
            faults: Vec::new(),
            next_fault: 0,
            actions: Vec::new(),
            next_action: 0,
            clients: Vec::new(),
            instances,
            active: Some(0),
            links: BTreeMap::new(),
            next_link: 1,
            persisted: None,
            lineage: Lineage::default(),
            app_sessions: Vec::new(),
            orphaned: BTreeSet::new(),
            pending_responds: 0,
            next_token: 1,
            server_deadline: None,
            stats: SimStats::default(),
            opens: Vec::new(),
            server_log: Vec::new(),
            trace: VecDeque::new(),
            violation: None,
            half_open: BTreeMap::new(),
            stepwise: false,
        }
    }

    // ------------------------------------------------------------------------------ setup

    /// Adds a client built from the config template; it asks for a socket at once.
    pub fn add_client(&mut self) -> ClientId {
        let config = self.config.client.clone();
        self.add_client_with(config)
    }

    /// Adds a client with its own config (its `seed` is kept as given).
    pub fn add_client_with(&mut self, config: ClientConfig) -> ClientId {
        let id = self.clients.len();
        let mut config = config;
        if config.seed.is_none() {
            config.seed = Some(seed_from_u64(self.app_rng.next_u64()));
        }
        let machine = Client::new(config.clone(), self.instant());
        let backoff_max = config.backoff.max;
        self.clients.push(SimClient {
            machine,
            config,
            gen: 0,
            link: None,
            model: ClientModel::new(backoff_max),
            frozen_until: None,
            deferred: Vec::new(),
            armed: None,
            disconnected_by_app: false,
            slow: None,
            next_request: 0,
            log: Vec::new(),
            history: History::default(),
        });
        if self.stepwise {
            self.clients[id].history = History::start(("new", &self.clients[id].config, self.now));
        }
        self.app_sessions.push(None);
        self.drain_client(id);
        ClientId(id)
    }

    /// Schedules a fault at virtual time `at` (since the origin). Entries at the same time run
    /// in the order they were scheduled.
    pub fn schedule(&mut self, at: Duration, fault: Fault) {
        let i = self.faults[self.next_fault..].partition_point(|(t, _)| *t <= at) + self.next_fault;
        self.faults.insert(i, (at, fault));
    }

    /// Schedules an application action at virtual time `at` (since the origin).
    pub fn schedule_action(&mut self, at: Duration, action: Action) {
        let i =
            self.actions[self.next_action..].partition_point(|(t, _)| *t <= at) + self.next_action;
        self.actions.insert(i, (at, action));
    }

    // ------------------------------------------------------------------------------ queries

    /// The current virtual time as an `Instant`.
    pub fn now(&self) -> Instant {
        self.instant()
    }

    /// Virtual time elapsed since the origin.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// The client machine.
    pub fn client(&self, id: ClientId) -> &Client {
        &self.clients[id.0].machine
    }

    /// How many clients there are.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// The live server instance's machine, if one is up.
    pub fn server(&self) -> Option<&Server> {
        self.active.and_then(|i| self.instances[i].server.as_ref())
    }

    /// Events the client emitted (only with `record_events`), across its process restarts.
    pub fn events(&self, id: ClientId) -> &[Event] {
        &self.clients[id.0].log
    }

    /// Events the servers emitted (only with `record_events`).
    pub fn server_events(&self) -> &[ServerEvent] {
        &self.server_log
    }

    /// Virtual times at which clients asked for a socket (`Transmit::Open`).
    pub fn opens(&self) -> &[Duration] {
        &self.opens
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        let mut s = self.stats;
        for c in &self.clients {
            s.delivered += c.model.stats.delivered;
            s.lost += c.model.stats.lost;
            s.resets += c.model.stats.resets;
            s.replaced += c.model.stats.replaced;
        }
        s
    }

    /// The last lines of the trace (only with `trace`).
    pub fn trace(&self) -> impl Iterator<Item = &str> {
        self.trace.iter().map(String::as_str)
    }

    // ------------------------------------------------------------------------------ commands

    /// Runs a command on a client machine at the current virtual time, then drains its outputs
    /// through the network and the checks (never mutate a machine without draining it).
    pub fn with_client<R>(&mut self, id: ClientId, f: impl FnOnce(&mut Client, Instant) -> R) -> R {
        let now = self.instant();
        if self.stepwise {
            self.clients[id.0].history.record(History::opaque());
        }
        let r = f(&mut self.clients[id.0].machine, now);
        self.drain_client(id.0);
        r
    }

    /// Runs a command on the live server machine at the current virtual time (e.g. `publish`,
    /// `respond`), then drains its outputs. `None` if no instance is up (or it is frozen).
    pub fn with_server<R>(&mut self, f: impl FnOnce(&mut Server, Instant) -> R) -> Option<R> {
        let now = self.instant();
        let i = self
            .active
            .filter(|&i| self.instances[i].frozen_until.is_none())?;
        if self.stepwise {
            self.instances[i].history.record(History::opaque());
        }
        let r = f(self.instances[i].server.as_mut()?, now);
        self.drain_server(i);
        Some(r)
    }

    /// Applies an action now.
    pub fn act(&mut self, action: Action) {
        self.apply_action(action);
    }

    /// Applies a fault now.
    pub fn inject(&mut self, fault: Fault) {
        self.apply_fault(fault);
    }

    // ------------------------------------------------------------------------------ running

    /// Runs until virtual time `until` (since the origin), checking the invariants after every
    /// step. Returns the first violation.
    pub fn run_until(&mut self, until: Duration) -> Result<(), Violation> {
        self.take_violation()?;
        while let Some(next) = self.next_time() {
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            self.process_instant()?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), Violation> {
        self.run_until(self.now + d)
    }

    /// Ends the run: drops the faults and actions not yet due, heals the network (half-open
    /// sockets are cut, slowdowns end, frozen processes wake), lets time run until every
    /// client is connected and nothing is in flight (at most `limit`), then checks the end
    /// state: each connected client has accounted for every event its session holds (delivered
    /// with the same content, or reported lost), every request it sent is resolved (unless its
    /// answer died with a crashed instance), and each client stopped by its application emitted
    /// exactly one `Closed`.
    pub fn settle(&mut self, limit: Duration) -> Result<(), Violation> {
        self.take_violation()?;
        self.faults.truncate(self.next_fault);
        self.actions.truncate(self.next_action);
        let half_open: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, l)| l.half_open())
            .map(|(id, _)| *id)
            .collect();
        for id in half_open {
            self.cut_link(id);
        }
        for c in 0..self.clients.len() {
            self.clients[c].slow = None;
            if self.clients[c].frozen_until.is_some() {
                self.clients[c].frozen_until = Some(self.now);
                let gen = self.clients[c].gen;
                self.push(self.now, Kind::WakeClient(c, gen));
            }
        }
        if let Some(i) = self.active {
            if self.instances[i].frozen_until.is_some() {
                self.instances[i].frozen_until = Some(self.now);
                let gen = self.instances[i].gen;
                self.push(self.now, Kind::WakeServer(i, gen));
            }
        }
        let deadline = self.now + limit;
        self.run_until_quiet(deadline)?;
        // Replay phases of v1 clients end at the next untracked frame: let a heartbeat by.
        let grace = self
            .config
            .server
            .heartbeat_interval
            .unwrap_or_default()
            .mul_f64(1.5)
            + Duration::from_secs(1);
        self.run_for(grace)?;
        self.run_until_quiet(self.now + limit)?;
        self.check_end()
    }

    fn run_until_quiet(&mut self, deadline: Duration) -> Result<(), Violation> {
        loop {
            if self.quiet() {
                return Ok(());
            }
            match self.next_time() {
                Some(next) if next <= deadline => {
                    self.now = self.now.max(next);
                    self.process_instant()?;
                }
                _ => {
                    return Err(self
                        .violation_now(None, format!("did not settle: {}", self.why_not_quiet())));
                }
            }
        }
    }

    pub(crate) fn instant(&self) -> Instant {
        self.origin + self.now
    }

    pub(crate) fn push(&mut self, at: Duration, kind: Kind) {
        if self.stepwise
            && matches!(
                kind,
                Kind::DeliverUp(..) | Kind::DeliverDown(..) | Kind::ClientTimer(..)
            )
        {
            return; // in the pipes and the deadlines, for the explorer to pick
        }
        self.seq += 1;
        self.heap.push(Reverse(Item {
            at,
            seq: self.seq,
            kind,
        }));
    }

    pub(crate) fn violation_now(&self, client: Option<usize>, what: String) -> Violation {
        Violation {
            at: self.now,
            client,
            what,
        }
    }

    /// Records the first violation; the run stops at the end of the current step.
    pub(crate) fn violate(&mut self, client: Option<usize>, what: String) {
        if self.config.trace > 0 {
            self.trace_line(format!("VIOLATION {what}"));
        }
        if self.violation.is_none() {
            self.violation = Some(self.violation_now(client, what));
        }
    }

    fn take_violation(&mut self) -> Result<(), Violation> {
        match self.violation.clone() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    pub(crate) fn trace_line(&mut self, line: String) {
        if self.trace.len() >= self.config.trace {
            self.trace.pop_front();
        }
        let t = self.now;
        self.trace
            .push_back(format!("{:>10.3}s {line}", t.as_secs_f64()));
    }

    fn next_time(&self) -> Option<Duration> {
        let half_open = self
            .half_open
            .values()
            .min()
            .map(|since| *since + self.half_open_limit() + Duration::from_nanos(1));
        [
            self.heap.peek().map(|r| r.0.at),
            self.faults.get(self.next_fault).map(|f| f.0),
            self.actions.get(self.next_action).map(|a| a.0),
            self.server_deadline,
            half_open,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Everything due at `self.now`, then the per-instant checks.
    fn process_instant(&mut self) -> Result<(), Violation> {
        self.stats.instants += 1;
        loop {
            let mut progressed = false;
            while let Some((at, _)) = self.faults.get(self.next_fault) {
                if *at > self.now {
                    break;
                }
                let fault = self.faults[self.next_fault].1.clone();
                self.next_fault += 1;
                self.apply_fault(fault);
                progressed = true;
            }
            while let Some((at, _)) = self.actions.get(self.next_action) {
                if *at > self.now {
                    break;
                }
                let action = self.actions[self.next_action].1.clone();
                self.next_action += 1;
                self.apply_action(action);
                progressed = true;
            }
            while self.heap.peek().is_some_and(|r| r.0.at <= self.now) {
                if let Some(Reverse(item)) = self.heap.pop() {
                    self.handle_item(item.kind);
                    progressed = true;
                }
            }
            if self.server_deadline.is_some_and(|d| d <= self.now) {
                self.server_timeout();
                progressed = true;
            }
            self.take_violation()?;
            if !progressed {
                break;
            }
        }
        self.after_instant();
        self.take_violation()
    }

    /// Whether every live client is connected to the live instance and nothing is in flight.
    pub(crate) fn quiet(&self) -> bool {
        self.why_not_quiet().is_empty()
    }

    fn why_not_quiet(&self) -> String {
        let Some(i) = self.active else {
            return "no live server instance".into();
        };
        if self.instances[i].frozen_until.is_some() {
            return "server frozen".into();
        }
        if self.pending_responds > 0 {
            return format!("{} answers pending", self.pending_responds);
        }
        for (c, sc) in self.clients.iter().enumerate() {
            if sc.disconnected_by_app {
                continue;
            }
            if sc.machine.is_closed() {
                return format!("client c{c} stopped");
            }
            if !sc.machine.is_connected() || sc.frozen_until.is_some() {
                return format!("client c{c} not connected");
            }
            let attached = sc
                .link
                .and_then(|l| self.links.get(&l))
                .is_some_and(|l| l.server_open && l.instance == i);
            if !attached {
                return format!("client c{c} believes it is connected on a dead socket");
            }
        }
        if let Some((id, _)) = self.links.iter().find(|(_, l)| l.busy()) {
            return format!("link {id} busy");
        }
        String::new()
    }
}

/// A server seed drawn from `rng` (a simulated process's fresh OS entropy).
pub(crate) fn drawn_seed(rng: &mut Rng) -> [u8; 32] {
    let mut seed = [0; 32];
    rng.fill_bytes(&mut seed);
    seed
}
