//! Properties of the reconnect backoff: delays stay in bounds whatever the config and the order of
//! operations, one seed replays one schedule, and jitter actually spreads a herd.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tether_core::backoff::{Backoff, BackoffConfig, Jitter};
use tether_core::rng::Rng;

/// An arbitrary origin for the timeline (tests only; the core never reads a clock).
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

#[derive(Debug, Clone)]
enum Op {
    NextDelay,
    SetFloor(Duration),
    Connected,
    Healthy,
    Disconnected,
    Reset,
    Advance(Duration),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::NextDelay),
        1 => (0u64..200_000).prop_map(|ms| Op::SetFloor(Duration::from_millis(ms))),
        1 => Just(Op::Connected),
        1 => Just(Op::Healthy),
        1 => Just(Op::Disconnected),
        1 => Just(Op::Reset),
        2 => (0u64..60_000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        (0.0f64..=1.0).prop_map(Jitter::Proportional),
        Just(Jitter::Full),
        Just(Jitter::Decorrelated),
    ]
}

fn config() -> impl Strategy<Value = BackoffConfig> {
    (
        0u64..10_000,
        0u64..=120_000,
        1.0f64..=4.0,
        jitter(),
        proptest::option::of(0u32..20),
        proptest::option::of(0u64..600_000),
        0u64..30_000,
    )
        .prop_map(
            |(initial, extra, multiplier, jitter, max_attempts, max_elapsed, healthy)| {
                let initial = Duration::from_millis(initial);
                BackoffConfig {
                    initial,
                    max: (initial + Duration::from_millis(extra)).min(Duration::from_secs(120)),
                    multiplier,
                    jitter,
                    max_attempts,
                    max_elapsed: max_elapsed.map(Duration::from_millis),
                    healthy_after: Duration::from_millis(healthy),
                }
            },
        )
}

/// The jitter factor allowed above a server floor.
fn floor_factor(jitter: Jitter) -> f64 {
    match jitter {
        Jitter::None => 0.0,
        Jitter::Proportional(j) => j,
        Jitter::Full | Jitter::Decorrelated => 0.2,
    }
}

/// Runs `ops` and returns every `next_delay` outcome, checking the bounds of each delay.
fn run(
    config: &BackoffConfig,
    seed: u64,
    ops: &[Op],
) -> Result<Vec<Option<Duration>>, TestCaseError> {
    let mut b = Backoff::new(config.clone(), Rng::from_u64(seed));
    let mut now = t0();
    let mut floor: Option<Duration> = None;
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::NextDelay => match b.next_delay(now) {
                Ok(d) => {
                    let lo = floor.unwrap_or(Duration::ZERO);
                    let above_floor = lo.as_secs_f64() * (1.0 + floor_factor(config.jitter));
                    // One microsecond of slack for float rounding of the random extra.
                    let hi = config
                        .max
                        .max(Duration::from_secs_f64(above_floor) + Duration::from_micros(1));
                    prop_assert!(lo <= d && d <= hi, "{d:?} not in [{lo:?}, {hi:?}]");
                    floor = None;
                    out.push(Some(d));
                }
                Err(_) => out.push(None),
            },
            Op::SetFloor(f) => {
                b.set_floor(*f);
                floor = Some(floor.map_or(*f, |g| g.max(*f)));
            }
            Op::Connected => b.connected(now),
            Op::Healthy => {
                if let Some(deadline) = b.healthy_deadline() {
                    now = now.max(deadline);
                }
                b.healthy(now);
            }
            Op::Disconnected => b.disconnected(now),
            Op::Reset => b.reset(),
            Op::Advance(d) => now += *d,
        }
    }
    Ok(out)
}

proptest! {
    #[test]
    fn delays_stay_within_floor_and_max(
        config in config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        run(&config, seed, &ops)?;
    }

    #[test]
    fn same_seed_same_ops_same_schedule(
        config in config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        prop_assert_eq!(run(&config, seed, &ops)?, run(&config, seed, &ops)?);
    }
}

#[test]
fn jitter_spreads_a_herd() {
    for jitter in [Jitter::Proportional(0.2), Jitter::Full] {
        let config = BackoffConfig {
            jitter,
            ..BackoffConfig::default()
        };
        let now = t0();
        let schedules: BTreeSet<Vec<Duration>> = (0..64)
            .map(|seed| {
                let mut b = Backoff::new(config.clone(), Rng::from_u64(seed));
                (0..5).map(|_| b.next_delay(now).unwrap()).collect()
            })
            .collect();
        assert!(
            schedules.len() >= 32,
            "{jitter:?}: only {} distinct schedules",
            schedules.len()
        );
    }
}
