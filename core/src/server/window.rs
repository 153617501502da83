//! A session's recovery window: the events a resume can replay, as runs of consecutive
//! records of the shared [`EventLog`], so a session that receives a stream published to many
//! sessions costs a few runs, not an entry per event. It is also the outbound buffer:
//! connections keep a send cursor into it instead of copying frames.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::conns::ConnId;
use super::log::{EventLog, Held, LogId, Record};
use super::text::{FrameText, FrameWriter};
use crate::wire::{encode, json};

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
        s.serialize_str(&json::uuid_string(*id))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        json::parse_uuid(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid event id {text:?}")))
    }
}

/// Cursors `cursor..cursor + len` are the records `id..id + len`, all recorded while `target`
/// held the session.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    cursor: u64,
    id: LogId,
    len: u64,
    /// Log offsets of the first record and past the last: the run's bytes are the
    /// difference (known also once the log has evicted some of them).
    offset: u64,
    end: u64,
    target: Option<ConnId>,
}

/// What a run costs, counted against the session's byte bound.
const RUN_COST: usize = std::mem::size_of::<Run>();

/// One retained event of a session: its cursor, its record, and the connection that held the
/// session when it was recorded (`target` in replays).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retained<'a> {
    pub(crate) cursor: u64,
    pub(crate) record: &'a Record,
    pub(crate) target: Option<ConnId>,
}

impl Retained<'_> {
    /// Appends the `replay` frame of this event (`+ "seq"` when `with_seq`).
    #[inline]
    pub(crate) fn write_replay(&self, out: &mut String, with_seq: bool) {
        let record = self.record;
        let about = encode::Recorded {
            kind_json: record.kind_json(),
            event_id: record.event_id,
            timestamp: record.timestamp,
            target: self.target.map(|c| c.0),
            cursor: self.cursor,
        };
        let data = |out: &mut String| record.push_frame(out, self.cursor);
        encode::replay(out, &about, (record.text_len(), data), with_seq);
    }

    /// The persisted form.
    pub(crate) fn to_recorded(self) -> Recorded {
        let mut frame = String::new();
        self.record.push_frame(&mut frame, self.cursor);
        Recorded {
            cursor: self.cursor,
            kind: serde_json::from_str(self.record.kind_json()).unwrap_or_default(),
            frame,
            event_id: self.record.event_id,
            timestamp: self.record.timestamp,
            target: self.target,
        }
    }
}

impl Recorded {
    /// Appends this persisted event to `log` as a record of its own (its text written by
    /// `writer`), stored at wall time `at` and held by one window (the caller's); `None` if its
    /// frame does not start with its `type` (it was not written by a tether server).
    fn into_log(self, log: &mut EventLog, writer: &mut FrameWriter, at: f64) -> Option<Held> {
        let mut head = String::from(json::TYPE_PREFIX);
        json::push_str(&mut head, &self.kind);
        if !self.frame.starts_with(&head) {
            return None;
        }
        let text = writer.write(&self.frame);
        let id = (self.event_id, self.timestamp);
        Some(log.push((text, false, head.len()), id, at, 1))
    }
}

/// A session's window: contiguous cursors, oldest first, held in the [`EventLog`]. The newest
/// run is kept apart from the older ones: a session fed by one stream appends to, reads from
/// and evicts from that one run without touching a queue.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// Where the texts of this session's own records (published to it alone) are written, so
    /// that they pin no other session's memory: beyond them, a session pins at most its
    /// partly evicted oldest chunk and its current one (2 × 64 KiB).
    writer: FrameWriter,
    /// The runs before the newest, oldest first.
    older: VecDeque<Run>,
    /// The newest run (`len` 0: the window is empty, and so is `older`).
    newest: Run,
    /// Cursors covered (some may be in records the log has evicted since).
    events: usize,
    /// Costs of the records covered and of the runs.
    bytes: usize,
}

impl Window {
    /// The text of a record of this session alone, stored with its other records.
    #[inline(always)]
    pub(crate) fn write(&mut self, text: &str) -> FrameText {
        self.writer.write(text)
    }

