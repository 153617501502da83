//! What the proxy does to which event: faults keyed by sequence number, drawn from a seed.
//!
//! A fault is tied to an event's sequence number, not to a frame count or a clock: it hits the
//! first frame carrying that sequence number (live, or replayed after a resume), once. The
//! order in which a session's sequence numbers first cross the proxy does not depend on
//! timing, so the same seed and rules inject the same faults, in the same order, on every run.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tether_core::rng::Rng;

use super::frames::EventInfo;

/// Which way a half-open link stops carrying bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Server → client goes silent (the client must notice the silence and reconnect).
    Down,
    /// Client → server goes silent (the server must reap the connection on inbound silence).
    Up,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Down => "down",
            Direction::Up => "up",
        }
    }
}

/// A fault a rule or an entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Tear the connection in the middle of the frame (the tear point is drawn from the seed).
    Cut,
    /// Swallow the frame.
    Drop,
    /// Send the frame twice.
    Duplicate,
    /// Hold the frame (and, TCP being ordered, what follows it) this long.
    Delay(Duration),
    /// From this frame on, stop carrying bytes one way; the connection stays open until an
    /// end closes it.
    HalfOpen(Direction),
}

/// A fault as injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection was torn after `kept_permille`‰ of the frame's bytes went through.
    Cut {
        /// Share of the frame forwarded before the tear, in thousandths (1..=999).
        kept_permille: u16,
    },
    /// The frame was swallowed.
    Drop,
    /// The frame was sent twice.
    Duplicate,
    /// The frame was held this long.
    Delay(Duration),
    /// The link went half-open.
    HalfOpen(Direction),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cut { kept_permille } => write!(
                f,
                "cut mid-frame ({}.{}% of the frame through)",
                kept_permille / 10,
                kept_permille % 10
            ),
            Fault::Drop => f.write_str("frame dropped"),
            Fault::Duplicate => f.write_str("frame sent twice"),
            Fault::Delay(d) => write!(f, "frame delayed {} ms", d.as_millis()),
            Fault::HalfOpen(Direction::Down) => {
                f.write_str("half-open: server → client goes silent")
            }
            Fault::HalfOpen(Direction::Up) => f.write_str("half-open: client → server goes silent"),
        }
    }
}

impl Fault {
    /// The fault as a JSON object (`fault` plus its parameters), the form `--json` prints.
    pub fn to_json(&self) -> Value {
        match self {
            Fault::Cut { kept_permille } => json!({"fault": "cut", "kept_permille": kept_permille}),
            Fault::Drop => json!({"fault": "drop"}),
            Fault::Duplicate => json!({"fault": "duplicate"}),
            Fault::Delay(d) => json!({"fault": "delay", "ms": d.as_millis() as u64}),
            Fault::HalfOpen(dir) => json!({"fault": "half_open", "direction": dir.name()}),
        }
    }
}

/// Decides, frame by frame, what to do to the frames that carry a sequence number.
pub trait Plan: Send + 'static {
    /// The fault for this frame, if any. Called once for every frame with a sequence number
    /// that crosses the proxy server → client, in order.
    fn fault_for(&mut self, event: &EventInfo) -> Option<Fault>;
}

/// A schedule that was asked for something it cannot do.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// `every` must be at least 1: give how many events each fault is spread over.
    #[error("a fault needs a period of at least 1 event")]
    ZeroPeriod,
    /// Sequence numbers start at 1: give a `seq` of 1 or more.
    #[error("sequence numbers start at 1")]
    ZeroSeq,
    /// The schedule file is not a JSON list of entries: fix its syntax.
    #[error("the schedule is not a JSON list of fault entries: {0}")]
    Json(#[from] serde_json::Error),
    /// One entry of the schedule file is incomplete or contradictory: fix that entry.
    #[error("schedule entry {index}: {problem}")]
    Entry {
        /// Position of the entry in the list (from 0).
        index: usize,
        /// What is wrong with it.
        problem: EntryProblem,
    },
}

/// What is wrong with a schedule entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// Neither `seq` (one fault) nor `every` (one fault in every N events) is given.
    #[error("give either \"seq\" or \"every\"")]
    NoPosition,
    /// Both `seq` and `every` are given.
    #[error("give \"seq\" or \"every\", not both")]
    TwoPositions,
    /// A delay without its `ms`.
    #[error("a delay needs \"ms\"")]
    NoDelay,
    /// `fault` names no known fault.
    #[error("unknown fault {0:?} (cut, drop, duplicate, delay, half_open)")]
    UnknownFault(String),
}

