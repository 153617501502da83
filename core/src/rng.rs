//! The one seeded random source of the core.
//!
//! Every machine draws its randomness from an [`Rng`] built from a seed in its config, never from
//! the OS: the same seed replays the same run. ChaCha8 is used (rather than a tiny xorshift) because
//! the server derives session ids from it and those must stay unguessable when the adapters seed it
//! with OS entropy.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng};

/// A 256-bit config seed (`ClientConfig::seed`, `ServerConfig::seed`) spread from a small
/// number, for tests and simulations: a machine seeded with it draws what [`Rng::from_u64`]
/// draws. Not for production servers (their session ids must be unguessable).
pub fn seed_from_u64(seed: u64) -> [u8; 32] {
    ChaCha8Rng::seed_from_u64(seed).get_seed()
}

/// A deterministic pseudo-random generator seeded from configuration.
#[derive(Debug, Clone)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    /// A generator whose whole output is determined by `seed` (fine for jitter and request ids):
    /// the generator of [`seed_from_u64`]`(seed)`.
    pub fn from_u64(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A generator from 256 bits of seed: use OS entropy here where outputs must be unguessable.
    pub fn from_bytes(seed: [u8; 32]) -> Self {
        Self(ChaCha8Rng::from_seed(seed))
    }

    /// A child generator for a sub-machine: one parent seed still replays the whole run.
    pub fn fork(&mut self) -> Self {
        let mut seed = [0u8; 32];
        self.0.fill_bytes(&mut seed);
        Self::from_bytes(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Fills `dest` with random bytes.
    pub fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }

    /// A uniform float in `[0, 1)` (53 random bits).
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `len` random bytes as lowercase hex (ids: 16 bytes give a uuid4-hex-sized id).
    pub fn hex_id(&mut self, bytes: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(bytes * 2);
        let mut buf = [0u8; 8];
        let mut left = bytes;
        while left > 0 {
            let take = left.min(8);
            self.fill_bytes(&mut buf[..take]);
            for b in &buf[..take] {
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
            left -= take;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let (mut a, mut b, mut c) = (Rng::from_u64(7), Rng::from_u64(7), Rng::from_u64(8));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn unit_f64_stays_in_range_and_hex_ids_have_the_asked_length() {
        let mut r = Rng::from_u64(1);
        for _ in 0..10_000 {
            let u = r.unit_f64();
            assert!((0.0..1.0).contains(&u));
        }
        let id = r.hex_id(16);
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(r.hex_id(16), id);
    }

    #[test]
    fn words_read_as_little_endian_bytes_are_the_filled_bytes() {
        // Event ids take two words instead of filling 16 bytes: the stream must not change.
        for seed in 0..50 {
            let (mut filled, mut words) = (Rng::from_u64(seed), Rng::from_u64(seed));
            filled.next_u64(); // also from a position that is not a block start
            words.next_u64();
            for _ in 0..40 {
                let mut a = [0u8; 16];
                filled.fill_bytes(&mut a);
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&words.next_u64().to_le_bytes());
                b[8..].copy_from_slice(&words.next_u64().to_le_bytes());
                assert_eq!(a, b, "seed {seed}");
            }
        }
    }

    #[test]
    fn forks_are_deterministic_and_distinct_from_parent() {
        let mut p1 = Rng::from_u64(3);
        let mut p2 = Rng::from_u64(3);
        let mut c1 = p1.fork();
        let mut c2 = p2.fork();
        assert_eq!(c1.next_u64(), c2.next_u64());
        assert_ne!(p1.next_u64(), c1.next_u64());
    }
}
