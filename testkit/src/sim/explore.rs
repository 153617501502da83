//! Seeded scenarios: one `u64` gives a whole run (configs, workload, fault schedule); a failing
//! run is shrunk by removing faults one at a time while it still fails, and reported with a
//! one-line replay command.

use std::fmt;
use std::time::{Duration, Instant};

use tether_core::backoff::Jitter;
use tether_core::client::{ClientConfig, HandshakeMode};
use tether_core::rng::seed_from_u64;
use tether_core::rng::Rng;
use tether_core::version::VersionRange;

use super::fault::{Action, Fault, Restore, Target};
use super::invariants::Violation;
use super::link::Direction;
use super::world::{Sim, SimConfig, SimStats};

/// Environment variable the replay test reads: the seed to replay.
pub const SEED_ENV: &str = "TETHER_SIM_SEED";
/// Environment variable the replay test reads: the fault indices to keep (a shrunk schedule),
/// comma-separated.
pub const FAULTS_ENV: &str = "TETHER_SIM_FAULTS";

/// The command that replays `seed` (with only the faults `kept`, if given) with a trace.
pub fn replay_command(seed: u64, kept: Option<&[usize]>) -> String {
    let faults = kept.map_or(String::new(), |k| {
        let list: Vec<String> = k.iter().map(usize::to_string).collect();
        format!("{FAULTS_ENV}={} ", list.join(","))
    });
    format!(
        "{SEED_ENV}={seed} {faults}cargo test -p tether-testkit --test sim_seeds -- replay \
         --nocapture"
    )
}

/// How big generated scenarios are.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Fewest clients.
    pub min_clients: usize,
    /// Most clients.
    pub max_clients: usize,
    /// Shortest faulty phase.
    pub min_duration: Duration,
    /// Longest faulty phase.
    pub max_duration: Duration,
    /// Most faults in a schedule.
    pub max_faults: usize,
    /// Allow [`Restore::Persisted`] (a restart that loses the last writes).
    pub lossy_restores: bool,
}

impl Default for Profile {
    /// Small scenarios for thousands of seeds per CI run: 2–4 clients, 10–30 s of faults
    /// (then settling), up to 8 faults.
    fn default() -> Self {
        Self {
            min_clients: 2,
            max_clients: 4,
            min_duration: Duration::from_secs(10),
            max_duration: Duration::from_secs(30),
            max_faults: 8,
            lossy_restores: true,
        }
    }
}

/// One run, fully determined by its seed: configs, client configs, workload and faults.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed it was generated from.
    pub seed: u64,
    /// The world's config.
    pub config: SimConfig,
    /// One config per client.
    pub clients: Vec<ClientConfig>,
    /// Length of the faulty phase (faults and actions happen before it ends).
    pub duration: Duration,
    /// Most virtual time allowed to settle afterwards.
    pub settle_limit: Duration,
    /// The fault schedule, in time order.
    pub faults: Vec<(Duration, Fault)>,
    /// The application workload, in time order.
    pub actions: Vec<(Duration, Action)>,
}

/// What a passing run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Counters of the run.
    pub stats: SimStats,
    /// Virtual time at the end.
    pub elapsed: Duration,
}

/// A failing seed: the violation, the shrunk schedule and how to replay both.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// What broke in the full run.
    pub violation: Violation,
    /// The full fault schedule.
    pub faults: Vec<(Duration, Fault)>,
    /// Indices (into `faults`) of the smallest schedule found that still fails.
    pub kept: Vec<usize>,
    /// What broke with only the kept faults.
    pub shrunk_violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sim seed {} failed: {}", self.seed, self.violation)?;
        writeln!(f, "  replay: {}", replay_command(self.seed, None))?;
        writeln!(
            f,
            "  shrunk from {} to {} fault(s):",
            self.faults.len(),
            self.kept.len()
        )?;
        for &i in &self.kept {
            let (at, fault) = &self.faults[i];
            writeln!(f, "    [{i}] at {:.3}s: {fault}", at.as_secs_f64())?;
        }
        writeln!(f, "  shrunk run failed: {}", self.shrunk_violation)?;
        write!(
            f,
            "  replay shrunk: {}",
            replay_command(self.seed, Some(&self.kept))
        )
    }
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[(rng.next_u64() % xs.len() as u64) as usize]
}

fn between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    lo + hi.saturating_sub(lo).mul_f64(rng.unit_f64())
}

fn chance(rng: &mut Rng, p: f64) -> bool {
    rng.unit_f64() < p
}

impl Scenario {
    /// The scenario of `seed` with the default [`Profile`].
    pub fn generate(seed: u64) -> Self {
        Self::generate_with(seed, &Profile::default())
    }

