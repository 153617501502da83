//! Ping schedule and silence watchdog, shared by the client and server machines.
//!
//! [`Heartbeat`] holds no clock: it is advanced by [`Heartbeat::poll`] with the caller's `now` and
//! asks to be woken at [`Heartbeat::next_deadline`]. Pings keep a fixed schedule (every `interval`
//! after the previous ping); only inbound frames prove the peer alive, our own traffic does not.
//! After `interval × missed_beats` without an inbound frame the peer is declared dead, once.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Parameters of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatConfig {
    /// Time between pings (the client takes it from the server's `heartbeat_ms` policy). Zero
    /// disables the heartbeat: no pings and no silence watchdog.
    pub interval: Duration,
    /// The peer is dead after `interval × missed_beats` without an inbound frame (a client
    /// uses 2). Zero is treated as 1.
    pub missed_beats: u32,
}

impl HeartbeatConfig {
    /// A configuration that never pings and never declares the peer dead.
    pub fn disabled() -> Self {
        Self {
            interval: Duration::ZERO,
            missed_beats: 1,
        }
    }

    /// The silence after which the peer is dead, or `None` when disabled.
    pub fn silence_limit(&self) -> Option<Duration> {
        if self.interval.is_zero() {
            None
        } else {
            Some(self.interval.saturating_mul(self.missed_beats.max(1)))
        }
    }
}

/// What the owner of a [`Heartbeat`] must do after [`Heartbeat::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Send a ping frame to the peer now.
    SendPing,
    /// The peer has been silent too long: close the connection as dead (reported once).
    Dead,
}

/// The heartbeat state of one connection: when to ping next and when the peer was last heard.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    silence_limit: Option<Duration>,
    interval: Duration,
    last_inbound: Instant,
    next_ping: Option<Instant>,
    dead: bool,
}

impl Heartbeat {
    /// A heartbeat starting at `now`, which counts as inbound activity; the first ping is due at
    /// `now + interval`. A zero interval disables it (never pings, never dead).
    pub fn new(config: HeartbeatConfig, now: Instant) -> Self {
        let silence_limit = config.silence_limit();
        Self {
            silence_limit,
            interval: config.interval,
            last_inbound: now,
            next_ping: silence_limit.and_then(|_| now.checked_add(config.interval)),
            dead: false,
        }
    }

    /// Any inbound frame proves the peer alive and pushes the silence deadline; the ping schedule
    /// is unchanged. Ignored once the peer was declared dead, and never moves the last inbound
    /// time backwards.
    pub fn on_inbound(&mut self, now: Instant) {
        if !self.dead {
            self.last_inbound = self.last_inbound.max(now);
        }
    }

    /// The earliest of the next ping time and the first instant at which the peer counts as dead
    /// (one nanosecond after `last_inbound + interval × missed_beats`, since at exactly the limit it is
    /// still alive). `None` if disabled, already dead, or too far in the future to represent.
    pub fn next_deadline(&self) -> Option<Instant> {
        let silence = self.dead_at();
        match (self.next_ping, silence) {
            (Some(p), Some(s)) => Some(p.min(s)),
            (p, s) => p.or(s),
        }
    }

    /// Advances to `now`. Returns `Some(Dead)` (once) if more than `interval × missed_beats` passed since
    /// the last inbound frame — checked first — else `Some(SendPing)` if the ping time has come
    /// (the next ping is then scheduled at `now + interval`), else `None`. Calling early or twice
    /// does nothing extra; a `now` earlier than a previous one is harmless.
    ///
    /// Pass the clock's current time, never a deadline read back from
    /// [`next_deadline`](Self::next_deadline).
    pub fn poll(&mut self, now: Instant) -> Option<HeartbeatAction> {
        if self.dead {
            return None;
        }
        if self.dead_at().is_some_and(|at| now >= at) {
            self.dead = true;
            self.next_ping = None;
            return Some(HeartbeatAction::Dead);
        }
        match self.next_ping {
            Some(at) if now >= at => {
                self.next_ping = now.checked_add(self.interval);
                Some(HeartbeatAction::SendPing)
            }
            _ => None,
        }
    }

    /// When the last inbound frame arrived (or the heartbeat started).
    pub fn last_inbound(&self) -> Instant {
        self.last_inbound
    }

    /// Whether [`HeartbeatAction::Dead`] has been reported.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Whether the heartbeat is active (non-zero interval).
    pub fn is_enabled(&self) -> bool {
        self.silence_limit.is_some()
    }

