//! The in-memory network: one [`Link`] per socket, two FIFO pipes per link (like TCP: never
//! reordered within a direction), per-message delivery times drawn from the seed.

use std::collections::VecDeque;
use std::time::Duration;

use tether_core::rng::Rng;

/// Latency model of the simulated network. All times are virtual.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// Smallest one-way delay of a message (and of a socket open).
    pub min_delay: Duration,
    /// Largest ordinary one-way delay; delays are uniform in `[min_delay, max_delay]`.
    pub max_delay: Duration,
    /// Probability that a message is additionally held up by a latency spike.
    pub spike_probability: f64,
    /// Largest extra delay of a spike (uniform in `[0, spike_max]`).
    pub spike_max: Duration,
    /// Virtual-time granularity: delivery times and machine deadlines are rounded up to a
    /// multiple of it, so simultaneous work is batched (the server's deadline is recomputed once
    /// per instant). Zero disables rounding.
    pub tick: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(40),
            spike_probability: 0.02,
            spike_max: Duration::from_millis(800),
            tick: Duration::from_millis(1),
        }
    }
}

impl NetworkConfig {
    /// One one-way delay drawn from `rng`.
    pub(crate) fn sample(&self, rng: &mut Rng) -> Duration {
        let lo = self.min_delay;
        let hi = self.max_delay.max(lo);
        let mut d = lo + (hi - lo).mul_f64(rng.unit_f64());
        if self.spike_probability > 0.0 && rng.unit_f64() < self.spike_probability {
            d += self.spike_max.mul_f64(rng.unit_f64());
        }
        d
    }

    /// `t` rounded up to the tick.
    pub(crate) fn round_up(&self, t: Duration) -> Duration {
        let tick = self.tick.as_nanos();
        if tick == 0 {
            return t;
        }
        let n = t.as_nanos().div_ceil(tick) * tick;
        Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// A direction of a link, for faults that affect one side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
    /// Both directions.
    Both,
}

impl Direction {
    pub(crate) fn up(self) -> bool {
        matches!(self, Self::ToServer | Self::Both)
    }

    pub(crate) fn down(self) -> bool {
        matches!(self, Self::ToClient | Self::Both)
    }
}

/// What travels through a pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A text frame.
    Text(String),
    /// A close frame (code, reason).
    Close(u16, String),
}

/// One message in flight.
#[derive(Debug, Clone)]
pub(crate) struct Packet {
    /// Unique id, so a stale wake-up never delivers the wrong packet.
    pub(crate) id: u64,
    pub(crate) payload: Payload,
    /// Written while the direction was silent: it vanishes on arrival.
    pub(crate) lost: bool,
    /// A second copy of a frame (the explorer's duplicate-frame fault): the server wrote it
    /// once, so its arrival confirms nothing.
    pub(crate) copy: bool,
}

/// One direction of a link: a FIFO of packets with non-decreasing delivery times.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    pub(crate) queue: VecDeque<Packet>,
    /// Half-open: frames written now vanish silently; neither side is told.
    pub(crate) silent: bool,
    last: Duration,
}

impl Pipe {
    /// Queues `payload` for delivery at `at` or later (never before an earlier packet).
    pub(crate) fn push(&mut self, id: u64, at: Duration, payload: Payload) -> Duration {
        let at = at.max(self.last);
        self.last = at;
        self.queue.push_back(Packet {
            id,
            payload,
            lost: self.silent,
            copy: false,
        });
        at
    }
}

/// One socket between a client process and a server instance.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) client: usize,
    /// The server instance it was routed to.
    pub(crate) instance: usize,
    /// Incarnation of that instance.
    pub(crate) instance_gen: u32,
    /// Client to server.
    pub(crate) up: Pipe,
    /// Server to client.
    pub(crate) down: Pipe,
    /// The client may still be fed from this socket (not closed on its side).
    pub(crate) client_open: bool,
    /// The server knows the connection (connected and not yet reported closed).
    pub(crate) server_open: bool,
    /// The server's `Close` has been written: nothing more may follow.
    pub(crate) server_close_sent: bool,
    /// Cut: everything written from now on is lost.
    pub(crate) cut: bool,
    /// Frames handed out by the server and not yet confirmed with `handle_sent`.
    pub(crate) in_flight: usize,
    /// The server announced its close of this connection (`ServerEvent::Closing`).
    pub(crate) closing_announced: bool,
}

impl Link {
    pub(crate) fn new(client: usize) -> Self {
        Self {
            client,
            instance: usize::MAX,
            instance_gen: 0,
            up: Pipe::default(),
            down: Pipe::default(),
            client_open: true,
            server_open: false,
            server_close_sent: false,
            cut: false,
            in_flight: 0,
            closing_announced: false,
        }
    }

    /// Whether any packet is still in flight.
    pub(crate) fn busy(&self) -> bool {
        !self.up.queue.is_empty() || !self.down.queue.is_empty()
    }

    /// Whether one direction (or both) is silently dropping frames.
    pub(crate) fn half_open(&self) -> bool {
        !self.cut && (self.up.silent || self.down.silent)
    }
}