/// Faults keyed by sequence number: fixed ones (`at`) and seeded ones (`every`: one fault in
/// each run of N consecutive sequence numbers, at a position drawn from the seed). Each
/// sequence number is hit at most once, by its first frame.
///
/// ```
/// use tether_testkit::proxy::{Fault, FaultKind, Schedule};
///
/// let schedule = Schedule::new(7)
///     .every(100, FaultKind::Cut)?
///     .at(142, FaultKind::Drop)?;
/// assert_eq!(schedule.planned(142), Some(Fault::Drop));
/// // One cut among 1..=100, where the seed puts it: the same seed, the same place.
/// let cuts = |s: &Schedule| (1..=100).filter(|&q| s.planned(q).is_some()).collect::<Vec<_>>();
/// assert_eq!(cuts(&schedule).len(), 1);
/// assert_eq!(cuts(&schedule), cuts(&Schedule::new(7).every(100, FaultKind::Cut)?));
/// # Ok::<(), tether_testkit::proxy::ScheduleError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    seed: u64,
    every: Vec<(u64, FaultKind)>,
    at: BTreeMap<u64, FaultKind>,
    fired: HashSet<u64>,
}

impl Schedule {
    /// An empty schedule whose positions and tear points are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            every: Vec::new(),
            at: BTreeMap::new(),
            fired: HashSet::new(),
        }
    }

    /// Adds one `kind` fault in every `n` consecutive sequence numbers (1..=n, n+1..=2n, ...).
    /// Where rules pick the same number, the one added first wins.
    pub fn every(mut self, n: u64, kind: FaultKind) -> Result<Self, ScheduleError> {
        if n == 0 {
            return Err(ScheduleError::ZeroPeriod);
        }
        self.every.push((n, kind));
        Ok(self)
    }

    /// Adds a `kind` fault at sequence number `seq` (it wins over `every` rules).
    pub fn at(mut self, seq: u64, kind: FaultKind) -> Result<Self, ScheduleError> {
        if seq == 0 {
            return Err(ScheduleError::ZeroSeq);
        }
        self.at.insert(seq, kind);
        Ok(self)
    }

    /// Adds the entries of a schedule file: a JSON list such as
    /// `[{"fault":"cut","every":100}, {"fault":"drop","seq":42},
    /// {"fault":"delay","seq":60,"ms":150}, {"fault":"half_open","seq":90,"direction":"up"}]`.
    pub fn with_entries(mut self, json: &str) -> Result<Self, ScheduleError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            fault: String,
            seq: Option<u64>,
            every: Option<u64>,
            ms: Option<u64>,
            direction: Option<Direction>,
        }
        let entries: Vec<Entry> = serde_json::from_str(json)?;
        for (index, e) in entries.into_iter().enumerate() {
            let problem = |problem| ScheduleError::Entry { index, problem };
            let kind = match e.fault.as_str() {
                "cut" => FaultKind::Cut,
                "drop" => FaultKind::Drop,
                "duplicate" => FaultKind::Duplicate,
                "delay" => FaultKind::Delay(Duration::from_millis(
                    e.ms.ok_or_else(|| problem(EntryProblem::NoDelay))?,
                )),
                "half_open" => FaultKind::HalfOpen(e.direction.unwrap_or(Direction::Down)),
                other => return Err(problem(EntryProblem::UnknownFault(other.into()))),
            };
            self = match (e.seq, e.every) {
                (Some(seq), None) => self.at(seq, kind)?,
                (None, Some(n)) => self.every(n, kind)?,
                (None, None) => return Err(problem(EntryProblem::NoPosition)),
                (Some(_), Some(_)) => return Err(problem(EntryProblem::TwoPositions)),
            };
        }
        Ok(self)
    }

    /// Whether the schedule holds no fault at all.
    pub fn is_empty(&self) -> bool {
        self.every.is_empty() && self.at.is_empty()
    }

    /// The fault planned at `seq` (whether or not it has fired).
    pub fn planned(&self, seq: u64) -> Option<Fault> {
        if seq == 0 {
            return None;
        }
        let kind = self.at.get(&seq).copied().or_else(|| {
            self.every
                .iter()
                .enumerate()
                .find(|(rule, (n, _))| {
                    let window = (seq - 1) / n;
                    let offset = self.draw(1 + *rule as u64, window) % n;
                    window * n + 1 + offset == seq
                })
                .map(|(_, (_, kind))| *kind)
        })?;
        Some(match kind {
            FaultKind::Cut => Fault::Cut {
                kept_permille: 1 + (self.draw(0, seq) % 999) as u16,
            },
            FaultKind::Drop => Fault::Drop,
            FaultKind::Duplicate => Fault::Duplicate,
            FaultKind::Delay(d) => Fault::Delay(d),
            FaultKind::HalfOpen(dir) => Fault::HalfOpen(dir),
        })
    }

    /// A number drawn from the seed for (`stream`, `index`): the same inputs, the same number.
    fn draw(&self, stream: u64, index: u64) -> u64 {
        let mixed = self.seed
            ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03);
        Rng::from_u64(mixed).next_u64()
    }
}

