//! The simulator's fuzz body: a seed and a fault schedule read from the bytes,
//! run through [`Scenario`] with every simulator invariant checked after every step.
//!
//! # Encoding
//! A [`SimScript`] is the seed (8 bytes, little-endian), one byte of clients (`b % 3 + 1`),
//! one byte of faulty-phase length (`b % 29 + 2` seconds), then schedule entries until the
//! bytes run out (at most [`MAX_ENTRIES`]): a time (2 bytes, units of 10 ms), an opcode byte
//! modulo 11 in [`SimEntry`] order (the faults in [`Fault`] declaration order, then the
//! actions), and the fields. Client indices are one byte modulo 4 (an index beyond the clients
//! is ignored by the simulator). Durations are one byte: slowdown extra × 20 ms, slowdown and
//! freeze length × 100 ms, clock jump × 500 ms. A crash is one byte: restore `(b & 3) % 3` (latest,
//! persisted, empty), downtime `(b >> 2 & 3) % 3` (0, 500 ms, 3 s), graceful `b & 0x10`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::script::{Reader, Writer};
use crate::sim::{Action, Direction, Fault, Profile, Restore, RunReport, Scenario, Target};

/// Schedule entries read at most (the rest of the bytes is ignored).
pub const MAX_ENTRIES: usize = 32;

/// One scheduled entry: a fault or an application action.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEntry {
    /// A fault.
    Fault(Fault),
    /// An application action, on top of the seed's workload.
    Action(Action),
}

/// A simulator fuzz script: the seed (configs and workload), the size, and the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct SimScript {
    /// The scenario seed.
    pub seed: u64,
    /// Clients, 1..=3.
    pub clients: u8,
    /// Length of the faulty phase, seconds (2..=30).
    pub secs: u8,
    /// The schedule, at virtual times since the start.
    pub schedule: Vec<(Duration, SimEntry)>,
}

impl Default for SimScript {
    fn default() -> Self {
        Self {
            seed: 0,
            clients: 1,
            secs: 2,
            schedule: Vec::new(),
        }
    }
}

const DOWNTIMES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(3),
];

fn units(d: Duration, unit: Duration) -> u64 {
    (d.as_nanos() / unit.as_nanos()) as u64
}

impl SimScript {
    /// Reads any bytes as a script.
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut r = Reader(data);
        let seed = r.u64();
        let clients = r.u8() % 3 + 1;
        let secs = r.u8() % 29 + 2;
        let mut schedule = Vec::new();
        while !r.0.is_empty() && schedule.len() < MAX_ENTRIES {
            let at = Duration::from_millis(u64::from(r.u16()) * 10);
            schedule.push((at, entry(&mut r)));
        }
        Self {
            seed,
            clients,
            secs,
            schedule,
        }
    }

    /// Writes the script so that [`SimScript::from_bytes`] reads it back (durations are
    /// rounded down to their units and brought into range).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.u64(self.seed);
        w.u8(self.clients.clamp(1, 3) - 1);
        w.u8(self.secs.clamp(2, 30) - 2);
        for (at, e) in self.schedule.iter().take(MAX_ENTRIES) {
            let at = units(*at, Duration::from_millis(10)).min(u64::from(u16::MAX)) as u16;
            w.0.extend_from_slice(&at.to_le_bytes());
            write_entry(&mut w, e);
        }
        w.0
    }

    /// The scenario: generated from the seed (configs, clients, workload) with this size, its
    /// random faults replaced by this schedule.
    pub fn scenario(&self) -> Scenario {
        let n = usize::from(self.clients.clamp(1, 3));
        let d = Duration::from_secs(self.secs.clamp(2, 30).into());
        let profile = Profile {
            min_clients: n,
            max_clients: n,
            min_duration: d,
            max_duration: d,
            max_faults: 0,
            lossy_restores: true,
        };
        let mut s = Scenario::generate_with(self.seed, &profile);
        s.faults.clear();
        for (at, e) in &self.schedule {
            match e {
                SimEntry::Fault(f) => s.faults.push((*at, f.clone())),
                SimEntry::Action(a) => s.actions.push((*at, a.clone())),
            }
        }
        s.faults.sort_by_key(|f| f.0);
        s.actions.sort_by_key(|a| a.0);
        s
    }
}