    /// Appends `cursor` (the next after the newest retained) as record `held`, which this
    /// window holds from now on (the caller made it so).
    #[inline(always)]
    pub(crate) fn push(
        &mut self,
        log: &mut EventLog,
        cursor: u64,
        held: Held,
        target: Option<ConnId>,
    ) {
        let Held { id, offset, cost } = held;
        let end = offset + cost as u64;
        let r = &mut self.newest;
        if r.len > 0 && r.cursor + r.len == cursor && r.id + r.len == id && r.target == target {
            r.len += 1;
            r.end = end;
        } else {
            if r.len > 0 && r.cursor + r.len != cursor {
                // Not contiguous (a restored window with a hole): what came before goes.
                self.clear(log);
            }
            let run = Run {
                cursor,
                id,
                len: 1,
                offset,
                end,
                target,
            };
            let previous = std::mem::replace(&mut self.newest, run);
            if previous.len > 0 {
                self.older.push_back(previous);
            }
            self.bytes += RUN_COST;
        }
        self.events += 1;
        self.bytes += cost;
    }

    /// A window of persisted events (a snapshot's or a store's), oldest first, stored at wall
    /// time `at`: those in `1..=head` this server wrote, contiguous up to the newest (a hole
    /// drops what is before it), then evicted down to the bounds.
    pub(crate) fn from_recorded(
        log: &mut EventLog,
        events: impl IntoIterator<Item = Recorded>,
        (head, at): (u64, f64),
        max_events: usize,
        max_bytes: usize,
    ) -> Self {
        let mut window = Self::default();
        for r in events {
            window.push_recorded(log, r, head, at);
        }
        window.forget_evicted(log);
        window.evict_to(log, max_events, max_bytes);
        window
    }

    /// Stores a persisted event of this session in `log` as a record of its own (at wall time
    /// `at`, held for this window, not yet in it: [`push`](Self::push) it); `None` if it was
    /// not written by a tether server.
    pub(crate) fn store(&mut self, log: &mut EventLog, r: Recorded, at: f64) -> Option<Held> {
        r.into_log(log, &mut self.writer, at)
    }

    /// Appends one persisted event (see [`from_recorded`](Self::from_recorded)); ignored if it
    /// is not in `1..=head`, not after the newest retained, or not written by a tether server.
    pub(crate) fn push_recorded(&mut self, log: &mut EventLog, r: Recorded, head: u64, at: f64) {
        let n = &self.newest;
        let after_newest = n.len == 0 || r.cursor >= n.cursor + n.len;
        if r.cursor == 0 || r.cursor > head || !after_newest {
            return;
        }
        let (cursor, target) = (r.cursor, r.target);
        if let Some(held) = self.store(log, r, at) {
            self.push(log, cursor, held, target);
        }
    }

    /// The oldest run, if any.
    #[inline(always)]
    fn front(&self) -> Option<&Run> {
        self.older
            .front()
            .or(Some(&self.newest).filter(|r| r.len > 0))
    }

    #[inline(always)]
    fn front_mut(&mut self) -> Option<&mut Run> {
        match self.older.front_mut() {
            Some(r) => Some(r),
            None => Some(&mut self.newest).filter(|r| r.len > 0),
        }
    }

    /// Drops the oldest run (which must exist).
    #[inline(always)]
    fn pop_front(&mut self) {
        if self.older.pop_front().is_none() {
            self.newest.len = 0;
        }
    }

    /// The runs, oldest first.
    fn runs(&self) -> impl Iterator<Item = &Run> {
        let newest = Some(&self.newest).filter(|r| r.len > 0);
        self.older.iter().chain(newest)
    }

    /// Forgets the records the log has evicted (by age or total size); returns the highest
    /// cursor forgotten.
    #[inline(always)]
    pub(crate) fn forget_evicted(&mut self, log: &EventLog) -> Option<u64> {
        if self.front().is_some_and(|r| r.id < log.first_id()) {
            self.forget_evicted_runs(log)
        } else {
            None
        }
    }