    /// The scenario of `seed` sized by `profile`.
    pub fn generate_with(seed: u64, profile: &Profile) -> Self {
        let mut root = Rng::from_u64(seed ^ 0x05EE_D0F7_E7E4);
        let mut cfg_rng = root.fork();
        let mut work_rng = root.fork();
        let mut fault_rng = root.fork();
        // Drawn last: what the other streams choose stays as it was before these choices.
        let mut window_rng = root.fork();

        let mut config = SimConfig::new(seed);
        config.server.recovery_session_events = pick(&mut cfg_rng, &[8, 32, 256]);
        config.server.max_queued_frames = pick(&mut cfg_rng, &[4, 64, 1000]);
        config.server.session_ttl = pick(
            &mut cfg_rng,
            &[Duration::from_secs(20), Duration::from_secs(600)],
        );
        config.server_instances = pick(&mut cfg_rng, &[1, 2]);
        config.server.heartbeat_interval = Some(pick(
            &mut cfg_rng,
            &[
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4),
            ],
        ));
        config.client.fallback_heartbeat = config.server.heartbeat_interval;
        config.network.max_delay = pick(
            &mut cfg_rng,
            &[
                Duration::from_millis(5),
                Duration::from_millis(40),
                Duration::from_millis(150),
            ],
        );
        config.client.backoff.jitter = pick(
            &mut cfg_rng,
            &[
                Jitter::Full,
                Jitter::Proportional(0.2),
                Jitter::Decorrelated,
            ],
        );
        config.client.backoff.initial = between(
            &mut cfg_rng,
            Duration::from_millis(50),
            Duration::from_millis(500),
        );
        config.client.backoff.max =
            between(&mut cfg_rng, Duration::from_secs(1), Duration::from_secs(4));
        // Short windows make events age out under cut, frozen and slow clients.
        config.server.recovery_window = pick(
            &mut window_rng,
            &[
                Duration::from_secs(2),
                Duration::from_secs(8),
                Duration::from_secs(120),
            ],
        );

        let span = (profile.max_clients.max(profile.min_clients) - profile.min_clients) as u64;
        let n = profile.min_clients + (cfg_rng.next_u64() % (span + 1)) as usize;
        let clients: Vec<ClientConfig> = (0..n)
            .map(|_| {
                let mut c = config.client.clone();
                c.seed = Some(seed_from_u64(cfg_rng.next_u64() | 1));
                if chance(&mut cfg_rng, 0.25) {
                    c.versions = VersionRange::V1_ONLY;
                }
                if chance(&mut cfg_rng, 0.15) {
                    c.handshake = HandshakeMode::Join;
                }
                c.resend_unanswered = !chance(&mut cfg_rng, 0.15);
                c
            })
            .collect();
        let duration = between(&mut cfg_rng, profile.min_duration, profile.max_duration);

        let mut actions = Vec::new();
        for c in 0..n {
            let mut t = Duration::ZERO;
            loop {
                t += between(
                    &mut work_rng,
                    Duration::from_millis(100),
                    Duration::from_secs(3),
                );
                if t >= duration {
                    break;
                }
                let count = 1 + (work_rng.next_u64() % 4) as u32;
                actions.push((t, Action::Publish { client: c, count }));
            }
            let mut t = Duration::ZERO;
            loop {
                t += between(
                    &mut work_rng,
                    Duration::from_millis(500),
                    Duration::from_secs(8),
                );
                if t >= duration {
                    break;
                }
                actions.push((t, Action::Send { client: c }));
            }
        }
        // Events published to every session at once (stored once, numbered per session).
        let mut t = Duration::ZERO;
        loop {
            t += between(
                &mut window_rng,
                Duration::from_millis(500),
                Duration::from_secs(6),
            );
            if t >= duration {
                break;
            }
            let count = 1 + (window_rng.next_u64() % 4) as u32;
            actions.push((t, Action::Broadcast { count }));
        }
        if chance(&mut work_rng, 0.1) {
            let c = (work_rng.next_u64() % n as u64) as usize;
            let t = between(&mut work_rng, Duration::ZERO, duration);
            actions.push((t, Action::Disconnect { client: c }));
        }
        actions.sort_by_key(|a| a.0);

        let count = (fault_rng.next_u64() % (profile.max_faults as u64 + 1)) as usize;
        let mut faults: Vec<(Duration, Fault)> = (0..count)
            .map(|_| {
                let at = between(&mut fault_rng, Duration::from_millis(500), duration);
                (at, random_fault(&mut fault_rng, n, profile))
            })
            .collect();
        faults.sort_by_key(|f| f.0);

