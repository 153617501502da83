//! Reconnect backoff: a pure schedule advanced only by `now`.
//!
//! [`Backoff`] holds no clock and no global RNG: every input carries the caller's `now` and the
//! jitter comes from the [`Rng`] it was built with, so one seed replays the same schedule.
//!
//! # The policy
//! - Attempt `n` (1-based) of an outage has base `min(initial × multiplier^(n−1), max)`: the
//!   first retry after a cut waits `initial` (PraisonAI's Python client waits
//!   `initial × multiplier`).
//! - Jitter spreads a herd of clients ([`Jitter`]). The default is full jitter over a 250 ms
//!   first step: the first retry after a cut comes after 0–250 ms (125 ms on average), the next
//!   ones after 0–0.5 s, 0–1 s, ... up to 0–30 s. A fleet that may be cut all at once (a
//!   gateway restart) spreads its first wave over `initial`: raise it with the fleet's size
//!   (the 10,000-client herd simulation uses 1 s: at most 1,250 reconnects per 100 ms).
//! - A good connection forgives the outage: the client calls [`Backoff::reset`] as soon as a
//!   handshake completes (`hello_ok` or `joined`, whether the session was resumed or not), so
//!   the next cut starts again from the first delay, however short-lived the connection was.
//!   Cuts a second apart with data flowing each get a fast first retry instead of a growing
//!   delay.
//! - What still climbs: every attempt that ends before a completed handshake (connect
//!   refused, a socket dropped before `hello_ok`, a handshake timeout, a transient
//!   `hello_error`). A server that accepts sockets and drops them at once is not hammered.
//! - A server's `retry_after` is a one-shot floor ([`Backoff::set_floor`]): jitter only adds above
//!   it, so a herd told "retry after 5 s" does not all come back at exactly 5 s.
//!
//! No input makes it panic: odd configs (NaN, infinite or negative factors, huge durations, huge
//! attempt counts) are clamped to sane values, and all arithmetic saturates.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Default proportional jitter factor, also the floor's jitter for [`Jitter::Full`] and
/// [`Jitter::Decorrelated`].
const DEFAULT_JITTER_FACTOR: f64 = 0.2;
/// Default growth factor between consecutive attempts.
const DEFAULT_MULTIPLIER: f64 = 2.0;
/// Largest exponent ever fed to `powi`: beyond it every sane schedule has long reached `max`.
const MAX_EXPONENT: u32 = 1024;

/// How a delay is randomised around (or below) its exponential base.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// No jitter: the delay is exactly the base.
    None,
    /// `base × (1 + j × u)` with `u` uniform in `[−1, 1]`, clamped to `[0, max]` (PraisonAI's
    /// client uses `j = 0.2`). A factor that is NaN or infinite is treated as 0.2; others are
    /// clamped to `[0, 1]`.
    Proportional(f64),
    /// Uniform in `[0, base]` (AWS "full jitter").
    Full,
    /// The first delay is `initial`, then `min(max, uniform(initial, previous × 3))` (AWS
    /// "decorrelated jitter"; the multiplier is not used).
    Decorrelated,
}

/// Parameters of a reconnect schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffConfig {
    /// Base delay of the first retry of an outage (default 250 ms).
    pub initial: Duration,
    /// Cap of every computed delay (default 30 s); only a server floor may exceed it.
    pub max: Duration,
    /// Growth factor between attempts (default 2.0). Below 1 is treated as 1; NaN or infinite is
    /// treated as 2.0.
    pub multiplier: f64,
    /// Randomisation of each delay (default [`Jitter::Full`]).
    pub jitter: Jitter,
    /// Give up after this many consecutive failed attempts (default `None`: retry forever).
    pub max_attempts: Option<u32>,
    /// Give up once this much time has passed since the first failure of the current outage
    /// (default `None`: no deadline).
    pub max_elapsed: Option<Duration>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            multiplier: DEFAULT_MULTIPLIER,
            jitter: Jitter::Full,
            max_attempts: None,
            max_elapsed: None,
        }
    }
}

