//! The per-session replay ring: every tracked frame, bounded by count and bytes. It is also the
//! outbound buffer: connections keep a send cursor into it instead of copying frames, and a
//! live frame handed to the adapter shares the ring's text.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::conn::ConnId;
use super::frames;
use super::text::{FrameText, FrameWriter};

/// One tracked frame as persisted in a [`ServerSnapshot`](super::ServerSnapshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Cursor == seq of the frame.
    pub cursor: u64,
    /// The frame's `type`.
    pub kind: String,
    /// The exact text sent live (starts with `{"type":<kind>`, ends with `"cursor":n,"seq":n}`).
    pub frame: String,
    /// Id assigned when recorded (stable across replays and restarts); a uuid on the wire and
    /// in the snapshot text.
    #[serde(with = "uuid_text")]
    pub event_id: u128,
    /// Record time, epoch seconds.
    pub timestamp: f64,
    /// The connection bound at record time, if any (`target` = its label in replays).
    pub target: Option<ConnId>,
}

/// `u128` ids as uuid strings.
mod uuid_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(id: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&frames::uuid_string(*id))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        frames::parse_uuid(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid event id {text:?}")))
    }
}

/// One tracked frame in the ring: the text shared with transmits, ids in compact form (they
/// are formatted only when a replay frame is built).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Cursor == seq of the frame.
    pub(crate) cursor: u64,
    /// The exact text sent live.
    pub(crate) frame: FrameText,
    /// End of the frame's JSON-escaped `type` value: `frame[8..kind_end]` is `"<kind>"`.
    kind_end: usize,
    pub(crate) event_id: u128,
    pub(crate) timestamp: f64,
    pub(crate) target: Option<ConnId>,
    /// What it counts against the ring's byte bound.
    cost: usize,
}

impl Entry {
    /// `frame` must start with `{"type":` and `kind` as a JSON string ending at `kind_end`.
    pub(crate) fn new(
        cursor: u64,
        frame: FrameText,
        (kind, kind_end): (&str, usize),
        event_id: u128,
        timestamp: f64,
        target: Option<ConnId>,
    ) -> Self {
        // Frame, kind and a uuid; the fixed overhead stands for the struct and the envelope.
        let cost = frame.len() + kind.len() + 36 + 64;
        Self {
            cursor,
            frame,
            kind_end,
            event_id,
            timestamp,
            target,
            cost,
        }
    }

    /// The frame's `type` value as JSON text (quoted, escaped).
    pub(crate) fn kind_json(&self) -> &str {
        self.frame
            .as_bytes()
            .get(frames::TYPE_PREFIX.len()..self.kind_end)
            .and_then(|kind| std::str::from_utf8(kind).ok())
            .unwrap_or("\"\"")
    }

    /// The persisted form.
    pub(crate) fn to_recorded(&self) -> Recorded {
        Recorded {
            cursor: self.cursor,
            kind: serde_json::from_str(self.kind_json()).unwrap_or_default(),
            frame: self.frame.to_string(),
            event_id: self.event_id,
            timestamp: self.timestamp,
            target: self.target,
        }
    }

    /// From the persisted form; `None` if the frame does not start with its `type` (it was not
    /// written by this server).
    pub(crate) fn from_recorded(r: Recorded) -> Option<Self> {
        let mut head = String::from(frames::TYPE_PREFIX);
        frames::push_str(&mut head, &r.kind);
        if !r.frame.starts_with(&head) {
            return None;
        }
        Some(Self::new(
            r.cursor,
            r.frame.into(),
            (&r.kind, head.len()),
            r.event_id,
            r.timestamp,
            r.target,
        ))
    }

    fn cost(&self) -> usize {
        self.cost
    }
}

/// Bounded FIFO of recorded frames with contiguous cursors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    events: VecDeque<Entry>,
    bytes: usize,
    /// Where new frames are written (chunks shared by the frames they hold).
    writer: FrameWriter,
}

impl Ring {
    /// The text of a new frame, stored with the ring's other frames (see [`FrameWriter`]).
    pub(crate) fn write(&mut self, text: &str) -> FrameText {
        self.writer.write(text)
    }

    pub(crate) fn from_events(events: Vec<Entry>) -> Self {
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
    pub(crate) fn push(&mut self, e: Entry, max_events: usize, max_bytes: usize) -> Option<u64> {
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

    pub(crate) fn get(&self, cursor: u64) -> Option<&Entry> {
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

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.events.iter()
    }
}
