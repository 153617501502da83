//! What can go wrong ([`Fault`]) and what the applications do ([`Action`]), as plain values
//! scheduled at virtual times: a run's schedule is an explicit list, so a failing one can be
//! printed, replayed and shrunk by removing entries.

use std::fmt;
use std::time::Duration;

use super::link::Direction;

/// Which state a restarted server instance starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restore {
    /// A snapshot taken at the moment of the crash: nothing is lost (synchronous persistence).
    Latest,
    /// The last snapshot persisted by [`Fault::Persist`]: whatever happened after it is lost
    /// (the "lost last writes" case). Without any persisted snapshot this is [`Restore::Empty`].
    Persisted,
    /// No snapshot at all: every session is gone.
    Empty,
}

/// A process whose clock can stall ([`Fault::Freeze`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The client with this index.
    Client(usize),
    /// The live server instance.
    Server,
}

/// A fault injected at a scheduled virtual time. Client indices that do not exist, or faults
/// that find nothing to act on (a cut with no open socket), do nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The client's current socket is cut: every message in flight is lost, and each side
    /// learns of the close after its own network delay (the client with no close code).
    Cut {
        /// The client.
        client: usize,
    },
    /// The client's current socket goes half-open: frames in `direction` vanish silently and
    /// neither side is told. Heartbeats must detect it.
    HalfOpen {
        /// The client.
        client: usize,
        /// The silent direction(s).
        direction: Direction,
    },
    /// Messages the client's sockets carry (both ways) are delayed by `extra` for `duration`.
    Slow {
        /// The client.
        client: usize,
        /// Added one-way delay.
        extra: Duration,
        /// How long the slowdown lasts.
        duration: Duration,
    },
    /// The live server persists a snapshot (serialised through JSON), to be used by a later
    /// [`Restore::Persisted`].
    Persist,
    /// The live server instance stops. With `graceful` it first calls `shutdown` (clients get
    /// their queued frames and a close 1001); otherwise it crashes (clients see cuts). The next
    /// instance takes over after `downtime`, restored as `restore` says; connections attempted
    /// meanwhile fail.
    Crash {
        /// The state the next instance starts from.
        restore: Restore,
        /// How long no instance answers.
        downtime: Duration,
        /// Shut down cleanly instead of crashing.
        graceful: bool,
    },
    /// Virtual time jumps forward by this much at once (a paused VM): every deadline in
    /// between fires late, all together.
    ClockJump(Duration),
    /// A process stalls for `duration` (a laptop lid, a GC pause, SIGSTOP): it processes no
    /// input and no timer; what arrives meanwhile is handled when it wakes.
    Freeze {
        /// The stalled process.
        target: Target,
        /// For how long.
        duration: Duration,
    },
    /// The client process restarts: its `resume_state()` goes through JSON into
    /// `Client::with_resume_state` (its socket dies with the process).
    RestartClient {
        /// The client.
        client: usize,
    },
}

/// An application action at a scheduled virtual time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The server application publishes `count` tracked `message` events to the client's
    /// session (each carries a unique token `p`).
    Publish {
        /// The client whose session receives them.
        client: usize,
        /// How many.
        count: u32,
    },
    /// The client application sends a request (`send_with_id`, id `c<client>-r<n>`).
    Send {
        /// The client.
        client: usize,
    },
    /// The client application stops its client for good (`disconnect`).
    Disconnect {
        /// The client.
        client: usize,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cut { client } => write!(f, "cut c{client}"),
            Self::HalfOpen { client, direction } => write!(f, "half-open c{client} {direction:?}"),
            Self::Slow {
                client,
                extra,
                duration,
            } => write!(f, "slow c{client} +{extra:?} for {duration:?}"),
            Self::Persist => write!(f, "persist snapshot"),
            Self::Crash {
                restore,
                downtime,
                graceful,
            } => write!(
                f,
                "{} server, restore {restore:?} after {downtime:?}",
                if *graceful { "shut down" } else { "crash" }
            ),
            Self::ClockJump(d) => write!(f, "clock jump {d:?}"),
            Self::Freeze { target, duration } => write!(f, "freeze {target:?} for {duration:?}"),
            Self::RestartClient { client } => write!(f, "restart c{client} from resume state"),
        }
    }
}
