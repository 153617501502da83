//! Deliberately planted bugs, for the model checker's own tests (feature `injected-bugs`,
//! which only tether-testkit's dev-dependency turns on; absent from every build you ship).
//!
//! A checker that never fails proves nothing: `tether-testkit`'s exhaustive explorer is shown
//! to find a real bug of the real machines by switching one on for the current thread while it
//! explores. The switch is per thread, so tests running in parallel never see each other's.
//!
//! ```
//! use tether_core::injected_bugs::{with_bug, Bug};
//! use tether_core::sequence::{SequenceTracker, Verdict};
//!
//! let mut t = SequenceTracker::new(1);
//! assert_eq!(t.observe(1), Verdict::InOrder);
//! with_bug(Bug::DuplicateRewindsExpected, || {
//!     assert_eq!(t.observe(1), Verdict::Duplicate);
//! });
//! assert_eq!(t.observe(1), Verdict::InOrder, "the counter moved back: 1 comes again");
//! ```

use std::cell::Cell;

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bug {
    /// [`SequenceTracker::observe`](crate::sequence::SequenceTracker::observe) moves the
    /// expected counter back to a duplicate's number, so the same number is taken as in order
    /// once more: what the rule "a duplicate never moves the counter backwards" prevents.
    DuplicateRewindsExpected,
}

thread_local! {
    static ON: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Runs `f` with `bug` switched on for the current thread (and off again afterwards, also
/// when `f` panics).
pub fn with_bug<R>(bug: Bug, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Bug>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON.with(|on| on.set(self.0));
        }
    }
    let _restore = Restore(ON.with(|on| on.replace(Some(bug))));
    f()
}

/// Whether `bug` is switched on for the current thread.
pub(crate) fn is_on(bug: Bug) -> bool {
    ON.with(|on| on.get() == Some(bug))
}