    /// The first instant strictly after the silence limit, if the watchdog is armed.
    fn dead_at(&self) -> Option<Instant> {
        if self.dead {
            return None;
        }
        let limit = self.silence_limit?.saturating_add(Duration::from_nanos(1));
        self.last_inbound.checked_add(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeartbeatAction::{Dead, SendPing};

    use crate::test_origin as t0;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn config(interval: u64, missed_beats: u32) -> HeartbeatConfig {
        HeartbeatConfig {
            interval: secs(interval),
            missed_beats,
        }
    }

    #[test]
    fn pings_every_interval_without_inbound() {
        let t = t0();
        let mut hb = Heartbeat::new(config(5, 10), t);
        assert_eq!(hb.next_deadline(), Some(t + secs(5)));
        assert_eq!(hb.poll(t + secs(4)), None);
        for k in 1..=5 {
            let now = t + secs(5 * k);
            assert_eq!(hb.poll(now), Some(SendPing), "ping {k}");
            assert_eq!(hb.next_deadline(), Some(now + secs(5)));
        }
        // A late wake-up sends one ping and reschedules from the actual time.
        assert_eq!(hb.poll(t + secs(37)), Some(SendPing));
        assert_eq!(hb.next_deadline(), Some(t + secs(42)));
    }

    #[test]
    fn inbound_pushes_silence_deadline_but_not_pings() {
        let t = t0();
        let mut hb = Heartbeat::new(config(5, 2), t);
        hb.on_inbound(t + secs(3));
        assert_eq!(hb.last_inbound(), t + secs(3));
        assert_eq!(hb.poll(t + secs(5)), Some(SendPing), "ping schedule kept");
        hb.on_inbound(t + secs(9));
        assert_eq!(hb.poll(t + secs(10)), Some(SendPing));
        // Silence deadline is 9 + 10 s; the next ping (15 s) comes first.
        assert_eq!(hb.next_deadline(), Some(t + secs(15)));
        assert_eq!(hb.poll(t + secs(15)), Some(SendPing));
        assert_eq!(
            hb.next_deadline(),
            Some(t + secs(19) + Duration::from_nanos(1))
        );
        assert_eq!(hb.poll(t + secs(19)), None, "exactly at the limit: alive");
    }

    #[test]
    fn dead_strictly_after_interval_times_factor_of_silence() {
        let t = t0();
        let mut hb = Heartbeat::new(config(5, 2), t);
        assert_eq!(hb.poll(t + secs(5)), Some(SendPing));
        assert_eq!(hb.poll(t + secs(10)), Some(SendPing), "at the limit: alive");
        let just_after = t + secs(10) + Duration::from_nanos(1);
        assert_eq!(hb.next_deadline(), Some(just_after));
        assert_eq!(hb.poll(just_after), Some(Dead));
        assert!(hb.is_dead());
        assert_eq!(hb.poll(t + secs(20)), None, "dead is reported once");
        assert_eq!(hb.next_deadline(), None);
        hb.on_inbound(t + secs(21));
        assert_eq!(hb.poll(t + secs(30)), None);
    }

    #[test]
    fn dead_is_checked_before_ping() {
        let t = t0();
        let mut hb = Heartbeat::new(config(5, 1), t);
        // Both the ping (5 s) and the silence limit (5 s) are long past.
        assert_eq!(hb.poll(t + secs(60)), Some(Dead));
    }

    #[test]
    fn zero_factor_counts_as_one() {
        let t = t0();
        let mut hb = Heartbeat::new(config(5, 0), t);
        assert_eq!(hb.poll(t + secs(5)), Some(SendPing));
        assert_eq!(hb.poll(t + secs(5) + Duration::from_nanos(1)), Some(Dead));
    }

    #[test]
    fn disabled_heartbeat_never_fires() {
        let t = t0();
        for cfg in [HeartbeatConfig::disabled(), config(0, 2), config(0, 0)] {
            let mut hb = Heartbeat::new(cfg, t);
            assert!(!hb.is_enabled());
            assert_eq!(hb.next_deadline(), None);
            for s in [0, 1, 1_000, 10_000_000] {
                assert_eq!(hb.poll(t + secs(s)), None);
            }
        }
    }

    #[test]
    fn early_and_double_polls_are_no_ops() {
        let t = t0();
        let mut hb = Heartbeat::new(config(5, 3), t);
        assert_eq!(hb.poll(t), None);
        assert_eq!(hb.poll(t + secs(4)), None);
        assert_eq!(hb.poll(t + secs(6)), Some(SendPing));
        assert_eq!(hb.poll(t + secs(6)), None);
        assert_eq!(hb.poll(t + secs(7)), None);
        assert_eq!(hb.next_deadline(), Some(t + secs(11)));
    }

    #[test]
    fn time_going_backwards_never_panics() {
        let t = t0() + secs(1_000);
        let mut hb = Heartbeat::new(config(5, 2), t);
        assert_eq!(hb.poll(t - secs(500)), None);
        hb.on_inbound(t - secs(100));
        assert_eq!(hb.last_inbound(), t, "last inbound never moves back");
        assert_eq!(hb.poll(t + secs(5)), Some(SendPing));
        assert_eq!(hb.poll(t - secs(1)), None);
        assert_eq!(hb.poll(t + secs(10)), Some(SendPing));
        assert_eq!(hb.poll(t + secs(11)), Some(Dead));
    }

    #[test]
    fn huge_intervals_do_not_overflow() {
        let t = t0();
        let cfg = HeartbeatConfig {
            interval: Duration::MAX,
            missed_beats: u32::MAX,
        };
        let mut hb = Heartbeat::new(cfg, t);
        assert_eq!(hb.next_deadline(), None);
        assert_eq!(hb.poll(t + secs(1_000_000)), None);
    }
}
