//! The thundering herd: many connected clients, the server instance dies, a standby restores
//! its snapshot at once, and everyone reconnects. Measures how jitter spreads the reconnects
//! and how much server work each reconnect costs.

use std::time::{Duration, Instant};

use tether_core::backoff::{BackoffConfig, Jitter};

use super::fault::{Fault, Restore};
use super::invariants::Violation;
use super::link::NetworkConfig;
use super::world::{Sim, SimConfig, SimStats};

/// Shape of a herd run.
#[derive(Debug, Clone)]
pub struct HerdConfig {
    /// How many clients.
    pub clients: usize,
    /// Clients per agent id (presence lists, carried by every v2 `hello_ok`, are per agent).
    pub clients_per_agent: usize,
    /// The seed.
    pub seed: u64,
    /// The clients' reconnect schedule.
    pub backoff: BackoffConfig,
    /// Width of the windows reconnects are counted in.
    pub window: Duration,
    /// Time to connect everyone before the restart (a completed handshake resets each
    /// client's schedule, so the first retry after the restart waits `backoff.initial`,
    /// jittered).
    pub warmup: Duration,
    /// Time given to everyone to reconnect after the restart.
    pub observe: Duration,
    /// Latency model.
    pub network: NetworkConfig,
    /// For measurement only: a real clock supplied by the caller, to time the server's calls
    /// ([`HerdReport::server_time_per_reconnect`]).
    pub stopwatch: Option<fn() -> Instant>,
}

impl HerdConfig {
    /// `clients` clients, 10 per agent, full jitter over an initial 1 s, 100 ms windows.
    pub fn new(clients: usize) -> Self {
        Self {
            clients,
            clients_per_agent: 10,
            seed: 1,
            backoff: BackoffConfig {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                jitter: Jitter::Full,
                ..BackoffConfig::default()
            },
            window: Duration::from_millis(100),
            warmup: Duration::from_secs(3),
            observe: Duration::from_secs(8),
            network: NetworkConfig {
                spike_probability: 0.0,
                ..NetworkConfig::default()
            },
            stopwatch: None,
        }
    }
}

/// What a herd run measured (from the restart on).
#[derive(Debug, Clone, PartialEq)]
pub struct HerdReport {
    /// Clients in the herd.
    pub clients: usize,
    /// Sockets asked for after the restart (`Transmit::Open`), retries included.
    pub reconnects: u64,
    /// Sessions resumed by the new instance.
    pub resumed: u64,
    /// Sessions created by the new instance (a resume that failed).
    pub created: u64,
    /// Reconnect attempts per window, from the restart on.
    pub per_window: Vec<u64>,
    /// The window width.
    pub window: Duration,
    /// Counters between the restart and the end.
    pub work: SimStats,
}

impl HerdReport {
    /// The busiest window.
    pub fn max_per_window(&self) -> u64 {
        self.per_window.iter().copied().max().unwrap_or(0)
    }

    fn per_resume(&self, x: u64) -> f64 {
        x as f64 / self.resumed.max(1) as f64
    }

    /// Frames the server wrote per resumed session.
    pub fn frames_per_reconnect(&self) -> f64 {
        self.per_resume(self.work.server_frames)
    }

    /// Bytes the server wrote per resumed session.
    pub fn bytes_per_reconnect(&self) -> f64 {
        self.per_resume(self.work.server_bytes)
    }

    /// Inputs the server handled (connects, frames, sent reports, closes, timers) per resumed
    /// session.
    pub fn inputs_per_reconnect(&self) -> f64 {
        self.per_resume(self.work.server_inputs)
    }

    /// Events the server emitted per resumed session.
    pub fn events_per_reconnect(&self) -> f64 {
        self.per_resume(self.work.server_events)
    }

    /// Real time spent handling server inputs per resumed session (zero without a stopwatch).
    pub fn server_time_per_reconnect(&self) -> Duration {
        Duration::from_nanos(self.per_resume(self.work.server_nanos) as u64)
    }
}