fn client(r: &mut Reader<'_>) -> usize {
    usize::from(r.u8() % 4)
}

fn ms(n: u8, unit: u64) -> Duration {
    Duration::from_millis(u64::from(n) * unit)
}

fn entry(r: &mut Reader<'_>) -> SimEntry {
    let fault = match r.u8() % 11 {
        0 => Fault::Cut { client: client(r) },
        1 => Fault::HalfOpen {
            client: client(r),
            direction: r.pick(&[Direction::ToServer, Direction::ToClient, Direction::Both]),
        },
        2 => Fault::Slow {
            client: client(r),
            extra: ms(r.u8(), 20),
            duration: ms(r.u8(), 100),
        },
        3 => Fault::Persist,
        4 => {
            let b = r.u8();
            Fault::Crash {
                restore: [Restore::Latest, Restore::Persisted, Restore::Empty]
                    [usize::from((b & 3) % 3)],
                downtime: DOWNTIMES[usize::from((b >> 2 & 3) % 3)],
                graceful: b & 0x10 != 0,
            }
        }
        5 => Fault::ClockJump(ms(r.u8(), 500)),
        6 => {
            let t = r.u8();
            Fault::Freeze {
                target: if t == 0xFF {
                    Target::Server
                } else {
                    Target::Client(usize::from(t % 4))
                },
                duration: ms(r.u8(), 100),
            }
        }
        7 => Fault::RestartClient { client: client(r) },
        8 => {
            let client = client(r);
            let b = r.u8();
            let count = u32::from(b % 16) + 1;
            // The high bit: to every session at once.
            return SimEntry::Action(if b & 0x80 != 0 {
                Action::Broadcast { count }
            } else {
                Action::Publish { client, count }
            });
        }
        9 => return SimEntry::Action(Action::Send { client: client(r) }),
        _ => return SimEntry::Action(Action::Disconnect { client: client(r) }),
    };
    SimEntry::Fault(fault)
}

fn byte(units: u64) -> u8 {
    units.min(255) as u8
}

fn write_client(w: &mut Writer, c: usize) {
    w.u8((c % 4) as u8);
}

fn write_entry(w: &mut Writer, e: &SimEntry) {
    match e {
        SimEntry::Fault(f) => match f {
            Fault::Cut { client } => {
                w.u8(0);
                write_client(w, *client);
            }
            Fault::HalfOpen { client, direction } => {
                w.u8(1);
                write_client(w, *client);
                w.u8(*direction as u8);
            }
            Fault::Slow {
                client,
                extra,
                duration,
            } => {
                w.u8(2);
                write_client(w, *client);
                w.u8(byte(units(*extra, Duration::from_millis(20))));
                w.u8(byte(units(*duration, Duration::from_millis(100))));
            }
            Fault::Persist => w.u8(3),
            Fault::Crash {
                restore,
                downtime,
                graceful,
            } => {
                w.u8(4);
                let d = DOWNTIMES.iter().position(|x| x == downtime).unwrap_or(0) as u8;
                w.u8(*restore as u8 | d << 2 | u8::from(*graceful) << 4);
            }
            Fault::ClockJump(d) => {
                w.u8(5);
                w.u8(byte(units(*d, Duration::from_millis(500))));
            }
            Fault::Freeze { target, duration } => {
                w.u8(6);
                w.u8(match target {
                    Target::Server => 0xFF,
                    Target::Client(c) => (c % 4) as u8,
                });
                w.u8(byte(units(*duration, Duration::from_millis(100))));
            }
            Fault::RestartClient { client } => {
                w.u8(7);
                write_client(w, *client);
            }
        },
        SimEntry::Action(a) => match a {
            Action::Publish { client, count } => {
                w.u8(8);
                write_client(w, *client);
                w.u8(((*count).clamp(1, 16) - 1) as u8);
            }
            Action::Broadcast { count } => {
                w.u8(8);
                write_client(w, 0);
                w.u8(0x80 | ((*count).clamp(1, 16) - 1) as u8);
            }
            Action::Send { client } => {
                w.u8(9);
                write_client(w, *client);
            }
            Action::Disconnect { client } => {
                w.u8(10);
                write_client(w, *client);
            }
        },
    }
}

