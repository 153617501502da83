//! The simulator on a seed plus a fault schedule: see `tether_testkit::fuzz::sim_at`.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// The one clock read, once per process: the simulation's virtual time starts here.
#[allow(clippy::disallowed_methods)]
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fuzz_target!(|data: &[u8]| {
    tether_testkit::fuzz::sim_at(*ORIGIN, data);
});
