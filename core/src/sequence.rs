//! Gap and duplicate detection over a session's sequence numbers.
//!
//! The rule peers get wrong: a duplicate or stale number (below the expected one) is dropped and
//! counted and never moves the expected counter backwards; a number above the expected one is a
//! gap `(expected, received)`; only an in-order number (or an explicit [`SequenceTracker::skip_to`]
//! after a loss has been reported) moves the counter forward.
//!
//! ```
//! use tether_core::sequence::{SequenceTracker, Verdict};
//! let mut t = SequenceTracker::new(1);
//! assert_eq!(t.observe(1), Verdict::InOrder);
//! assert_eq!(t.observe(1), Verdict::Duplicate);
//! assert_eq!(t.observe(4), Verdict::Gap { expected: 2, received: 4 });
//! assert_eq!(t.expected(), 2); // a gap does not move the counter
//! ```

/// What one sequence number means relative to what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Exactly the expected number: deliver it.
    InOrder,
    /// Below the expected number: already delivered (or deliberately skipped); drop it.
    Duplicate,
    /// Above the expected number: `expected..received` are missing.
    Gap {
        /// The number that should have come.
        expected: u64,
        /// The number that came.
        received: u64,
    },
}

/// Tracks the next expected sequence number of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceTracker {
    expected: u64,
    duplicates: u64,
}

impl SequenceTracker {
    /// A tracker expecting `expected` next.
    pub fn new(expected: u64) -> Self {
        Self {
            expected,
            duplicates: 0,
        }
    }

    /// The next number that would be in order.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// The last in-order number (`expected − 1`), if any.
    pub fn last(&self) -> Option<u64> {
        self.expected.checked_sub(1)
    }

    /// Duplicates and stale numbers dropped so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Classifies `seq` without changing anything.
    pub fn check(&self, seq: u64) -> Verdict {
        match seq.cmp(&self.expected) {
            std::cmp::Ordering::Equal => Verdict::InOrder,
            std::cmp::Ordering::Less => Verdict::Duplicate,
            std::cmp::Ordering::Greater => Verdict::Gap {
                expected: self.expected,
                received: seq,
            },
        }
    }

    /// Classifies `seq`; an in-order number advances the counter, a duplicate is counted.
    pub fn observe(&mut self, seq: u64) -> Verdict {
        let verdict = self.check(seq);
        match verdict {
            Verdict::InOrder => self.expected = seq.saturating_add(1),
            Verdict::Duplicate => {
                self.duplicates += 1;
                #[cfg(feature = "injected-bugs")]
                if crate::injected_bugs::is_on(crate::injected_bugs::Bug::DuplicateRewindsExpected)
                {
                    self.expected = seq;
                }
            }
            Verdict::Gap { .. } => {}
        }
        verdict
    }

    /// Accepts `seq` after a gap was reported as lost: the counter moves to `seq + 1`, never back.
    pub fn skip_to(&mut self, seq: u64) {
        self.expected = self.expected.max(seq.saturating_add(1));
    }

    /// Starts over at `expected` (a new session, or a server that lost its state).
    pub fn reset(&mut self, expected: u64) {
        self.expected = expected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_and_stale_numbers_never_move_the_counter_back() {
        let mut t = SequenceTracker::new(5);
        assert_eq!(t.observe(5), Verdict::InOrder);
        assert_eq!(t.observe(3), Verdict::Duplicate);
        assert_eq!(t.observe(5), Verdict::Duplicate);
        assert_eq!(t.expected(), 6);
        assert_eq!(t.duplicates(), 2);
        assert_eq!(
            t.observe(9),
            Verdict::Gap {
                expected: 6,
                received: 9
            }
        );
        assert_eq!(t.expected(), 6);
        t.skip_to(9);
        assert_eq!(t.expected(), 10);
        t.skip_to(2);
        assert_eq!(t.expected(), 10, "skip_to never goes back");
        assert_eq!(t.observe(10), Verdict::InOrder);
        assert_eq!(t.last(), Some(10));
    }

    #[test]
    fn zero_is_a_valid_sequence_and_the_top_saturates() {
        let mut t = SequenceTracker::new(0);
        assert_eq!(t.last(), None);
        assert_eq!(t.observe(0), Verdict::InOrder);
        let mut top = SequenceTracker::new(u64::MAX);
        assert_eq!(top.observe(u64::MAX), Verdict::InOrder);
        assert_eq!(top.expected(), u64::MAX);
    }

    #[derive(Debug, Clone)]
    enum Arrival {
        Next,
        Duplicate(u64),
        Jump(u64),
    }

    fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(Arrival::Next),
                2 => (0u64..8).prop_map(Arrival::Duplicate),
                1 => (1u64..6).prop_map(Arrival::Jump),
            ],
            0..200,
        )
    }

    proptest! {
        /// Any interleaving of in-order, duplicate, stale and gapped numbers, with gaps accepted as
        /// reported losses: delivered numbers strictly increase, nothing twice, and every number
        /// not delivered below the last one is covered by a reported hole.
        #[test]
        fn delivered_strictly_increase_and_every_hole_is_reported(start in 0u64..5, script in arrivals()) {
            let mut t = SequenceTracker::new(start);
            let mut sent_max = start; // the producer's next fresh number
            let (mut delivered, mut holes) = (Vec::new(), Vec::new());
            for step in script {
                let seq = match step {
                    Arrival::Next => { let s = sent_max; sent_max += 1; s }
                    Arrival::Duplicate(back) => sent_max.saturating_sub(1 + back).max(start),
                    Arrival::Jump(by) => { sent_max += by; let s = sent_max; sent_max += 1; s }
                };
                match t.observe(seq) {
                    Verdict::InOrder => delivered.push(seq),
                    Verdict::Duplicate => {}
                    Verdict::Gap { expected, received } => {
                        prop_assert_eq!(expected, t.expected());
                        prop_assert!(received > expected);
                        holes.push(expected..received);
                        t.skip_to(received);
                        delivered.push(received);
                    }
                }
            }
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]), "not strictly increasing: {:?}", delivered);
            if let Some(&last) = delivered.last() {
                for n in start..=last {
                    prop_assert!(
                        delivered.contains(&n) || holes.iter().any(|h| h.contains(&n)),
                        "{} neither delivered nor reported", n
                    );
                }
            }
        }
    }
}
