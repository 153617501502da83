//! # tether-testkit
//!
//! The test machinery of tether, for its own tests and for yours: everything that exercises the
//! protocol machines of `tether-core` without being part of them.
//!
//! * [`sim`]: a deterministic simulator. Client machines and server instances over a faulty
//!   in-memory network (cuts, half-open sockets, slow links, crashes restored from old
//!   snapshots or from nothing, clock jumps, frozen processes, client restarts) with a virtual
//!   clock that jumps to the next deadline: minutes of protocol time in milliseconds, and one
//!   `u64` seed replays a run. Every delivery promise is checked after every step.
//! * [`exhaustive`]: a model checker over the same world: every order of deliveries, timers,
//!   application actions and up to K faults in a small configuration, repeated states pruned,
//!   the same promises checked in every state, a shortest step list for any counterexample.
//! * [`strategy`]: [proptest](mod@proptest) strategies for frames both ways (well-formed and
//!   hostile), version ranges, faults, fault schedules and whole simulator scenarios.
//! * [`cluster`]: store mode in memory: several server machines sharing a [`MemoryStore`] with
//!   the Redis adapter's semantics, and a client failing over between them.
//! * [`fuzz`]: the fuzz bodies of the codec, both machines and the simulator (the `fuzz/`
//!   targets call them; the stable test suite runs them over the committed corpora).
//! * `check` (feature `net`): a conformance suite for any gateway that speaks the protocol
//!   (v1 = PraisonAI, v2 = tether), over real sockets: `check(url, options) -> Report`. The
//!   `tether check` command is a shell over it.
//! * `proxy` (feature `net`): a seeded, replayable, protocol-aware fault proxy to put between a
//!   client and a server (`tether proxy`).
//!
//! Like the core, everything but the `net` feature reads no clock, starts no runtime and opens
//! no socket: time is virtual from an `origin` you pass in. The `net` feature brings tokio and
//! tokio-tungstenite.
//!
//! ## Property-test your application
//! Your application sits on the client machine's events (or on the server machine's commands).
//! Drive it through the simulator under fault schedules drawn by [`strategy`], and state what
//! must hold whatever the network does. Here the application is a scoreboard that sums the
//! points of the `score` events it receives; its claim is "my total is exact unless tether told
//! me I missed something":
//!
//! ```
//! use std::time::{Duration, Instant};
//! use serde_json::{json, Value};
//! use tether_core::client::Event;
//! use tether_core::server::SessionId;
//! use tether_testkit::proptest::prelude::*;
//! use tether_testkit::proptest::test_runner::{Config, TestRunner};
//! use tether_testkit::sim::{Fault, Restore, Sim, SimConfig};
//! use tether_testkit::strategy::fault_schedule;
//!
//! /// The application under test.
//! #[derive(Default)]
//! struct Scoreboard {
//!     total: u64,
//!     /// Tether reported events this application will never see.
//!     incomplete: bool,
//! }
//!
//! impl Scoreboard {
//!     fn on_event(&mut self, event: &Event) {
//!         match event {
//!             Event::Delivered(d) if d.kind == "score" => {
//!                 let score: Value = serde_json::from_str(&d.payload).expect("JSON");
//!                 self.total += score["points"].as_u64().expect("points");
//!             }
//!             // Without this arm the application could not tell a short total from an exact
//!             // one: tether reports every hole it cannot repair.
//!             Event::Lost { .. } | Event::ServerReset { .. } | Event::SessionReplaced { .. } => {
//!                 self.incomplete = true;
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//!
//! # #[allow(clippy::disallowed_methods)]
//! let origin = Instant::now(); // the one clock read: the simulation's time is virtual
//! let ms = Duration::from_millis;
//! let mut runner = TestRunner::new(Config { cases: 32, ..Config::default() });
//! // A crash restored from an older snapshot (`Restore::Persisted`) loses what was published
//! // after it before anyone saw it: no protocol can report what the restored server never
//! // knew. This game persists a snapshot with every publish, so its crashes restore the latest.
//! let persisting_every_publish = |mut faults: Vec<(Duration, Fault)>| {
//!     for (_, fault) in &mut faults {
//!         if let Fault::Crash { restore: restore @ Restore::Persisted, .. } = fault {
//!             *restore = Restore::Latest;
//!         }
//!     }
//!     faults
//! };
//! let faults = fault_schedule(1, ms(20_000), 5).prop_map(persisting_every_publish);
//! let cases = (any::<u64>(), faults);
//! runner
//!     .run(&cases, |(seed, faults)| {
//!         let config = SimConfig { record_events: true, ..SimConfig::new(seed) };
//!         let mut sim = Sim::new(origin, config);
//!         let player = sim.add_client();
//!         for (at, fault) in faults {
//!             sim.schedule(at, fault);
//!         }
//!         let (mut app, mut seen, mut published) = (Scoreboard::default(), 0, 0);
//!         for tick in 1..=40 {
//!             sim.run_until(ms(500) * tick)?; // a broken tether promise fails the case
//!             // The game publishes `tick` points into the player's session, if it is up.
//!             if let Some(id) = sim.client(player).session_id() {
//!                 let session = SessionId(id.to_owned());
//!                 let fields = [("points", json!(tick))];
//!                 let sent = sim.with_server(|s, now| s.publish(now, &session, "score", &fields));
//!                 if let Some(Ok(_)) = sent {
//!                     published += u64::from(tick);
//!                 }
//!             }
//!             // The application gets what the client delivered since the last tick.
//!             let events = sim.events(player);
//!             events[seen..].iter().for_each(|e| app.on_event(e));
//!             seen = events.len();
//!         }
//!         sim.settle(ms(120_000))?; // the network heals: everything arrives or is reported
//!         sim.events(player)[seen..].iter().for_each(|e| app.on_event(e));
//!
//!         prop_assert!(app.total <= published, "a score counted twice");
//!         if !app.incomplete {
//!             prop_assert_eq!(app.total, published, "a score missed silently");
//!         }
//!         Ok(())
//!     })
//!     .expect("the scoreboard is right under every drawn fault schedule");
//! ```
//!
//! The same loop tests a server-side application: answer `ServerEvent::Request`s from
//! [`Sim::server_events`](sim::Sim::server_events) through
//! [`Sim::with_server`](sim::Sim::with_server) (set
//! [`SimConfig::respond_within`](sim::SimConfig::respond_within) to `None` so the built-in
//! application stays quiet). A transport or codec of your own can be held to
//! [`strategy::server_frame`] and [`strategy::client_frame`]: whatever it carries must come out
//! as a frame the core reads.
//!
//! [`MemoryStore`]: cluster::MemoryStore
#![forbid(unsafe_code)]

// The network tools run in real time over real sockets: they may read the clock.
#[cfg(feature = "net")]
#[allow(clippy::disallowed_methods)]
pub mod check;
pub mod cluster;
pub mod exhaustive;
pub mod fuzz;
#[cfg(feature = "net")]
#[allow(clippy::disallowed_methods)]
pub mod proxy;
pub mod sim;
pub mod strategy;

/// The proptest the [`strategy`] module is written for, so that your tests use the same one.
pub use proptest;

/// The one clock read of the unit tests: an arbitrary origin for their timelines.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_origin() -> std::time::Instant {
    std::time::Instant::now()
}
