//! Fingerprints of a world's state, for the exhaustive explorer ([`crate::exhaustive`]) to
//! recognise a state it has already explored.
//!
//! The machines cannot be hashed directly (the server's `Debug` is a summary, and the seeded
//! generators hide their state), but they are deterministic: a machine's state is a function
//! of how it was built and of the inputs it was fed, each at its `now`. So each machine
//! carries a [`History`], a running hash of exactly that, and two machines with equal
//! histories are in equal states. The rest of the world (sockets, frames in flight, the
//! applications and the reference models) is plain data and is hashed as it stands, leaving
//! out only what cannot influence what happens next (packet ids, counters, the trace).
//!
//! Sound, not complete: two histories that happen to lead to the same state are told apart
//! (the search explores that state twice), but two different states are only merged on a
//! 128-bit hash collision.

use std::fmt::{self, Write as _};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};

use super::world::{Kind, Sim};

/// A 128-bit hash of the bytes, `Debug` text or `Hash` values written into it: they are
/// buffered, then hashed a word at a time by two independent multiply-xorshift lanes (fast,
/// not cryptographic; a collision merges two states, so 128 bits keep it out of reach).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fingerprint {
    bytes: Vec<u8>,
}

const LANE_SEEDS: [u64; 2] = [0x6c62_272e_07bb_0142, 0x62b8_2175_6295_c58d];
const LANE_MULTIPLIERS: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f];

/// splitmix64's finaliser: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Fingerprint {
    pub(crate) fn value(&self) -> u128 {
        let mut lanes = LANE_SEEDS;
        let mut words = self.bytes.chunks_exact(8);
        let mut absorb = |w: u64| {
            for (lane, k) in lanes.iter_mut().zip(LANE_MULTIPLIERS) {
                *lane = (*lane ^ w).wrapping_mul(k);
                *lane ^= *lane >> 29;
            }
        };
        for word in words.by_ref() {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            absorb(u64::from_le_bytes(b));
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        absorb(u64::from_le_bytes(tail));
        absorb(self.bytes.len() as u64);
        (u128::from(mix(lanes[0])) << 64) | u128::from(mix(lanes[1] ^ lanes[0].rotate_left(32)))
    }

    /// Writes the `Debug` text of `value`, then a separator.
    pub(crate) fn debug(&mut self, value: &impl fmt::Debug) {
        // Writing into a buffer cannot fail.
        let _ = write!(self, "{value:?}");
        self.bytes.push(0xff);
    }
}

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        let v = self.value();
        (v ^ (v >> 64)) as u64
    }

    fn write(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
}

impl fmt::Write for Fingerprint {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A running hash of everything one machine was built from and fed (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct History(u128);

impl History {
    /// A history starting over from what the machine is built from.
    pub(crate) fn start(origin: impl fmt::Debug) -> Self {
        let mut h = Self::default();
        h.record(origin);
        h
    }

    /// A value never recorded before: what an arbitrary closure did to a machine cannot be
    /// hashed, so the machine's history becomes unique (never merged with another).
    pub(crate) fn opaque() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends one input (or command), which must include its `now`.
    pub(crate) fn record(&mut self, input: impl fmt::Debug) {
        let mut f = Fingerprint::default();
        f.write_u128(self.0);
        f.debug(&input);
        self.0 = f.value();
    }
}

impl Sim {
    /// Hashes everything in the world that can influence what happens next (see the module
    /// docs). Only meaningful for a world driven step by step ([`Sim::stepwise`]): in that
    /// mode no delivery or timer sits in the event heap, so frames in flight are hashed as
    /// the pipes hold them, and timers as the deadlines the machines asked for.
    pub(crate) fn fingerprint(&self, f: &mut Fingerprint) {
        f.debug(&self.now);
        for c in &self.clients {
            f.debug(&(
                c.history,
                c.gen,
                c.link,
                c.armed,
                c.frozen_until,
                c.disconnected_by_app,
                c.slow,
                c.next_request,
            ));
            f.debug(&c.deferred);
            f.debug(&c.model);
        }
        for i in &self.instances {
            f.debug(&(
                i.history,
                i.gen,
                i.server.is_some(),
                i.frozen_until,
                i.open_conns,
            ));
            f.debug(&i.deferred);
        }
        f.debug(&(self.active, self.next_link, self.next_token));
        f.debug(&(self.server_deadline, &self.half_open, self.pending_responds));
        for (id, l) in &self.links {
            f.debug(&(
                id,
                l.client,
                l.instance,
                l.instance_gen,
                l.client_open,
                l.server_open,
                l.server_close_sent,
                l.cut,
                l.in_flight,
                l.closing_announced,
            ));
            for pipe in [&l.up, &l.down] {
                f.debug(&pipe.silent);
                for p in &pipe.queue {
                    f.debug(&(&p.payload, p.lost, p.copy));
                }
            }
        }
        // The heap holds only notices in this mode; its order is the explorer's choice, so
        // it is hashed as a sorted multiset without the insertion counter.
        let mut items: Vec<String> = self
            .heap
            .iter()
            .filter(|r| !matches!(r.0.kind, Kind::ClientTimer(..)))
            // Everything due is the explorer's to pick, whenever it was queued.
            .map(|r| format!("{:?} {:?}", r.0.at.max(self.now), r.0.kind))
            .collect();
        items.sort_unstable();
        f.debug(&items);
        f.debug(&self.persisted);
        f.debug(&self.lineage);
        f.debug(&self.app_sessions);
        f.debug(&self.orphaned);
        // The generator hides its state in `Debug`; its next outputs stand for it.
        let mut rng = self.app_rng.clone();
        f.debug(&(rng.next_u64(), rng.next_u64()));
        f.debug(&self.violation);
    }
}
