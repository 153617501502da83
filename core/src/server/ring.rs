//! The per-session replay ring: every tracked frame, bounded by count and bytes. It is also the
//! outbound buffer: connections keep a send cursor into it instead of copying frames.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One tracked frame as recorded (and persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Cursor == seq of the frame.
    pub cursor: u64,
    /// The frame's `type`.
    pub kind: String,
    /// The exact text sent live (ends with `"cursor":n,"seq":n}`).
    pub frame: String,
    /// Id assigned when recorded (stable across replays and restarts).
    pub event_id: String,
    /// Record time, epoch seconds.
    pub timestamp: f64,
    /// The connection label at record time, if one was bound.
    pub target: Option<String>,
}

impl Recorded {
    fn cost(&self) -> usize {
        // Fixed overhead stands for the struct and the replay envelope.
        self.frame.len() + self.kind.len() + self.event_id.len() + 64
    }
}

/// Bounded FIFO of recorded frames with contiguous cursors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    events: VecDeque<Recorded>,
    bytes: usize,
}

impl Ring {
    pub(crate) fn from_events(events: Vec<Recorded>) -> Self {
        let mut ring = Self::default();
        for e in events {
            // Restored rings must be contiguous; a hole drops everything before it.
            if ring.events.back().is_some_and(|b| b.cursor + 1 != e.cursor) {
                ring.events.clear();
                ring.bytes = 0;
            }
            ring.bytes += e.cost();
            ring.events.push_back(e);
        }
        ring
    }

    /// Appends and evicts down to the bounds (never the newest). Returns the highest evicted
    /// cursor, if any.
    pub(crate) fn push(&mut self, e: Recorded, max_events: usize, max_bytes: usize) -> Option<u64> {
        self.bytes += e.cost();
        self.events.push_back(e);
        let mut evicted = None;
        while self.events.len() > 1
            && (self.events.len() > max_events.max(1) || self.bytes > max_bytes)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes = self.bytes.saturating_sub(old.cost());
                evicted = Some(old.cursor);
            }
        }
        evicted
    }

    /// Cursor of the oldest retained event.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.events.front().map(|e| e.cursor)
    }

    pub(crate) fn get(&self, cursor: u64) -> Option<&Recorded> {
        let first = self.oldest()?;
        let idx = usize::try_from(cursor.checked_sub(first)?).ok()?;
        self.events.get(idx)
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Recorded> {
        self.events.iter()
    }
}
