//! The application's clock (monotonic seconds as a float) mapped onto the core's `Instant`s.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::PyResult;

/// Maps `now` seconds to `Instant`s around one anchor: only differences of `now` matter, as
/// for the core, so any monotonic clock works (`loop.time()`, `time.monotonic()`).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    anchor_seconds: f64,
}

impl Clock {
    /// A clock whose `now` seconds equal `anchor_seconds` at this moment.
    pub fn new(anchor_seconds: f64) -> PyResult<Self> {
        finite(anchor_seconds)?;
        // The binding's one clock read: an anchor `Instant` for the seconds to count from
        // (the core only ever sees anchor + the application's own elapsed seconds).
        Ok(Self {
            anchor: Instant::now(),
            anchor_seconds,
        })
    }

    /// The `Instant` of `now` seconds.
    pub fn instant(&self, now: f64) -> PyResult<Instant> {
        finite(now)?;
        let delta = now - self.anchor_seconds;
        let shift = Duration::try_from_secs_f64(delta.abs())
            .map_err(|_| PyValueError::new_err(format!("now={now} is out of range")))?;
        let at = if delta >= 0.0 {
            self.anchor.checked_add(shift)
        } else {
            self.anchor.checked_sub(shift)
        };
        at.ok_or_else(|| PyValueError::new_err(format!("now={now} is out of range")))
    }

    /// The seconds of `at` on the application's clock.
    pub fn seconds(&self, at: Instant) -> f64 {
        match at.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_seconds + after.as_secs_f64(),
            None => self.anchor_seconds - self.anchor.duration_since(at).as_secs_f64(),
        }
    }
}

fn finite(now: f64) -> PyResult<()> {
    if now.is_finite() {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "now must be a finite number of seconds, not {now}"
        )))
    }
}

/// A duration argument in seconds.
pub fn duration(name: &str, seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, not {seconds}"
        ))
    })
}
