//! Deterministic simulation: whole systems of client machines and server instances over a
//! faulty in-memory network, with a virtual clock that jumps straight to the next thing that
//! happens — minutes of protocol time in milliseconds, no sockets, no sleeps, and one `u64`
//! seed replays a run exactly.
//!
//! * [`Sim`] ([`world`](Sim) and the drive loop): N [`Client`](tether_core::client::Client)s,
//!   one or several [`Server`](tether_core::server::Server) instances sharing state through
//!   snapshots (one is live at a time; a crashed one is replaced by the next, restored from a
//!   snapshot), a server application (publishes, answers requests) and client applications
//!   (requests, disconnects, process restarts from a persisted
//!   [`ResumeState`](tether_core::cursor::ResumeState)).
//! * The network ([`NetworkConfig`]): a link per socket, two FIFO directions (TCP never
//!   reorders), per-message delays from the seed.
//! * [`Fault`]s on a schedule: cuts, half-open links, slowdowns, server crashes and graceful
//!   shutdowns restored from the latest snapshot, from an older one (lost writes) or from
//!   nothing, clock jumps, frozen processes, client restarts.
//! * Invariants checked after every step (see the `invariants` module source for the exact
//!   list): per client, delivered sequences strictly increase, nothing twice, every hole
//!   delivered or reported (`Lost`, `ServerReset`, `SessionReplaced`); no request reaches the
//!   server application twice within one line of server state; backoff within bounds; bounded
//!   outputs per step and bounded server memory; exactly one terminal event per connection and
//!   one `Closed` per client stopped by its application. [`Sim::settle`] adds the end state:
//!   nothing pending forever.
//! * Seeds ([`Scenario`], [`check_seed`]): a seed generates configs, workload and a fault
//!   schedule; a failing schedule is [`shrink`]ed and printed with a [`replay_command`].
//! * The herd ([`run_herd`]): thousands of clients reconnecting after a restart.
//!
//! # Request invariant, exactly
//! Each `(session, request_id)` reaches the server application at most once per *line of
//! server state*. A restore from a snapshot taken at time T continues the line as it was at T:
//! requests that reached the application after T are forgotten with the lost writes (the
//! client, which never got an answer, may legitimately resend them and they may reach the
//! application again). A restore from the latest snapshot loses nothing, so a resend is then a
//! duplicate the server must absorb. Requests whose answer died with a crashed instance may stay
//! unresolved at the end; every other request must be resolved exactly once.
//!
//! # Example: your own scenario
//! ```
//! use std::time::{Duration, Instant};
//! use tether_testkit::sim::{Action, Fault, Restore, Sim, SimConfig};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let origin = Instant::now(); // the only real clock read; everything else is virtual
//! let mut sim = Sim::new(origin, SimConfig::new(42));
//! let alice = sim.add_client();
//! let bob = sim.add_client();
//! let (secs, ms) = (Duration::from_secs, Duration::from_millis);
//! for t in 1..10 {
//!     sim.schedule_action(secs(t), Action::Publish { client: 0, count: 3 });
//! }
//! sim.schedule_action(secs(2), Action::Send { client: 1 });
//! sim.schedule(secs(3), Fault::Cut { client: 0 });
//! // The instance crashes; the next one restores its snapshot 500 ms later.
//! let crash = Fault::Crash { restore: Restore::Latest, downtime: ms(500), graceful: false };
//! sim.schedule(ms(5200), crash);
//! sim.schedule(secs(7), Fault::RestartClient { client: 1 });
//!
//! sim.run_until(secs(10)).expect("no invariant broken");
//! sim.settle(secs(60)).expect("everything delivered or reported in the end");
//!
//! assert!(sim.client(alice).is_connected() && sim.client(bob).is_connected());
//! let stats = sim.stats();
//! assert_eq!(stats.published, 27);
//! assert_eq!(stats.lost, 0); // nothing was lost: cuts and restarts were all repaired
//! assert!(stats.delivered >= 27);
//! ```
//! Run it with `cargo test -p tether-testkit --doc sim`. A failing invariant returns a
//! [`Violation`] naming the virtual time and the client; set `SimConfig::trace` to keep the
//! last steps ([`Sim::trace`]).

mod drive;
mod explore;
mod fault;
mod fingerprint;
mod herd;
mod invariants;
mod link;
mod stepwise;
mod world;

pub use explore::{
    check_scenario, check_seed, replay_command, run_built, shrink, Failure, Profile, RunReport,
    Scenario, FAULTS_ENV, SEED_ENV,
};
pub use fault::{Action, Fault, Restore, Target};
pub(crate) use fingerprint::Fingerprint;
pub use herd::{run_herd, HerdConfig, HerdReport};
pub use invariants::Violation;
pub(crate) use invariants::{ClientModel, Req};
pub use link::{Direction, NetworkConfig};
pub(crate) use stepwise::Notice;
pub use world::{ClientId, Sim, SimConfig, SimStats};