/// Why the schedule stopped: the caller should stop reconnecting and report a terminal error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GiveUp {
    /// [`BackoffConfig::max_attempts`] consecutive attempts failed; a fresh outage (after a
    /// completed handshake, [`Backoff::reset`]) starts counting again.
    #[error("gave up reconnecting after {attempts} consecutive failed attempts")]
    AttemptsExhausted {
        /// Attempts made in this outage.
        attempts: u32,
    },
    /// [`BackoffConfig::max_elapsed`] passed since the first failure of this outage.
    #[error("gave up reconnecting after {elapsed:?} without a completed handshake")]
    DeadlineExceeded {
        /// Time since the first failure of this outage.
        elapsed: Duration,
    },
}

/// The state of a reconnect schedule: config, jitter source, attempt counter, one-shot floor,
/// previous delay and outage start.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    rng: Rng,
    attempt: u32,
    floor: Option<Duration>,
    previous: Option<Duration>,
    outage_start: Option<Instant>,
}

impl Backoff {
    /// A fresh schedule (no attempt made yet) drawing its jitter from `rng`.
    pub fn new(config: BackoffConfig, rng: Rng) -> Self {
        Self {
            config,
            rng,
            attempt: 0,
            floor: None,
            previous: None,
            outage_start: None,
        }
    }

    /// The configuration this schedule runs on.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The delay before the next attempt, or `Err(GiveUp)` when the attempt cap or the outage
    /// deadline is reached (and on every later call until a reset). Increments the attempt
    /// counter on success and consumes the floor set by [`set_floor`](Self::set_floor).
    ///
    /// The first call of an outage marks its start.
    pub fn next_delay(&mut self, now: Instant) -> Result<Duration, GiveUp> {
        let start = *self.outage_start.get_or_insert(now);
        if let Some(cap) = self.config.max_attempts {
            if self.attempt >= cap {
                return Err(GiveUp::AttemptsExhausted {
                    attempts: self.attempt,
                });
            }
        }
        if let Some(limit) = self.config.max_elapsed {
            let elapsed = now.saturating_duration_since(start);
            if elapsed > limit {
                return Err(GiveUp::DeadlineExceeded { elapsed });
            }
        }
        self.attempt = self.attempt.saturating_add(1);
        let computed = self.jittered();
        self.previous = Some(computed);
        Ok(match self.floor.take() {
            Some(floor) => {
                let extra = scale(floor, self.rng.unit_f64() * self.floor_jitter());
                computed.max(floor.saturating_add(extra))
            }
            None => computed,
        })
    }

    /// Applies a server `retry_after` to the next delay only: that delay is at least `floor`
    /// plus a random extra of up to `j × floor` (`j` the proportional factor, 0.2 for the other
    /// jitter kinds, 0 for [`Jitter::None`]). A floor above `max` wins over `max`. Setting it
    /// twice before the next delay keeps the larger floor.
    pub fn set_floor(&mut self, floor: Duration) {
        self.floor = Some(self.floor.map_or(floor, |f| f.max(floor)));
    }

    /// The floor waiting to be applied to the next delay, if any.
    pub fn floor(&self) -> Option<Duration> {
        self.floor
    }

    /// Consecutive attempts made so far in this outage.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The outage is over: a handshake completed (or the user asked to reconnect now). The
    /// counter, previous delay and outage start are cleared, so the next cut starts again from
    /// the first delay. A pending server floor is kept.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.previous = None;
        self.outage_start = None;
    }

    /// The multiplier actually used: finite and at least 1.
    fn multiplier(&self) -> f64 {
        let m = self.config.multiplier;
        if m.is_finite() {
            m.max(1.0)
        } else {
            DEFAULT_MULTIPLIER
        }
    }

    /// `min(initial × multiplier^(attempt−1), max)`, exact when no scaling is involved.
    fn base(&self) -> Duration {
        let (initial, max) = (self.config.initial, self.config.max);
        let exponent = self.attempt.saturating_sub(1).min(MAX_EXPONENT);
        let factor = self.multiplier().powi(exponent as i32);
        if initial.is_zero() || factor <= 1.0 {
            return initial.min(max);
        }
        let secs = initial.as_secs_f64() * factor;
        if secs >= max.as_secs_f64() {
            max
        } else {
            secs_to_duration(secs).min(max)
        }
    }

    /// The delay of the current attempt before the floor: always within `[0, max]`.
    fn jittered(&mut self) -> Duration {
        let max = self.config.max;
        let base = self.base();
        match self.config.jitter {
            Jitter::None => base,
            Jitter::Proportional(j) => {
                let u = self.rng.unit_f64() * 2.0 - 1.0;
                let secs = base.as_secs_f64() * (1.0 + proportional_factor(j) * u);
                secs_to_duration(secs).min(max)
            }
            Jitter::Full => scale(base, self.rng.unit_f64()),
            Jitter::Decorrelated => {
                let initial = self.config.initial.min(max);
                match self.previous {
                    None => initial,
                    Some(prev) => {
                        let hi = prev.saturating_mul(3).max(initial);
                        let spread = hi.saturating_sub(initial).as_secs_f64() * self.rng.unit_f64();
                        initial.saturating_add(secs_to_duration(spread)).min(max)
                    }
                }
            }
        }
    }

    /// The jitter factor used above a server floor.
    fn floor_jitter(&self) -> f64 {
        match self.config.jitter {
            Jitter::None => 0.0,
            Jitter::Proportional(j) => proportional_factor(j),
            Jitter::Full | Jitter::Decorrelated => DEFAULT_JITTER_FACTOR,
        }
    }
}

