//! Properties of the reconnect backoff: delays stay in bounds whatever the config and the order of
//! operations, one seed replays one schedule, a completed handshake restarts the schedule while
//! attempts that fail before one climb it, and jitter actually spreads a herd.

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
    /// An attempt failed (or a connection ended): the delay before the next one.
    NextDelay,
    SetFloor(Duration),
    /// A handshake completed (`hello_ok`/`joined`).
    Reset,
    Advance(Duration),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::NextDelay),
        1 => (0u64..200_000).prop_map(|ms| Op::SetFloor(Duration::from_millis(ms))),
        2 => Just(Op::Reset),
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
    )
        .prop_map(
            |(initial, extra, multiplier, jitter, max_attempts, max_elapsed)| {
                let initial = Duration::from_millis(initial);
                BackoffConfig {
                    initial,
                    max: (initial + Duration::from_millis(extra)).min(Duration::from_secs(120)),
                    multiplier,
                    jitter,
                    max_attempts,
                    max_elapsed: max_elapsed.map(Duration::from_millis),
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

/// The largest delay the first attempt of an outage may get (before any floor).
fn first_step_cap(config: &BackoffConfig) -> Duration {
    let initial = config.initial.min(config.max);
    let spread = match config.jitter {
        Jitter::Proportional(j) => 1.0 + j,
        Jitter::None | Jitter::Full | Jitter::Decorrelated => 1.0,
    };
    initial.mul_f64(spread).min(config.max) + Duration::from_micros(1)
}

/// Runs `ops` and returns every `next_delay` outcome, checking the bounds of each delay and the
/// policy: the first delay after a completed handshake is within the first step, the attempt
/// counter counts the attempts since the last one, and without jitter the delays of attempts
/// that fail before a handshake never shrink.
fn run(
    config: &BackoffConfig,
    seed: u64,
    ops: &[Op],
) -> Result<Vec<Option<Duration>>, TestCaseError> {
    let mut b = Backoff::new(config.clone(), Rng::from_u64(seed));
    let mut now = t0();
    let mut floor: Option<Duration> = None;
    let mut out = Vec::new();
    // Attempts since the last completed handshake, and the previous unfloored delay.
    let mut attempts = 0u32;
    let mut previous: Option<Duration> = None;
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
                    attempts += 1;
                    prop_assert_eq!(b.attempt(), attempts);
                    if floor.is_none() {
                        if attempts == 1 {
                            let cap = first_step_cap(config);
                            prop_assert!(d <= cap, "first delay {d:?} above {cap:?}");
                        }
                        if let (Jitter::None, Some(p)) = (config.jitter, previous) {
                            prop_assert!(d >= p, "{d:?} after {p:?}: the schedule shrank");
                        }
                        previous = Some(d);
                    }
                    floor = None;
                    out.push(Some(d));
                }
                Err(_) => out.push(None),
            },
            Op::SetFloor(f) => {
                b.set_floor(*f);
                floor = Some(floor.map_or(*f, |g| g.max(*f)));
            }
            Op::Reset => {
                b.reset();
                attempts = 0;
                previous = None;
            }
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
            initial: Duration::from_secs(1),
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
