//! One step of an explored world, and its one-line text form (what a counterexample prints
//! and what [`replay`](super::replay) reads back).

use std::fmt;
use std::str::FromStr;

use crate::sim::{Action, Direction, Fault, Restore, Target};

/// One step: something the network, a timer, an application or a fault does next. Links
/// are numbered by the world in the order clients asked for sockets (`1, 2, ...`).
///
/// Text form, one step per line (`#` starts a comment): `connect 1`, `deliver 1 up`,
/// `deliver 1 down`, `client-hears-close 1`, `server-hears-close 1`, `respond c0-r0`,
/// `restore s1`, `timer c0`, `timer server`, `late-timer c0` (fired while messages are in
/// flight: a fault), `publish c0`, `broadcast`, `send c0`, `disconnect c0`, `persist`,
/// `cut c0`, `half-open c0 up|down|both`, `drop 1`, `duplicate 1`,
/// `crash latest|persisted|empty`, `shutdown latest|persisted|empty`, `restart c0`, `settle`.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The next application action of the workload.
    Act(Action),
    /// A socket a client asked for reaches the server side (or finds no live instance).
    Connect {
        /// The link.
        link: u64,
    },
    /// The frame at the head of one direction of a link arrives.
    Deliver {
        /// The link.
        link: u64,
        /// Towards the server (`up`) or the client (`down`).
        to_server: bool,
    },
    /// The client side learns that its socket is gone (after a cut or a crash).
    ClientHearsClose {
        /// The link.
        link: u64,
    },
    /// The server side learns that a socket is gone (after a cut, or its own close).
    ServerHearsClose {
        /// The link.
        link: u64,
    },
    /// The server application answers a request.
    Respond {
        /// The request id.
        request: String,
    },
    /// A server instance comes up after a crash (before that, connections find nobody).
    Restore {
        /// The instance.
        instance: usize,
    },
    /// The clock moves to the earliest deadline and that machine's timer fires.
    Timer {
        /// Whose timer.
        target: Target,
        /// It fired while messages were still in flight (they arrive late): a fault.
        late: bool,
    },
    /// The live server persists a snapshot (what a later `crash persisted` restores).
    Persist,
    /// A fault of the simulator: `Cut`, `HalfOpen`, `Crash` (no downtime: the next instance
    /// comes up with a [`Step::Restore`]) or `RestartClient`.
    Fault(Fault),
    /// The text frame at the head of a link's server-to-client direction vanishes (a relay
    /// dropped it; the server wrote it).
    DropFrame {
        /// The link.
        link: u64,
    },
    /// The text frame at the head of a link's server-to-client direction arrives twice.
    DuplicateFrame {
        /// The link.
        link: u64,
    },
    /// Faults stop: the network heals and everything runs to the end, then the end state is
    /// checked (liveness). Only ever the last step.
    Settle,
}

impl Step {
    /// Whether the step spends the fault budget.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Self::Fault(_) | Self::DropFrame { .. } | Self::DuplicateFrame { .. }
        ) || matches!(self, Self::Timer { late: true, .. })
    }

    /// Parses a trace: one step per line, blank lines and `#` comments ignored.
    pub fn parse_trace(text: &str) -> Result<Vec<Step>, ParseStepError> {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::parse)
            .collect()
    }
}

fn restore_name(r: Restore) -> &'static str {
    match r {
        Restore::Latest => "latest",
        Restore::Persisted => "persisted",
        Restore::Empty => "empty",
    }
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::ToServer => "up",
        Direction::ToClient => "down",
        Direction::Both => "both",
    }
}

fn target_name(t: Target) -> String {
    match t {
        Target::Client(c) => format!("c{c}"),
        Target::Server => "server".into(),
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Act(Action::Publish { client, count: 1 }) => write!(f, "publish c{client}"),
            Self::Act(Action::Broadcast { count: 1 }) => write!(f, "broadcast"),
            Self::Act(Action::Send { client }) => write!(f, "send c{client}"),
            Self::Act(Action::Disconnect { client }) => write!(f, "disconnect c{client}"),
            Self::Act(other) => write!(f, "act {other:?}"),
            Self::Connect { link } => write!(f, "connect {link}"),
            Self::Deliver { link, to_server } => {
                write!(
                    f,
                    "deliver {link} {}",
                    if *to_server { "up" } else { "down" }
                )
            }
            Self::ClientHearsClose { link } => write!(f, "client-hears-close {link}"),
            Self::ServerHearsClose { link } => write!(f, "server-hears-close {link}"),
            Self::Respond { request } => write!(f, "respond {request}"),
            Self::Restore { instance } => write!(f, "restore s{instance}"),
            Self::Timer { target, late } => write!(
                f,
                "{}timer {}",
                if *late { "late-" } else { "" },
                target_name(*target)
            ),
            Self::Persist => write!(f, "persist"),
            Self::Fault(Fault::Cut { client }) => write!(f, "cut c{client}"),
            Self::Fault(Fault::HalfOpen { client, direction }) => {
                write!(f, "half-open c{client} {}", direction_name(*direction))
            }
            Self::Fault(Fault::Crash {
                restore, graceful, ..
            }) => write!(
                f,
                "{} {}",
                if *graceful { "shutdown" } else { "crash" },
                restore_name(*restore)
            ),
            Self::Fault(Fault::RestartClient { client }) => write!(f, "restart c{client}"),
            Self::Fault(other) => write!(f, "fault {other}"),
            Self::DropFrame { link } => write!(f, "drop {link}"),
            Self::DuplicateFrame { link } => write!(f, "duplicate {link}"),
            Self::Settle => write!(f, "settle"),
        }
    }
}