/// A proportional jitter factor made sane: NaN or infinite gives the default, others are clamped
/// to `[0, 1]` so a delay never goes negative before clamping.
fn proportional_factor(j: f64) -> f64 {
    if j.is_finite() {
        j.clamp(0.0, 1.0)
    } else {
        DEFAULT_JITTER_FACTOR
    }
}

/// `d × k` for `k` in `[0, 1]`, never panicking (unlike `Duration::mul_f64` near `Duration::MAX`).
fn scale(d: Duration, k: f64) -> Duration {
    secs_to_duration(d.as_secs_f64() * k).min(d)
}

/// Seconds to a duration: negative or NaN gives zero, too large saturates.
fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_origin as t0;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The default schedule with a first step of 1 s and this jitter (round figures).
    fn one_second(jitter: Jitter) -> BackoffConfig {
        BackoffConfig {
            initial: secs(1),
            jitter,
            ..BackoffConfig::default()
        }
    }

    fn no_jitter() -> BackoffConfig {
        one_second(Jitter::None)
    }

    fn delays(b: &mut Backoff, now: Instant, n: usize) -> Vec<Duration> {
        (0..n).map(|_| b.next_delay(now).unwrap()).collect()
    }

    #[test]
    fn first_delay_is_initial_not_initial_times_multiplier() {
        let mut b = Backoff::new(no_jitter(), Rng::from_u64(1));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.next_delay(t0()), Ok(secs(1)));
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn delays_double_then_cap_at_max() {
        let mut b = Backoff::new(no_jitter(), Rng::from_u64(1));
        let got = delays(&mut b, t0(), 8);
        let want: Vec<Duration> = [1, 2, 4, 8, 16, 30, 30, 30].map(secs).to_vec();
        assert_eq!(got, want);
    }

    #[test]
    fn huge_attempt_counts_and_odd_configs_do_not_overflow_or_panic() {
        let t = t0();
        for multiplier in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -3.0, 0.5, 1e300] {
            for jitter in [
                Jitter::None,
                Jitter::Proportional(f64::NAN),
                Jitter::Proportional(-5.0),
                Jitter::Proportional(f64::INFINITY),
                Jitter::Proportional(7.0),
                Jitter::Full,
                Jitter::Decorrelated,
            ] {
                let config = BackoffConfig {
                    initial: Duration::MAX,
                    max: Duration::MAX,
                    multiplier,
                    jitter,
                    ..BackoffConfig::default()
                };
                let mut b = Backoff::new(config, Rng::from_u64(9));
                b.attempt = u32::MAX - 2;
                for _ in 0..4 {
                    b.set_floor(Duration::MAX);
                    assert!(b.next_delay(t + secs(1)).is_ok());
                }
                assert_eq!(b.attempt(), u32::MAX);
            }
        }
        // Multiplier below 1 counts as 1: the delay stays at `initial`.
        let mut b = Backoff::new(
            BackoffConfig {
                multiplier: 0.5,
                ..no_jitter()
            },
            Rng::from_u64(1),
        );
        assert_eq!(delays(&mut b, t, 3), vec![secs(1); 3]);
    }

    #[test]
    fn floor_is_one_shot_and_may_exceed_max() {
        let t = t0();
        let mut b = Backoff::new(no_jitter(), Rng::from_u64(1));
        b.set_floor(secs(5));
        assert_eq!(b.next_delay(t), Ok(secs(5)));
        assert_eq!(b.floor(), None);
        // The floor did not bump the schedule: attempt 2 still waits 2 s.
        assert_eq!(b.next_delay(t), Ok(secs(2)));
        // A floor below the computed delay changes nothing.
        b.set_floor(secs(1));
        assert_eq!(b.next_delay(t), Ok(secs(4)));
        // A floor above max wins over max.
        b.set_floor(secs(100));
        assert_eq!(b.next_delay(t), Ok(secs(100)));
        assert_eq!(b.next_delay(t), Ok(secs(16)));
    }

    #[test]
    fn jitter_only_adds_above_the_floor() {
        let t = t0();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let mut b = Backoff::new(one_second(Jitter::Proportional(0.2)), Rng::from_u64(seed));
            b.set_floor(secs(5));
            let d = b.next_delay(t).unwrap();
            assert!(d >= secs(5) && d <= secs(6), "{d:?}");
            seen.insert(d);
        }
        // A herd told "retry after 5 s" does not come back all at once.
        assert!(seen.len() > 40);
        // Full and decorrelated jitter spread above a floor by up to 20 %.
        for jitter in [Jitter::Full, Jitter::Decorrelated] {
            let config = BackoffConfig {
                jitter,
                ..BackoffConfig::default()
            };
            let mut b = Backoff::new(config, Rng::from_u64(3));
            b.set_floor(secs(10));
            let d = b.next_delay(t).unwrap();
            assert!(d > secs(10) && d <= secs(12), "{d:?}");
        }
    }

    #[test]
    fn attempts_cap_gives_up_on_the_call_after_the_last_attempt() {
        let t = t0();
        let config = BackoffConfig {
            max_attempts: Some(3),
            ..no_jitter()
        };
        let mut b = Backoff::new(config, Rng::from_u64(1));
        assert_eq!(delays(&mut b, t, 3), [1, 2, 4].map(secs).to_vec());
        let give_up = Err(GiveUp::AttemptsExhausted { attempts: 3 });
        assert_eq!(b.next_delay(t + secs(7)), give_up);
        assert_eq!(b.next_delay(t + secs(8)), give_up, "giving up is sticky");
        b.reset();
        assert_eq!(b.next_delay(t + secs(9)), Ok(secs(1)));
    }

    #[test]
    fn elapsed_deadline_counts_from_the_first_failure_of_the_outage() {
        let t = t0();
        let config = BackoffConfig {
            max_elapsed: Some(secs(10)),
            ..no_jitter()
        };
        let mut b = Backoff::new(config, Rng::from_u64(1));
        assert_eq!(b.next_delay(t + secs(100)), Ok(secs(1)));
        assert_eq!(b.next_delay(t + secs(101)), Ok(secs(2)));
        assert_eq!(b.next_delay(t + secs(110)), Ok(secs(4)), "at the limit");
        assert_eq!(
            b.next_delay(t + secs(111)),
            Err(GiveUp::DeadlineExceeded { elapsed: secs(11) })
        );
        assert!(b.next_delay(t + secs(113)).is_err(), "giving up is sticky");
        // A completed handshake starts a new outage.
        b.reset();
        assert_eq!(b.next_delay(t + secs(200)), Ok(secs(1)));
        assert_eq!(b.next_delay(t + secs(210)), Ok(secs(2)));
    }

    #[test]
    fn attempts_that_end_before_a_handshake_climb_the_schedule() {
        // A server that accepts sockets and drops them before `hello_ok`: no reset, so the
        // delays grow however quickly each attempt fails.
        let mut b = Backoff::new(no_jitter(), Rng::from_u64(1));
        let mut now = t0();
        let mut got = Vec::new();
        for _ in 0..5 {
            let d = b.next_delay(now).unwrap();
            got.push(d);
            now += d + secs(1);
        }
        assert_eq!(got, [1, 2, 4, 8, 16].map(secs).to_vec());
        assert_eq!(b.attempt(), 5);
    }

    #[test]
    fn a_completed_handshake_restarts_the_schedule_from_the_first_delay() {
        let t = t0();
        let mut b = Backoff::new(no_jitter(), Rng::from_u64(1));
        delays(&mut b, t, 3);
        assert_eq!(b.attempt(), 3);
        // Cuts a second apart, each after a completed handshake: always the first delay.
        for k in 0..5 {
            b.reset();
            assert_eq!(b.attempt(), 0);
            assert_eq!(b.next_delay(t + secs(10 + k)), Ok(secs(1)));
        }
        // A floor set before the handshake completed survives it (one shot).
        b.set_floor(secs(7));
        b.reset();
        assert_eq!(b.next_delay(t + secs(20)), Ok(secs(7)));
        assert_eq!(b.next_delay(t + secs(30)), Ok(secs(2)));
    }

    #[test]
    fn the_default_first_retry_is_near_immediate_and_spread() {
        let t = t0();
        let first: Vec<Duration> = (0..1000)
            .map(|seed| {
                let mut b = Backoff::new(BackoffConfig::default(), Rng::from_u64(seed));
                b.next_delay(t).unwrap()
            })
            .collect();
        assert!(first.iter().all(|d| *d <= Duration::from_millis(250)));
        // Uniform over 0-250 ms: every 50 ms slice gets about a fifth of the herd.
        for slice in 0..5u64 {
            let lo = Duration::from_millis(50 * slice);
            let hi = lo + Duration::from_millis(50);
            let n = first.iter().filter(|d| lo <= **d && **d < hi).count();
            assert!((140..=260).contains(&n), "{n} of 1000 in {lo:?}..{hi:?}");
        }
        // Later attempts double the range: 0-0.5 s, 0-1 s, ... up to 0-30 s.
        let mut b = Backoff::new(BackoffConfig::default(), Rng::from_u64(5));
        for n in 0..12 {
            let d = b.next_delay(t).unwrap();
            let cap = Duration::from_millis(250 << n).min(secs(30));
            assert!(d <= cap, "attempt {}: {d:?} > {cap:?}", n + 1);
        }
    }

    #[test]
    fn same_seed_same_schedule_different_seed_different_schedule() {
        for jitter in [
            Jitter::Proportional(0.2),
            Jitter::Full,
            Jitter::Decorrelated,
        ] {
            let config = one_second(jitter);
            let run = |seed| {
                let mut b = Backoff::new(config.clone(), Rng::from_u64(seed));
                b.set_floor(secs(3));
                delays(&mut b, t0(), 10)
            };
            assert_eq!(run(42), run(42));
            assert_ne!(run(42), run(43));
        }
    }

    #[test]
    fn jitter_kinds_stay_in_their_ranges() {
        let t = t0();
        for seed in 0..20 {
            let mut p = Backoff::new(one_second(Jitter::Proportional(0.2)), Rng::from_u64(seed));
            for (n, d) in delays(&mut p, t, 8).into_iter().enumerate() {
                let base = secs(1 << n).min(secs(30));
                assert!(d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2).min(secs(30)));
            }
            let full = one_second(Jitter::Full);
            let mut f = Backoff::new(full, Rng::from_u64(seed));
            for (n, d) in delays(&mut f, t, 8).into_iter().enumerate() {
                assert!(d <= secs(1 << n).min(secs(30)));
            }
            let dec = one_second(Jitter::Decorrelated);
            let mut c = Backoff::new(dec, Rng::from_u64(seed));
            let ds = delays(&mut c, t, 8);
            assert_eq!(ds[0], secs(1));
            for w in ds.windows(2) {
                assert!(w[1] >= secs(1) && w[1] <= (w[0] * 3).min(secs(30)));
            }
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = BackoffConfig {
            max_attempts: Some(5),
            jitter: Jitter::Full,
            ..BackoffConfig::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<BackoffConfig>(&json).unwrap(),
            config
        );
        let partial: BackoffConfig = serde_json::from_str(r#"{"jitter":"none"}"#).unwrap();
        assert_eq!(
            partial,
            BackoffConfig {
                jitter: Jitter::None,
                ..BackoffConfig::default()
            }
        );
    }
}
