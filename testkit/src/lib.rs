//! # tether-testkit
//!
//! (crate docs: written below once the crate compiles)
#![forbid(unsafe_code)]

pub mod cluster;
pub mod fuzz;
pub mod sim;

/// The one clock read of the unit tests: an arbitrary origin for their timelines.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_origin() -> std::time::Instant {
    std::time::Instant::now()
}
