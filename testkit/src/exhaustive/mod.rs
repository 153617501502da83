//! Exhaustive exploration of the real client and server machines: every order of deliveries,
//! timers, application actions and up to K faults in a small world, not a random sample.
//!
//! The random seeds of [`sim`](crate::sim) find what is likely; narrow interleavings (a cut
//! between two frames of a resume, a timer that fires during a takeover) need every order.
//! The machines are sans-IO and deterministic, so the world of the simulator can be driven
//! one step at a time and searched breadth-first:
//!
//! * **Steps** ([`Step`]): a frame at the head of a pipe arrives (each direction of a socket
//!   is FIFO, as TCP); a socket's open or the news of its close reaches one side; the server
//!   application answers a request; a server instance comes up; the earliest timer fires (the
//!   clock jumps to it; no other time passes); the next action of the [`Model::workload`]
//!   happens (publish, broadcast, request, disconnect); the server persists a snapshot.
//! * **Faults**, at most [`Model::faults`] per path, of the [`FaultKind`]s allowed: cut,
//!   half-open (either or both directions), a frame dropped or repeated on its way to the
//!   client, a server crash or graceful shutdown restored from the latest snapshot, an older
//!   persisted one or nothing, a client process restart from its `ResumeState`, and a *late
//!   timer* (a timer firing while messages are still in flight, i.e. they arrive late).
//! * **Bounds**: timers fire only up to [`Model::horizon`] of virtual time, paths are at
//!   most [`Model::max_depth`] steps, the search stops at [`Model::max_states`]; the
//!   [`Report`] says how much was cut off (0 for the figures in the docs). The state count
//!   grows about tenfold per event and per fault: docs/MODEL-CHECKING.md has the sizes that
//!   finish and their figures.
//! * **Checks after every step**: the simulator's invariants (see [`sim`](crate::sim)): per
//!   client, delivered sequences strictly increase, nothing twice, every hole delivered or
//!   reported (`Lost`, `ServerReset`, `SessionReplaced`), exactly one terminal event per
//!   connection; no request reaches the server application twice per line of server state;
//!   every server close announced by one `Closing` event; bounded outputs and memory.
//! * **Liveness**: at the end of every path (nothing left to do but faults, or the next timer
//!   past the horizon), faults stop, the network heals and the world runs on the ordinary
//!   scheduler until quiet; then everything the server holds must have been delivered or
//!   reported, and every request resolved ([`Sim::settle`](crate::sim::Sim::settle)).
//! * **Pruning**: a state already seen is not explored again. States are identified by a
//!   128-bit fingerprint of the world and of each machine's *input history* (the machines
//!   cannot be hashed or cloned, but are deterministic: same construction and inputs, same
//!   state), so pruning is sound: two states merge only on a hash collision. States are
//!   rebuilt by replaying their path.
//! * **Counterexamples**: breadth-first, so the first broken invariant comes with a shortest
//!   step list ([`Counterexample`]), printed with the simulator's trace and as a script that
//!   [`replay`] runs again: paste it into a regression test.
//!
//! # Example
//! ```
//! use std::time::{Duration, Instant};
//! use tether_testkit::exhaustive::{explore, replay, FaultKind, Model, Step};
//! use tether_testkit::sim::Restore;
//!
//! # #[allow(clippy::disallowed_methods)]
//! let origin = Instant::now(); // the one clock read; time in the world is virtual
//! // One client, one event, at most one cut or crash: every order is checked.
//! let mut model = Model::new(1, 1, 1);
//! model.fault_kinds = vec![FaultKind::Cut, FaultKind::Crash(Restore::Latest)];
//! model.horizon = Duration::from_millis(300);
//! model.persists = 0;
//! let report = explore(&model, origin);
//! assert!(report.passed(), "{report}");
//! assert!(report.coverage.resumes > 0, "the cut was repaired by a resume");
//!
//! // A trace (what a counterexample prints) replays step by step, checked all the way.
//! let trace = "connect 1\ndeliver 1 up\npublish c0\ncut c0\nsettle\n";
//! let stats = replay(&model, origin, &Step::parse_trace(trace).unwrap()).unwrap();
//! assert_eq!(stats.published, 1);
//! ```

mod search;
mod step;
mod world;

use std::fmt;
use std::time::{Duration, Instant};

use tether_core::client::ClientConfig;

pub use search::{Counterexample, Coverage, Report};
pub use step::{ParseStepError, Step};

use crate::sim::{Action, Direction, Restore, SimConfig, SimStats, Violation};
use world::{StepError, World};

/// The kinds of fault a search may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A client's socket is cut (each side hears of it when the explorer says so).
    Cut,
    /// A client's socket goes half-open in this direction.
    HalfOpen(Direction),
    /// A text frame on its way to a client vanishes (the server wrote it).
    DropFrame,
    /// A text frame on its way to a client arrives twice.
    DuplicateFrame,
    /// A timer fires while messages are in flight (they arrive after it).
    LateTimer,
    /// The server crashes; the next instance restores from this.
    Crash(Restore),
    /// The server shuts down gracefully; the next instance restores from this.
    Shutdown(Restore),
    /// A client process restarts from its persisted `ResumeState`.
    RestartClient,
}

