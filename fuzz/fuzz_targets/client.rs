//! The client machine on arbitrary input scripts: see `tether_testkit::fuzz::client_at`.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// The one clock read, once per process: the body takes time as data from here on.
#[allow(clippy::disallowed_methods)]
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

fuzz_target!(|data: &[u8]| {
    tether_testkit::fuzz::client_at(*ORIGIN, data);
});