impl Plan for Schedule {
    fn fault_for(&mut self, event: &EventInfo) -> Option<Fault> {
        if self.fired.contains(&event.seq) {
            return None;
        }
        let fault = self.planned(event.seq)?;
        self.fired.insert(event.seq);
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> EventInfo {
        EventInfo {
            kind: "message".into(),
            seq,
        }
    }

    #[test]
    fn every_rule_puts_one_fault_in_each_window_and_the_seed_fixes_where() {
        let s = Schedule::new(3).every(10, FaultKind::Drop).unwrap();
        let hits: Vec<u64> = (1..=100).filter(|&q| s.planned(q).is_some()).collect();
        assert_eq!(hits.len(), 10, "{hits:?}");
        for (w, hit) in hits.iter().enumerate() {
            assert!((w as u64 * 10 + 1..=(w as u64 + 1) * 10).contains(hit));
        }
        let same: Vec<u64> = (1..=100)
            .filter(|&q| {
                Schedule::new(3)
                    .every(10, FaultKind::Drop)
                    .unwrap()
                    .planned(q)
                    .is_some()
            })
            .collect();
        assert_eq!(hits, same);
        let other: Vec<u64> = (1..=100)
            .filter(|&q| {
                Schedule::new(4)
                    .every(10, FaultKind::Drop)
                    .unwrap()
                    .planned(q)
                    .is_some()
            })
            .collect();
        assert_ne!(hits, other, "another seed, other positions");
    }

    #[test]
    fn a_sequence_number_is_hit_once_by_its_first_frame() {
        let mut s = Schedule::new(1).at(5, FaultKind::Cut).unwrap();
        assert_eq!(s.fault_for(&event(4)), None);
        assert!(
            matches!(s.fault_for(&event(5)), Some(Fault::Cut { kept_permille }) if (1..=999).contains(&kept_permille))
        );
        assert_eq!(s.fault_for(&event(5)), None, "the replay of 5 passes");
    }

    #[test]
    fn fixed_entries_win_and_files_parse_into_the_same_schedule() {
        let file = r#"[{"fault":"delay","seq":3,"ms":20},{"fault":"half_open","seq":9,"direction":"up"},
                       {"fault":"duplicate","every":4}]"#;
        let s = Schedule::new(2).with_entries(file).unwrap();
        assert_eq!(s.planned(3), Some(Fault::Delay(Duration::from_millis(20))));
        assert_eq!(s.planned(9), Some(Fault::HalfOpen(Direction::Up)));
        let built = Schedule::new(2).every(4, FaultKind::Duplicate).unwrap();
        for q in (1..=40).filter(|q| ![3, 9].contains(q)) {
            assert_eq!(s.planned(q), built.planned(q), "seq {q}");
        }
    }

    #[test]
    fn bad_entries_are_refused_with_what_is_wrong() {
        let refuse = |json: &str| Schedule::new(0).with_entries(json).unwrap_err().to_string();
        assert!(refuse(r#"[{"fault":"cut"}]"#).contains("either"));
        assert!(refuse(r#"[{"fault":"cut","seq":1,"every":2}]"#).contains("not both"));
        assert!(refuse(r#"[{"fault":"delay","seq":1}]"#).contains("ms"));
        assert!(refuse(r#"[{"fault":"melt","seq":1}]"#).contains("unknown fault"));
        assert!(refuse(r#"[{"fault":"cut","every":0}]"#).contains("at least 1"));
        assert!(refuse(r#"{"fault":"cut"}"#).contains("JSON list"));
    }
}