fn diff(a: SimStats, b: SimStats) -> SimStats {
    SimStats {
        instants: b.instants - a.instants,
        client_inputs: b.client_inputs - a.client_inputs,
        server_inputs: b.server_inputs - a.server_inputs,
        server_frames: b.server_frames - a.server_frames,
        server_bytes: b.server_bytes - a.server_bytes,
        server_events: b.server_events - a.server_events,
        server_nanos: b.server_nanos - a.server_nanos,
        opens: b.opens - a.opens,
        requests_to_app: b.requests_to_app - a.requests_to_app,
        sessions_created: b.sessions_created - a.sessions_created,
        sessions_resumed: b.sessions_resumed - a.sessions_resumed,
        published: b.published - a.published,
        reaped: b.reaped - a.reaped,
        slow_consumers: b.slow_consumers - a.slow_consumers,
        taken_over: b.taken_over - a.taken_over,
        faults: b.faults - a.faults,
        delivered: b.delivered - a.delivered,
        lost: b.lost - a.lost,
        resets: b.resets - a.resets,
        replaced: b.replaced - a.replaced,
    }
}

/// Runs a herd: connect everyone, crash the instance, restore its snapshot on the standby at
/// once, and count. Every client event is still checked against the model. Fails if a client
/// is not connected before the restart or has not reconnected by the end.
pub fn run_herd(origin: Instant, herd: &HerdConfig) -> Result<HerdReport, Violation> {
    let mut config = SimConfig::new(herd.seed);
    config.network = herd.network.clone();
    config.server_instances = 2;
    config.respond_within = None;
    config.check_server_every_step = false;
    config.stopwatch = herd.stopwatch;
    config.server.heartbeat_interval = Some(Duration::from_secs(60));
    config.server.session_ttl = Duration::from_secs(3600);
    config.server.handshake_timeout = Duration::from_secs(10);
    config.server.max_connections = herd.clients * 2 + 16;
    config.server.max_sessions = herd.clients * 2 + 16;
    config.client.backoff = herd.backoff.clone();
    config.client.handshake_timeout = Duration::from_secs(10);
    let template = config.client.clone();
    let mut sim = Sim::new(origin, config);
    for c in 0..herd.clients {
        let mut cc = template.clone();
        cc.agent_id = format!("agent-{}", c / herd.clients_per_agent.max(1));
        sim.add_client_with(cc);
    }
    sim.run_until(herd.warmup)?;
    let unconnected = |sim: &Sim| {
        (0..sim.clients.len())
            .filter(|&c| !sim.clients[c].machine.is_connected())
            .count()
    };
    let n = unconnected(&sim);
    if n > 0 {
        return Err(sim.violation_now(
            None,
            format!("{n} clients not connected before the restart"),
        ));
    }
    let before = sim.stats();
    let opens_before = sim.opens().len();
    let t0 = sim.elapsed();
    sim.inject(Fault::Crash {
        restore: Restore::Latest,
        downtime: Duration::ZERO,
        graceful: false,
    });
    sim.run_for(herd.observe)?;
    let n = unconnected(&sim);
    if n > 0 {
        return Err(sim.violation_now(
            None,
            format!("{n} clients not reconnected after the restart"),
        ));
    }
    let work = diff(before, sim.stats());
    let window = herd.window.max(Duration::from_millis(1));
    let slots = (herd.observe.as_nanos() / window.as_nanos()) as usize + 1;
    let mut per_window = vec![0u64; slots];
    for t in &sim.opens()[opens_before..] {
        let i = ((*t - t0).as_nanos() / window.as_nanos()) as usize;
        if let Some(w) = per_window.get_mut(i) {
            *w += 1;
        }
    }
    Ok(HerdReport {
        clients: herd.clients,
        reconnects: work.opens,
        resumed: work.sessions_resumed,
        created: work.sessions_created,
        per_window,
        window,
        work,
    })
}