/// A line of a trace that is not a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseStepError {
    /// The line.
    pub line: String,
}

impl fmt::Display for ParseStepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a step: {:?} (see `Step` for the forms)", self.line)
    }
}

impl std::error::Error for ParseStepError {}

fn client(word: &str) -> Option<usize> {
    word.strip_prefix('c')?.parse().ok()
}

fn target(word: &str) -> Option<Target> {
    match word {
        "server" => Some(Target::Server),
        w => client(w).map(Target::Client),
    }
}

fn restore(word: &str) -> Option<Restore> {
    match word {
        "latest" => Some(Restore::Latest),
        "persisted" => Some(Restore::Persisted),
        "empty" => Some(Restore::Empty),
        _ => None,
    }
}

fn direction(word: &str) -> Option<Direction> {
    match word {
        "up" => Some(Direction::ToServer),
        "down" => Some(Direction::ToClient),
        "both" => Some(Direction::Both),
        _ => None,
    }
}

impl FromStr for Step {
    type Err = ParseStepError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let link = |w: &str| w.parse::<u64>().ok();
        let crash = |w: &str, graceful: bool| {
            restore(w).map(|restore| {
                Self::Fault(Fault::Crash {
                    restore,
                    downtime: std::time::Duration::ZERO,
                    graceful,
                })
            })
        };
        let step = match words.as_slice() {
            ["publish", c] => {
                client(c).map(|client| Self::Act(Action::Publish { client, count: 1 }))
            }
            ["broadcast"] => Some(Self::Act(Action::Broadcast { count: 1 })),
            ["send", c] => client(c).map(|client| Self::Act(Action::Send { client })),
            ["disconnect", c] => client(c).map(|client| Self::Act(Action::Disconnect { client })),
            ["connect", l] => link(l).map(|link| Self::Connect { link }),
            ["deliver", l, "up"] => link(l).map(|link| Self::Deliver {
                link,
                to_server: true,
            }),
            ["deliver", l, "down"] => link(l).map(|link| Self::Deliver {
                link,
                to_server: false,
            }),
            ["client-hears-close", l] => link(l).map(|link| Self::ClientHearsClose { link }),
            ["server-hears-close", l] => link(l).map(|link| Self::ServerHearsClose { link }),
            ["respond", r] => Some(Self::Respond {
                request: (*r).to_owned(),
            }),
            ["restore", s] => s
                .strip_prefix('s')
                .and_then(|n| n.parse().ok())
                .map(|instance| Self::Restore { instance }),
            ["timer", t] => target(t).map(|target| Self::Timer {
                target,
                late: false,
            }),
            ["late-timer", t] => target(t).map(|target| Self::Timer { target, late: true }),
            ["persist"] => Some(Self::Persist),
            ["cut", c] => client(c).map(|client| Self::Fault(Fault::Cut { client })),
            ["half-open", c, d] => client(c)
                .zip(direction(d))
                .map(|(client, direction)| Self::Fault(Fault::HalfOpen { client, direction })),
            ["crash", r] => crash(r, false),
            ["shutdown", r] => crash(r, true),
            ["restart", c] => client(c).map(|client| Self::Fault(Fault::RestartClient { client })),
            ["drop", l] => link(l).map(|link| Self::DropFrame { link }),
            ["duplicate", l] => link(l).map(|link| Self::DuplicateFrame { link }),
            ["settle"] => Some(Self::Settle),
            _ => None,
        };
        step.ok_or_else(|| ParseStepError {
            line: line.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_reads_back_from_its_text() {
        let steps = [
            Step::Act(Action::Publish {
                client: 1,
                count: 1,
            }),
            Step::Act(Action::Broadcast { count: 1 }),
            Step::Act(Action::Send { client: 0 }),
            Step::Act(Action::Disconnect { client: 0 }),
            Step::Connect { link: 3 },
            Step::Deliver {
                link: 3,
                to_server: true,
            },
            Step::Deliver {
                link: 3,
                to_server: false,
            },
            Step::ClientHearsClose { link: 2 },
            Step::ServerHearsClose { link: 2 },
            Step::Respond {
                request: "c0-r1".into(),
            },
            Step::Restore { instance: 1 },
            Step::Timer {
                target: Target::Server,
                late: false,
            },
            Step::Timer {
                target: Target::Client(1),
                late: true,
            },
            Step::Persist,
            Step::Fault(Fault::Cut { client: 0 }),
            Step::Fault(Fault::HalfOpen {
                client: 1,
                direction: Direction::Both,
            }),
            Step::Fault(Fault::Crash {
                restore: Restore::Persisted,
                downtime: std::time::Duration::ZERO,
                graceful: true,
            }),
            Step::Fault(Fault::RestartClient { client: 0 }),
            Step::DropFrame { link: 4 },
            Step::DuplicateFrame { link: 4 },
            Step::Settle,
        ];
        let text: String = steps.iter().map(|s| format!("{s}  # why\n")).collect();
        assert_eq!(Step::parse_trace(&text).unwrap(), steps);
        assert!(Step::parse_trace("deliver 1 sideways").is_err());
        assert_eq!(
            steps.iter().filter(|s| s.is_fault()).count(),
            7,
            "faults, drops, duplicates and late timers spend the budget"
        );
    }
}