/// Fuzz body of the simulator: `data` is read as a [`SimScript`] and its [`Scenario`] is run
/// from `origin` (virtual time; the body never reads a clock) to the end, settling included.
/// Panics with the violation and the schedule if any simulator invariant breaks (see the `sim`
/// module docs).
pub fn sim_at(origin: Instant, data: &[u8]) -> RunReport {
    let script = SimScript::from_bytes(data);
    match script.scenario().run(origin) {
        Ok(report) => report,
        Err(v) => {
            let mut schedule = String::new();
            for (at, e) in &script.schedule {
                let _ = match e {
                    SimEntry::Fault(f) => writeln!(schedule, "  {:.2}s {f}", at.as_secs_f64()),
                    SimEntry::Action(a) => writeln!(schedule, "  {:.2}s {a:?}", at.as_secs_f64()),
                };
            }
            panic!(
                "sim invariant broken: {v}\n seed {}, {} client(s), {} s, schedule:\n{schedule}",
                script.seed, script.clients, script.secs
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_sim_scripts_read_back_and_any_bytes_are_a_script() {
        let ms = Duration::from_millis;
        let script = SimScript {
            seed: u64::MAX - 3,
            clients: 3,
            secs: 30,
            schedule: vec![
                (ms(10), SimEntry::Fault(Fault::Cut { client: 2 })),
                (
                    ms(500),
                    SimEntry::Fault(Fault::HalfOpen {
                        client: 1,
                        direction: Direction::Both,
                    }),
                ),
                (
                    ms(700),
                    SimEntry::Fault(Fault::Slow {
                        client: 0,
                        extra: ms(400),
                        duration: ms(2500),
                    }),
                ),
                (ms(900), SimEntry::Fault(Fault::Persist)),
                (
                    ms(1000),
                    SimEntry::Fault(Fault::Crash {
                        restore: Restore::Persisted,
                        downtime: ms(500),
                        graceful: true,
                    }),
                ),
                (ms(1100), SimEntry::Fault(Fault::ClockJump(ms(45_000)))),
                (
                    ms(1200),
                    SimEntry::Fault(Fault::Freeze {
                        target: Target::Server,
                        duration: ms(3000),
                    }),
                ),
                (
                    ms(1300),
                    SimEntry::Fault(Fault::RestartClient { client: 3 }),
                ),
                (
                    ms(1400),
                    SimEntry::Action(Action::Publish {
                        client: 1,
                        count: 16,
                    }),
                ),
                (ms(1450), SimEntry::Action(Action::Broadcast { count: 3 })),
                (ms(1500), SimEntry::Action(Action::Send { client: 0 })),
                (ms(1600), SimEntry::Action(Action::Disconnect { client: 2 })),
            ],
        };
        assert_eq!(SimScript::from_bytes(&script.to_bytes()), script);
        assert_eq!(SimScript::from_bytes(&[]), SimScript::default());
        let s = script.scenario();
        assert_eq!((s.clients.len(), s.faults.len()), (3, 8));
    }

    #[test]
    fn a_half_open_link_during_a_freeze_is_judged_from_the_wake_up() {
        // Found by this body: the sim's half-open deadline started while the server was frozen.
        let ms = Duration::from_millis;
        let script = SimScript {
            seed: 13961653357736099845,
            clients: 1,
            secs: 13,
            schedule: vec![
                (
                    ms(20),
                    SimEntry::Fault(Fault::Freeze {
                        target: Target::Server,
                        duration: ms(25_500),
                    }),
                ),
                (
                    ms(1000),
                    SimEntry::Fault(Fault::HalfOpen {
                        client: 0,
                        direction: Direction::Both,
                    }),
                ),
            ],
        };
        sim_at(crate::test_origin(), &script.to_bytes());
    }
}
