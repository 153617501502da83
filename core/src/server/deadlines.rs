//! The deadline index: keys ordered by when they are due, so that `poll_timeout` reads the
//! earliest deadline in O(log n) and `handle_timeout` visits only what is due, however many
//! idle connections and sessions the server holds (the idea of quinn's `TimerTable`, for many
//! owners).

use std::collections::BTreeSet;
use std::time::Instant;

/// Keys `K` ordered by deadline (ties by key). Each owner remembers the deadline it armed, so
/// that moving or removing it costs one `O(log n)` operation and no search.
#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    due: BTreeSet<(Instant, K)>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            due: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> Deadlines<K> {
    /// Moves `key` from the deadline it was armed at (`armed`, updated) to `to` (`None`: off).
    #[inline]
    pub(crate) fn rearm(&mut self, key: &K, armed: &mut Option<Instant>, to: Option<Instant>) {
        if *armed == to {
            return;
        }
        if let Some(at) = armed.take() {
            self.due.remove(&(at, key.clone()));
        }
        if let Some(at) = to {
            self.due.insert((at, key.clone()));
        }
        *armed = to;
    }

    /// The earliest deadline and its key.
    #[inline]
    pub(crate) fn first(&self) -> Option<&(Instant, K)> {
        self.due.first()
    }

    /// Removes every key whose deadline passes `due` (true for the earliest deadlines up to
    /// some point, false after it) and appends it to `out`, earliest first. Their owners must
    /// forget what they armed.
    pub(crate) fn pop_due(&mut self, due: impl Fn(Instant) -> bool, out: &mut Vec<K>) {
        while self.due.first().is_some_and(|(at, _)| due(*at)) {
            if let Some((_, key)) = self.due.pop_first() {
                out.push(key);
            }
        }
    }

    /// Keys armed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_come_out_by_deadline_and_move_or_leave_in_place() {
        let t0 = crate::test_origin();
        let at = |s: u64| Some(t0 + Duration::from_secs(s));
        let mut d = Deadlines::default();
        let (mut a, mut b, mut c) = (None, None, None);
        d.rearm(&1u64, &mut a, at(5));
        d.rearm(&2, &mut b, at(3));
        d.rearm(&3, &mut c, at(5));
        assert_eq!(d.first(), Some(&(t0 + Duration::from_secs(3), 2)));
        // Moving later, then off.
        d.rearm(&2, &mut b, at(9));
        assert_eq!((b, d.len()), (at(9), 3));
        d.rearm(&3, &mut c, None);
        assert_eq!((c, d.len()), (None, 2));
        let mut due = Vec::new();
        d.pop_due(|at| at <= t0 + Duration::from_secs(4), &mut due);
        assert!(due.is_empty(), "nothing before 5 s");
        d.pop_due(|at| at <= t0 + Duration::from_secs(9), &mut due);
        assert_eq!(due, [1, 2], "earliest first");
        assert_eq!(d.len(), 0);
    }
}