    fn forget_evicted_runs(&mut self, log: &EventLog) -> Option<u64> {
        let first = log.first_id();
        let mut forgotten = None;
        while let Some(r) = self.front_mut() {
            if r.id >= first {
                break;
            }
            if r.id + r.len <= first {
                let (len, bytes) = (r.len, (r.end - r.offset) as usize);
                forgotten = Some(r.cursor + r.len - 1);
                self.events -= len as usize;
                self.bytes -= bytes + RUN_COST;
                self.pop_front();
            } else {
                let gone = first - r.id;
                let offset = log.offset(first);
                let bytes = (offset - r.offset) as usize;
                forgotten = Some(r.cursor + gone - 1);
                r.cursor += gone;
                r.id = first;
                r.len -= gone;
                r.offset = offset;
                self.events -= gone as usize;
                self.bytes -= bytes;
            }
        }
        forgotten
    }

    /// Evicts the oldest events until at most `max_events` and `max_bytes` are held (never the
    /// newest event); returns the highest cursor evicted. Call
    /// [`forget_evicted`](Self::forget_evicted) first.
    #[inline(always)]
    pub(crate) fn evict_to(
        &mut self,
        log: &mut EventLog,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<u64> {
        let mut evicted = None;
        while self.events > 1 && (self.events > max_events.max(1) || self.bytes > max_bytes) {
            let Some(r) = self.front_mut() else {
                break;
            };
            let (cursor, id) = (r.cursor, r.id);
            let cost = log.release(id) as u64;
            let last = r.len == 1;
            if last {
                let bytes = (r.end - r.offset) as usize;
                self.bytes -= bytes + RUN_COST;
                self.pop_front();
            } else {
                r.cursor += 1;
                r.id += 1;
                r.len -= 1;
                r.offset += cost;
                self.bytes -= cost as usize;
            }
            self.events -= 1;
            evicted = Some(cursor);
        }
        evicted
    }

    /// Cursor of the oldest event still retained.
    pub(crate) fn oldest(&self, log: &EventLog) -> Option<u64> {
        let first = log.first_id();
        let i = self.older.partition_point(|r| r.id + r.len <= first);
        let r = self
            .older
            .get(i)
            .or(Some(&self.newest).filter(|r| r.len > 0 && r.id + r.len > first))?;
        Some(r.cursor + first.saturating_sub(r.id))
    }

    /// The event at `cursor`, if retained.
    #[inline(always)]
    pub(crate) fn get<'a>(&self, log: &'a EventLog, cursor: u64) -> Option<Retained<'a>> {
        // Live sending reads the newest run: try it before searching.
        let run = if cursor >= self.newest.cursor {
            &self.newest
        } else {
            let i = self.older.partition_point(|r| r.cursor + r.len <= cursor);
            self.older.get(i)?
        };
        let k = cursor.checked_sub(run.cursor).filter(|k| *k < run.len)?;
        Some(Retained {
            cursor,
            record: log.get(run.id + k)?,
            target: run.target,
        })
    }

    /// Every retained event, oldest first.
    pub(crate) fn iter<'a>(&'a self, log: &'a EventLog) -> impl Iterator<Item = Retained<'a>> {
        self.runs().flat_map(move |r| {
            (0..r.len).filter_map(move |k| {
                Some(Retained {
                    cursor: r.cursor + k,
                    record: log.get(r.id + k)?,
                    target: r.target,
                })
            })
        })
    }

    /// Lets go of every event (the session is gone or gets another window).
    pub(crate) fn clear(&mut self, log: &mut EventLog) {
        let first = log.first_id();
        for r in self.runs() {
            for id in r.id.max(first)..r.id + r.len {
                log.release(id);
            }
        }
        self.older.clear();
        self.newest = Run::default();
        self.events = 0;
        self.bytes = 0;
    }

    /// Events covered.
    pub(crate) fn len(&self) -> usize {
        self.events
    }

    /// Bytes counted against the session's bound.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