impl FaultKind {
    /// Every kind but [`FaultKind::DropFrame`], which [`Model::new`] leaves out: no TCP
    /// network drops one frame of a live connection (a broken relay could). The protocol
    /// repairs a dropped frame when the next tracked frame shows the gap, but a dropped *last*
    /// frame waits for the next event (or the next reconnect): the explorer finds that path
    /// in 7 steps, see the `exhaustive` test `a_dropped_last_frame_waits_for_the_next_event`.
    pub const DEFAULT: [FaultKind; 13] = [
        Self::Cut,
        Self::HalfOpen(Direction::ToServer),
        Self::HalfOpen(Direction::ToClient),
        Self::HalfOpen(Direction::Both),
        Self::DuplicateFrame,
        Self::LateTimer,
        Self::Crash(Restore::Latest),
        Self::Crash(Restore::Persisted),
        Self::Crash(Restore::Empty),
        Self::Shutdown(Restore::Latest),
        Self::Shutdown(Restore::Persisted),
        Self::Shutdown(Restore::Empty),
        Self::RestartClient,
    ];

    /// Every kind.
    pub const ALL: [FaultKind; 14] = [
        Self::Cut,
        Self::HalfOpen(Direction::ToServer),
        Self::HalfOpen(Direction::ToClient),
        Self::HalfOpen(Direction::Both),
        Self::DropFrame,
        Self::DuplicateFrame,
        Self::LateTimer,
        Self::Crash(Restore::Latest),
        Self::Crash(Restore::Persisted),
        Self::Crash(Restore::Empty),
        Self::Shutdown(Restore::Latest),
        Self::Shutdown(Restore::Persisted),
        Self::Shutdown(Restore::Empty),
        Self::RestartClient,
    ];
}

/// A small world to explore and the bounds of the search.
#[derive(Debug, Clone)]
pub struct Model {
    /// The world's config: server template, instances (1 or 2), client template. The
    /// network's delays are ignored (the explorer orders every delivery) and the server
    /// application answers requests when the explorer says so.
    pub config: SimConfig,
    /// One config per client (each with its own seed).
    pub clients: Vec<ClientConfig>,
    /// The applications' actions, in this order (each interleaved with everything else).
    /// A publish waits until its client's session exists.
    pub workload: Vec<Action>,
    /// The most faults on one path.
    pub faults: usize,
    /// The fault kinds allowed.
    pub fault_kinds: Vec<FaultKind>,
    /// The most snapshots the server persists on one path (for `Restore::Persisted`).
    pub persists: usize,
    /// Timers fire only up to this virtual time; the rest of each path is settled.
    pub horizon: Duration,
    /// The longest path explored.
    pub max_depth: usize,
    /// The search stops at this many distinct states.
    pub max_states: usize,
    /// How long settling may take at the end of a path (virtual time).
    pub settle_limit: Duration,
}

impl Model {
    /// `clients` clients (the default client config: v2, falling back to v1), `events`
    /// published events (event `e` into the session of client `e % clients`), at most
    /// `faults` faults of the [`FaultKind::DEFAULT`] kinds, one persisted snapshot, the simulator's timings
    /// (heartbeat 1 s, reaping after 2 s of silence; see [`SimConfig::new`]), a 3 s horizon.
    pub fn new(clients: usize, events: u32, faults: usize) -> Self {
        let config = SimConfig::new(1);
        let clients: Vec<ClientConfig> = (0..clients)
            .map(|c| ClientConfig {
                seed: Some(tether_core::rng::seed_from_u64(1 + c as u64)),
                ..config.client.clone()
            })
            .collect();
        let n = clients.len().max(1);
        let workload = (0..events)
            .map(|e| Action::Publish {
                client: e as usize % n,
                count: 1,
            })
            .collect();
        Self {
            config,
            clients,
            workload,
            faults,
            fault_kinds: FaultKind::DEFAULT.to_vec(),
            persists: 1,
            horizon: Duration::from_secs(3),
            max_depth: 80,
            max_states: 5_000_000,
            settle_limit: Duration::from_secs(120),
        }
    }
}

/// Explores every path of `model` (breadth-first, repeated states pruned) and returns the
/// figures and the first counterexample, if any. `origin` is an arbitrary instant the
/// virtual time starts from.
pub fn explore(model: &Model, origin: Instant) -> Report {
    search::explore(model, origin)
}

/// Why a replayed trace stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayError {
    /// Step `index` (from 0) is not possible where the trace has led: the trace does not fit
    /// this model (or the machines changed behaviour). Check the trace against the model.
    NotPossible {
        /// Its position in the trace.
        index: usize,
        /// The step.
        step: Step,
    },
    /// Step `index` broke an invariant: the counterexample still reproduces.
    Violation {
        /// Its position in the trace.
        index: usize,
        /// What broke.
        violation: Violation,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPossible { index, step } => {
                write!(f, "step {} ({step}) is not possible there", index + 1)
            }
            Self::Violation { index, violation } => {
                write!(f, "step {} broke an invariant: {violation}", index + 1)
            }
        }
    }
}

impl std::error::Error for ReplayError {}

/// Runs `steps` in `model`'s world (a counterexample's [`script`](Counterexample::script)
/// read by [`Step::parse_trace`]), checking every invariant after every step; a final
/// [`Step::Settle`] checks the end state. Returns the world's counters.
pub fn replay(model: &Model, origin: Instant, steps: &[Step]) -> Result<SimStats, ReplayError> {
    let mut w = World::new(model, origin, 0).map_err(|violation| ReplayError::Violation {
        index: 0,
        violation,
    })?;
    for (index, step) in steps.iter().enumerate() {
        match w.apply(step) {
            Ok(()) => {}
            Err(StepError::NotEnabled) => {
                return Err(ReplayError::NotPossible {
                    index,
                    step: step.clone(),
                })
            }
            Err(StepError::Violation(violation)) => {
                return Err(ReplayError::Violation { index, violation })
            }
        }
    }
    Ok(w.stats())
}