        Self {
            seed,
            config,
            clients,
            duration,
            settle_limit: Duration::from_secs(120),
            faults,
            actions,
        }
    }

    /// The same scenario with only the faults at `indices` (a shrunk schedule).
    pub fn keep_faults(&self, indices: &[usize]) -> Self {
        let mut s = self.clone();
        s.faults = indices
            .iter()
            .filter_map(|&i| self.faults.get(i).cloned())
            .collect();
        s
    }

    /// Builds the world for this scenario (clients added, schedules loaded), ready to run.
    pub fn build(&self, origin: Instant) -> Sim {
        let mut sim = Sim::new(origin, self.config.clone());
        for c in &self.clients {
            sim.add_client_with(c.clone());
        }
        for (at, f) in &self.faults {
            sim.schedule(*at, f.clone());
        }
        for (at, a) in &self.actions {
            sim.schedule_action(*at, a.clone());
        }
        sim
    }

    /// Runs the faulty phase, then settles and checks the end state.
    pub fn run(&self, origin: Instant) -> Result<RunReport, Violation> {
        let mut sim = self.build(origin);
        run_built(&mut sim, self)
    }
}

/// Runs an already built scenario world to the end.
pub fn run_built(sim: &mut Sim, scenario: &Scenario) -> Result<RunReport, Violation> {
    sim.run_until(scenario.duration)?;
    sim.settle(scenario.settle_limit)?;
    Ok(RunReport {
        stats: sim.stats(),
        elapsed: sim.elapsed(),
    })
}

fn random_fault(rng: &mut Rng, clients: usize, profile: &Profile) -> Fault {
    let client = (rng.next_u64() % clients as u64) as usize;
    let roll = rng.next_u64() % 100;
    match roll {
        0..=24 => Fault::Cut { client },
        25..=36 => Fault::HalfOpen {
            client,
            direction: pick(
                rng,
                &[Direction::ToServer, Direction::ToClient, Direction::Both],
            ),
        },
        37..=44 => Fault::Slow {
            client,
            extra: between(rng, Duration::from_millis(100), Duration::from_secs(3)),
            duration: between(rng, Duration::from_secs(1), Duration::from_secs(10)),
        },
        45..=54 => Fault::Persist,
        55..=69 => {
            let restore = match rng.next_u64() % 5 {
                0 | 1 => Restore::Latest,
                2 | 3 if profile.lossy_restores => Restore::Persisted,
                2 | 3 => Restore::Latest,
                _ => Restore::Empty,
            };
            Fault::Crash {
                restore,
                downtime: pick(
                    rng,
                    &[
                        Duration::ZERO,
                        Duration::from_millis(500),
                        Duration::from_secs(3),
                    ],
                ),
                graceful: chance(rng, 0.25),
            }
        }
        70..=77 => Fault::ClockJump(if chance(rng, 0.2) {
            between(rng, Duration::from_secs(30), Duration::from_secs(90))
        } else {
            between(rng, Duration::from_secs(1), Duration::from_secs(10))
        }),
        78..=87 => Fault::Freeze {
            target: if chance(rng, 0.3) {
                Target::Server
            } else {
                Target::Client(client)
            },
            duration: between(rng, Duration::from_millis(500), Duration::from_secs(8)),
        },
        _ => Fault::RestartClient { client },
    }
}

/// Runs the scenario of `seed`; on a violation, shrinks its fault schedule (removing faults
/// one at a time while the run still fails) and returns the [`Failure`] to print.
pub fn check_seed(seed: u64, origin: Instant) -> Result<RunReport, Box<Failure>> {
    check_scenario(&Scenario::generate(seed), origin)
}

/// [`check_seed`] for an explicit scenario.
pub fn check_scenario(scenario: &Scenario, origin: Instant) -> Result<RunReport, Box<Failure>> {
    let violation = match scenario.run(origin) {
        Ok(report) => return Ok(report),
        Err(v) => v,
    };
    let (kept, shrunk_violation) = shrink(scenario, origin, violation.clone());
    Err(Box::new(Failure {
        seed: scenario.seed,
        violation,
        faults: scenario.faults.clone(),
        kept,
        shrunk_violation,
    }))
}

/// Removes faults one at a time (latest first) while the run still fails; returns the indices
/// kept and the violation of the smallest failing schedule.
pub fn shrink(
    scenario: &Scenario,
    origin: Instant,
    violation: Violation,
) -> (Vec<usize>, Violation) {
    let mut kept: Vec<usize> = (0..scenario.faults.len()).collect();
    let mut last = violation;
    let mut i = kept.len();
    while i > 0 {
        i -= 1;
        let mut candidate = kept.clone();
        candidate.remove(i);
        if let Err(v) = scenario.keep_faults(&candidate).run(origin) {
            kept = candidate;
            last = v;
        }
    }
    (kept, last)
}
