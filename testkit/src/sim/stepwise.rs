//! The world driven one step at a time, for the exhaustive explorer ([`crate::exhaustive`]).
//!
//! In this mode nothing happens by itself: a message takes no time and waits at its pipe's
//! head until the explorer delivers it (FIFO per direction, as TCP), a socket's open and the
//! news of its close wait as notices, and a machine's timer waits in its deadline until the
//! explorer fires it (always the earliest one: the clock never goes back). Every order the
//! real network and scheduler could produce is one sequence of these steps.

use std::cmp::Reverse;
use std::time::Duration;

use super::fault::Target;
use super::fingerprint::History;
use super::link::{NetworkConfig, Payload};
use super::world::{Kind, Sim};
use super::Violation;

/// A notice waiting in a stepwise world (an item of the event heap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A socket the client asked for reaches the server side (or finds none).
    Connect(u64),
    /// The client side learns the socket is gone.
    ClientClose(u64),
    /// The server side learns the socket is gone.
    ServerClose(u64),
    /// The server application answers a request.
    Respond(String),
    /// A server instance comes up.
    Restore(usize),
}

impl Notice {
    fn of(kind: &Kind) -> Option<Self> {
        Some(match kind {
            Kind::Connect(l) => Self::Connect(*l),
            Kind::ClientClose(l) => Self::ClientClose(*l),
            Kind::ServerClose(l) => Self::ServerClose(*l),
            Kind::Respond { request_id, .. } => Self::Respond(request_id.clone()),
            Kind::Restore(i, _) => Self::Restore(*i),
            _ => return None,
        })
    }
}

impl Sim {
    /// Switches a new world (before any client is added) to stepwise mode.
    pub(crate) fn enter_stepwise(&mut self) {
        self.stepwise = true;
        self.config.network = NetworkConfig {
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            spike_probability: 0.0,
            spike_max: Duration::ZERO,
            tick: self.config.network.tick,
        };
        self.config.respond_within = self.config.respond_within.map(|_| Duration::ZERO);
        let now = self.instant();
        for inst in &mut self.instances {
            if let Some(server) = &inst.server {
                inst.history = History::start(("new", server.config(), now));
            }
        }
    }

    /// Back to the ordinary scheduler (for [`Sim::settle`]): frames in the pipes and the
    /// machines' deadlines go back into the event heap, in the order they would have run.
    pub(crate) fn leave_stepwise(&mut self) {
        self.stepwise = false;
        let mut deliveries = Vec::new();
        for (&link, l) in &self.links {
            deliveries.extend(l.up.queue.iter().map(|p| Kind::DeliverUp(link, p.id)));
            deliveries.extend(l.down.queue.iter().map(|p| Kind::DeliverDown(link, p.id)));
        }
        for kind in deliveries {
            self.push(self.now, kind);
        }
        for c in 0..self.clients.len() {
            self.clients[c].armed = None;
            self.arm_client(c);
        }
    }

    /// The notices waiting, in the order the ordinary scheduler would run them.
    pub(crate) fn notices(&self) -> Vec<Notice> {
        let mut items: Vec<_> = self.heap.iter().map(|r| &r.0).collect();
        items.sort();
        items.iter().filter_map(|i| Notice::of(&i.kind)).collect()
    }

    /// Takes the first waiting `notice` and handles it; false if there is none.
    pub(crate) fn take_notice(&mut self, notice: &Notice) -> bool {
        let mut items = std::mem::take(&mut self.heap).into_sorted_vec();
        // Sorted descending by `Reverse`: the earliest item is last.
        let pos = items
            .iter()
            .rposition(|r| Notice::of(&r.0.kind).as_ref() == Some(notice));
        let taken = pos.map(|p| items.remove(p));
        self.heap = items.into();
        match taken {
            Some(Reverse(item)) => {
                self.handle_item(item.kind);
                true
            }
            None => false,
        }
    }

    /// Links with a frame waiting at the head of a pipe: `(link, towards the server)`.
    pub(crate) fn waiting_frames(&self) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        for (&id, l) in &self.links {
            if !l.up.queue.is_empty() {
                out.push((id, true));
            }
            if !l.down.queue.is_empty() {
                out.push((id, false));
            }
        }
        out
    }

    /// Whether the frame at the head of the link's server-to-client pipe is a text frame the
    /// client would receive (one a relay could drop or repeat).
    pub(crate) fn text_waiting_down(&self, link: u64) -> bool {
        self.links.get(&link).is_some_and(|l| {
            l.down
                .queue
                .front()
                .is_some_and(|p| !p.lost && matches!(p.payload, Payload::Text(_)))
        })
    }

    /// Delivers the frame at the head of a pipe; false if there is none.
    pub(crate) fn deliver_head(&mut self, link: u64, to_server: bool) -> bool {
        let Some(l) = self.links.get(&link) else {
            return false;
        };
        let pipe = if to_server { &l.up } else { &l.down };
        let Some(id) = pipe.queue.front().map(|p| p.id) else {
            return false;
        };
        if to_server {
            self.deliver_up(link, id);
        } else {
            self.deliver_down(link, id);
        }
        true
    }

    /// The frame at the head of the link's server-to-client pipe vanishes on its way (the
    /// server wrote it, the client never reads it); false if there is no such text frame.
    pub(crate) fn drop_head(&mut self, link: u64) -> bool {
        if !self.text_waiting_down(link) {
            return false;
        }
        if let Some(p) = self
            .links
            .get_mut(&link)
            .and_then(|l| l.down.queue.front_mut())
        {
            p.lost = true;
        }
        self.deliver_head(link, false)
    }

    /// The frame at the head of the link's server-to-client pipe arrives twice; false if
    /// there is no such text frame.
    pub(crate) fn duplicate_head(&mut self, link: u64) -> bool {
        if !self.text_waiting_down(link) {
            return false;
        }
        self.seq += 1;
        let id = self.seq;
        let Some(l) = self.links.get_mut(&link) else {
            return false;
        };
        let Some(mut copy) = l.down.queue.front().cloned() else {
            return false;
        };
        copy.id = id;
        copy.copy = true;
        l.down.queue.insert(1, copy);
        self.deliver_head(link, false)
    }

    /// The machines' timers, each with its deadline (virtual time since the origin).
    pub(crate) fn timers(&self) -> Vec<(Target, Duration)> {
        let mut out: Vec<(Target, Duration)> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.frozen_until.is_none())
            .filter_map(|(i, c)| c.armed.map(|t| (Target::Client(i), t)))
            .collect();
        if let Some(t) = self.server_deadline {
            out.push((Target::Server, t));
        }
        out
    }

    /// Moves the clock to `at` (never back) and fires the timer of `target`.
    pub(crate) fn fire_timer(&mut self, target: Target, at: Duration) {
        self.now = self.now.max(at);
        match target {
            Target::Client(c) => {
                let gen = self.clients[c].gen;
                self.handle_item(Kind::ClientTimer(c, gen));
            }
            Target::Server => self.server_timeout(),
        }
    }

    /// Whether anything is on its way: a frame in a pipe or a notice (an answer being
    /// computed counts; a server instance coming up does not: downtime has no length).
    pub(crate) fn in_flight(&self) -> bool {
        self.links.values().any(|l| l.busy())
            || self
                .heap
                .iter()
                .any(|r| Notice::of(&r.0.kind).is_some_and(|n| !matches!(n, Notice::Restore(_))))
    }

    /// The end of a step: the per-instant checks, then the first violation, if any.
    pub(crate) fn end_step(&mut self) -> Result<(), Violation> {
        self.stats.instants += 1;
        self.after_instant();
        match self.violation.clone() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }
}
