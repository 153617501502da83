//! The thundering herd: 10,000 simulated clients reconnect after a server restart.
//!
//! Config: backoff `initial` 1 s with full jitter, so after the restart each client's first
//! retry is uniform over [0, 1 s] (plus its own network delay to learn of the cut). With `n`
//! clients the expected count per 100 ms window is `n / 10`; the busiest of ~11 windows sits a
//! few standard deviations (√(n/10) ≈ 32 for 10k) above that. The bound asserted is
//! `1.25 × n / 10` (1,250 for 10k), far below the `n` a jitter-less herd puts in one window.
//! `the_default_schedule_spreads_a_herd_over_its_first_step` holds the default schedule (first
//! retry within 250 ms) to the same rule: `1.25 × n × window / initial` per window.
//!
//! Work per reconnect (frames, bytes, server inputs and events per resumed session) must stay
//! flat from 1,000 to 10,000 clients: ratio ≤ 1.5. `one_agent_herd_keeps_handshakes_flat` runs
//! the case that once was not (one agent: every v2 `hello_ok` listed, and the server scanned,
//! every connected client; presence in handshakes is now capped): bytes per reconnect must stay
//! flat from 500 to 2,000 clients. Real time spent in server calls is printed; it is asserted
//! only with `TETHER_SIM_HERD_STRICT=1` (timing is for benchmarks, not for CI tests).

use std::time::{Duration, Instant};

use tether_core::backoff::BackoffConfig;
use tether_testkit::sim::{run_herd, HerdConfig, HerdReport};

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

fn herd(clients: usize, clients_per_agent: usize) -> (HerdReport, Duration) {
    herd_with(HerdConfig {
        clients_per_agent,
        ..HerdConfig::new(clients)
    })
}

fn herd_with(config: HerdConfig) -> (HerdReport, Duration) {
    let started = clock();
    let config = HerdConfig {
        stopwatch: Some(clock),
        ..config
    };
    let report = run_herd(started, &config).unwrap_or_else(|v| panic!("{v}"));
    (report, started.elapsed())
}

/// The busiest window allowed when every client's first retry is uniform over `initial`: 1.25×
/// the expected count.
fn bound(r: &HerdReport, initial: Duration) -> u64 {
    let expected = r.clients as f64 * r.window.as_secs_f64() / initial.as_secs_f64();
    (expected * 1.25).ceil() as u64
}

fn describe(r: &HerdReport, wall: Duration) -> String {
    format!(
        "{} clients: {} reconnects, {} resumed, {} created; max {} per {:?} window; per \
         reconnect: {:.2} frames, {:.0} bytes, {:.2} server inputs, {:.2} server events, \
         {:?} in server calls; wall {:.1}s",
        r.clients,
        r.reconnects,
        r.resumed,
        r.created,
        r.max_per_window(),
        r.window,
        r.frames_per_reconnect(),
        r.bytes_per_reconnect(),
        r.inputs_per_reconnect(),
        r.events_per_reconnect(),
        r.server_time_per_reconnect(),
        wall.as_secs_f64()
    )
}

#[test]
fn ten_thousand_clients_reconnect_spread_by_jitter_at_flat_cost() {
    let (small, small_wall) = herd(1_000, 10);
    eprintln!("herd: {}", describe(&small, small_wall));
    let (big, big_wall) = herd(10_000, 10);
    eprintln!("herd: {}", describe(&big, big_wall));
    eprintln!("herd: windows (10k) {:?}", big.per_window);

    for r in [&small, &big] {
        let n = r.clients as u64;
        assert_eq!(r.resumed, n, "every session resumed, none lost");
        assert_eq!(r.created, 0);
        let bound = bound(r, Duration::from_secs(1));
        assert!(
            r.max_per_window() <= bound,
            "{} reconnects in one {:?} window, bound {bound}: {:?}",
            r.max_per_window(),
            r.window,
            r.per_window
        );
    }
    let ratios = [
        (
            "frames",
            big.frames_per_reconnect() / small.frames_per_reconnect(),
        ),
        (
            "bytes",
            big.bytes_per_reconnect() / small.bytes_per_reconnect(),
        ),
        (
            "inputs",
            big.inputs_per_reconnect() / small.inputs_per_reconnect(),
        ),
        (
            "events",
            big.events_per_reconnect() / small.events_per_reconnect(),
        ),
    ];
    let time = big.server_time_per_reconnect().as_secs_f64()
        / small.server_time_per_reconnect().as_secs_f64();
    eprintln!(
        "herd: 10k/1k work per reconnect {ratios:.3?}; server time {time:.2}x (not asserted)"
    );
    for (what, ratio) in ratios {
        assert!(
            ratio <= 1.5,
            "{what} per reconnect grew {ratio:.2}x from 1k to 10k"
        );
    }
}

/// Regression of a defect the simulator found: with one agent, each v2 `hello_ok` listed every
/// connected client of the agent, so bytes (and server time) per reconnect grew with the herd.
#[test]
fn one_agent_herd_keeps_handshakes_flat() {
    let (small, small_wall) = herd(500, usize::MAX);
    eprintln!("herd (one agent): {}", describe(&small, small_wall));
    let (big, big_wall) = herd(2_000, usize::MAX);
    eprintln!("herd (one agent): {}", describe(&big, big_wall));
    let bytes = big.bytes_per_reconnect() / small.bytes_per_reconnect();
    let time = big.server_time_per_reconnect().as_secs_f64()
        / small.server_time_per_reconnect().as_secs_f64();
    eprintln!("herd (one agent): 2k/500 bytes per reconnect {bytes:.2}x, server time {time:.2}x");
    assert!(
        bytes <= 1.5,
        "bytes per reconnect grew {bytes:.2}x from 500 to 2,000 clients"
    );
    if std::env::var("TETHER_SIM_HERD_STRICT").as_deref() == Ok("1") {
        assert!(
            time <= 1.5,
            "server time per reconnect grew {time:.2}x from 500 to 2,000 clients"
        );
    }
}

/// The default schedule's first retry comes within 250 ms of a cut (full jitter): a herd spreads
/// over those 250 ms as evenly as the 1 s schedule spreads over its second.
#[test]
fn the_default_schedule_spreads_a_herd_over_its_first_step() {
    let backoff = BackoffConfig::default();
    let (r, wall) = herd_with(HerdConfig {
        backoff: backoff.clone(),
        ..HerdConfig::new(2_000)
    });
    eprintln!("herd (default schedule): {}", describe(&r, wall));
    eprintln!("herd (default schedule): windows {:?}", r.per_window);
    assert_eq!(r.resumed, 2_000, "every session resumed, none lost");
    let bound = bound(&r, backoff.initial);
    assert!(
        r.max_per_window() <= bound,
        "{} reconnects in one {:?} window, bound {bound}: {:?}",
        r.max_per_window(),
        r.window,
        r.per_window
    );
    // All of them within the first step (and the network delay): nobody waited for a second.
    let within: u64 = r.per_window.iter().take(4).sum();
    assert_eq!(within, r.reconnects, "{:?}", r.per_window);
}
