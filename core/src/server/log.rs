//! The event log every session's recovery window points into: each tracked frame is stored
//! once, however many sessions it was published to.
//!
//! A [`Record`] published to one session holds its whole frame (the live frame shares that
//! text, no copy), written in that session's own chunks. One published to several sessions
//! ([`Server::publish_to`]) holds the frame without its per-session tail
//! `,"cursor":n,"seq":n}`, written in the log's chunks; the tail is appended when the frame is
//! sent or replayed: the bytes on the wire are the same either way. A session's
//! [`Window`](super::window::Window) is a list of runs of consecutive records, not one entry
//! per event.
//!
//! Records leave from the front, oldest first:
//! - by age, once older than [`recovery_window`](super::ServerConfig::recovery_window)
//!   (checked on every append, and by the timer at most once a second);
//! - by total size, while the log holds more than
//!   [`recovery_total_bytes`](super::ServerConfig::recovery_total_bytes) (the newest record
//!   always stays);
//! - once no window holds them any more (per-session bounds, expired sessions): their text is
//!   freed at once and their slot goes when it reaches the front.
//!
//! Windows are not told of evictions by age or size: a record id below
//! [`first_id`](EventLog::first_id) is gone, and a window forgets its runs into it the next
//! time it looks. That keeps eviction O(evicted records), however many sessions there are.
//!
//! [`Server::publish_to`]: super::Server::publish_to

use std::collections::VecDeque;
use std::time::Duration;

use super::text::{FrameText, FrameWriter};
use crate::wire::json;

/// Position of a record in the log (never reused).
pub(crate) type LogId = u64;

/// What one record costs, beyond its text: the record itself and its slot (also what a freed
/// record costs until it reaches the front).
pub(crate) const RECORD_COST: usize = 96;

/// A record as a window holds it: its id, where it starts in the log and what it costs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) id: LogId,
    pub(crate) offset: u64,
    pub(crate) cost: usize,
}

/// One tracked frame, stored once.
#[derive(Debug)]
pub(crate) struct Record {
    /// The whole frame (published to one session), or the shared body its sessions' tails
    /// complete (`shared`). Empty once no window holds it.
    text: FrameText,
    shared: bool,
    /// End of the JSON-escaped `type` value: `text[8..kind_end]` is `"<kind>"`.
    kind_end: usize,
    /// Windows holding it.
    refs: u32,
    /// Id assigned when recorded (the same in every session it went to).
    pub(crate) event_id: u128,
    /// Record time, epoch seconds, as sent in replays.
    pub(crate) timestamp: f64,
    /// When this server stored it, epoch seconds on its own clock: its age is measured from
    /// here (a store's frames carry the publishing node's clock in `timestamp`).
    at: f64,
    /// What it counts against the byte bounds.
    cost: usize,
    /// Sum of the costs of every record appended before it: a window's byte count is a
    /// difference of these, also after the records themselves are gone.
    offset: u64,
}

impl Record {
    /// The frame's `type` value as JSON text (quoted, escaped).
    pub(crate) fn kind_json(&self) -> &str {
        self.text
            .as_bytes()
            .get(json::TYPE_PREFIX.len()..self.kind_end)
            .and_then(|kind| std::str::from_utf8(kind).ok())
            .unwrap_or("\"\"")
    }

    /// Length of the stored text (for a shared record, without the tail).
    pub(crate) fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The frame as sent to the session that numbered it `cursor`: the stored text, or the
    /// shared body and that session's tail written by `writer`.
    #[inline(always)]
    pub(crate) fn frame(&self, cursor: u64, writer: &mut FrameWriter) -> FrameText {
        if self.shared {
            let body = self.text.as_bytes();
            json::tracked_tail(cursor, |[a, b, c, d, e]| {
                let tail = [a, b, c, d, e].map(str::as_bytes);
                writer.write_parts(&[body, tail[0], tail[1], tail[2], tail[3], tail[4]])
            })
        } else {
            self.text.clone()
        }
    }

    /// Appends the frame as sent at `cursor` to `out`.
    pub(crate) fn push_frame(&self, out: &mut String, cursor: u64) {
        out.push_str(self.text.as_str());
        if self.shared {
            json::push_tracked_tail(out, cursor);
        }
    }
}

/// The shared log. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct EventLog {
    /// How long records stay, in seconds (the recovery window).
    window: f64,
    /// Most bytes held (the newest record always stays).
    max_bytes: usize,
    /// No record leaves by age before this wall time (the front's expiry when last looked at;
    /// the front only gets younger).
    next_expiry: f64,
    records: VecDeque<Record>,
    /// Id of `records[0]`.
    first: LogId,
    /// Offset of the next record.
    next_offset: u64,
    /// Costs of the records held (text and slot), plus [`RECORD_COST`] per freed slot.
    bytes: usize,
    /// Records not freed yet.
    live: usize,
    /// Where shared bodies are written (chunks shared by the frames they hold).
    writer: FrameWriter,
}

impl EventLog {
    /// An empty log keeping records for `window` within `max_bytes`.
    pub(crate) fn new(window: Duration, max_bytes: usize) -> Self {
        Self {
            window: window.as_secs_f64(),
            max_bytes,
            next_expiry: f64::NEG_INFINITY,
            records: VecDeque::new(),
            first: 0,
            next_offset: 0,
            bytes: 0,
            live: 0,
            writer: FrameWriter::default(),
        }
    }

    /// The text of a new shared body, stored with the log's others (see [`FrameWriter`]).
    pub(crate) fn write(&mut self, text: &str) -> FrameText {
        self.writer.write(text)
    }

    /// Appends a record stored at wall time `at`, held by `holders` windows already (the
    /// others [`hold`](Self::hold) it). `text` is a whole frame, or the body shared by several
    /// sessions (`shared`). It must start with `{"type":` and the kind as a JSON string ending
    /// at `kind_end`.
    #[inline(always)]
    pub(crate) fn push(
        &mut self,
        (text, shared, kind_end): (FrameText, bool, usize),
        (event_id, timestamp): (u128, f64),
        at: f64,
        holders: u32,
    ) -> Held {
        let cost = text.len() + RECORD_COST;
        let held = Held {
            id: self.next_id(),
            offset: self.next_offset,
            cost,
        };
        self.bytes += cost;
        self.live += 1;
        self.next_expiry = self.next_expiry.min(at + self.window);
        self.records.push_back(Record {
            text,
            shared,
            kind_end,
            refs: holders,
            event_id,
            timestamp,
            at,
            cost,
            offset: held.offset,
        });
        self.next_offset += cost as u64;
        held
    }

    /// Id of the oldest record still in the log: every id below it is gone.
    #[inline]
    pub(crate) fn first_id(&self) -> LogId {
        self.first
    }

    /// Id the next record will get.
    pub(crate) fn next_id(&self) -> LogId {
        self.first + self.records.len() as u64
    }

    /// The record `id`, if it is still in the log.
    #[inline(always)]
    pub(crate) fn get(&self, id: LogId) -> Option<&Record> {
        let index = usize::try_from(id.checked_sub(self.first)?).ok()?;
        self.records.get(index)
    }

    /// Offset of record `id` (which must still be in the log), or of the next record.
    pub(crate) fn offset(&self, id: LogId) -> u64 {
        self.get(id).map_or(self.next_offset, |r| r.offset)
    }

    /// One more window holds record `id`; `None` if it is gone.
    #[inline]
    pub(crate) fn hold(&mut self, id: LogId) -> Option<Held> {
        let index = usize::try_from(id.checked_sub(self.first)?).ok()?;
        let r = self.records.get_mut(index)?;
        r.refs = r.refs.saturating_add(1);
        Some(Held {
            id,
            offset: r.offset,
            cost: r.cost,
        })
    }

    /// A window let go of record `id` (which must still be in the log): freed once no window
    /// holds it. Returns its cost (0 if it is gone).
    #[inline(always)]
    pub(crate) fn release(&mut self, id: LogId) -> usize {
        let Some(index) = id
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return 0;
        };
        let Some(r) = self.records.get_mut(index) else {
            return 0;
        };
        let cost = r.cost;
        r.refs = r.refs.saturating_sub(1);
        if r.refs > 0 {
            return cost;
        }
        if index == 0 {
            // The common case (a window evicts its oldest, the log's oldest): out at once.
            // Freed records behind it leave at the next `evict`.
            self.pop_front();
        } else if !r.text.is_empty() {
            self.bytes -= r.cost - RECORD_COST;
            self.live -= 1;
            r.text = FrameText::empty();
        }
        cost
    }

    /// Removes the newest record if no window took it (a publish that reached no session).
    pub(crate) fn discard_unheld(&mut self, id: LogId) {
        if self.next_id() == id + 1 && self.records.back().is_some_and(|r| r.refs == 0) {
            if let Some(r) = self.records.pop_back() {
                self.bytes -= r.cost;
                self.live -= 1;
                self.next_offset = r.offset;
            }
        }
    }

    /// Evicts from the front what is older than the window at wall time `wall`, what exceeds
    /// the byte bound (never the newest record) and what no window holds any more. True if a
    /// record some window still held was evicted.
    #[inline(always)]
    pub(crate) fn evict(&mut self, wall: f64) -> bool {
        // Most appends: nothing is due (no record load).
        if wall < self.next_expiry && self.bytes <= self.max_bytes {
            return false;
        }
        self.evict_front(wall)
    }

    fn evict_front(&mut self, wall: f64) -> bool {
        let oldest_kept = wall - self.window;
        let mut held_evicted = false;
        while let Some(front) = self.records.front() {
            let expired = front.at <= oldest_kept;
            let over = self.bytes > self.max_bytes && self.records.len() > 1;
            if !(expired || over || front.refs == 0) {
                break;
            }
            held_evicted |= front.refs > 0;
            self.pop_front();
        }
        self.next_expiry = self.expires_at().unwrap_or(f64::INFINITY);
        held_evicted
    }

    /// Wall time (epoch seconds) at which the oldest record leaves by age.
    pub(crate) fn expires_at(&self) -> Option<f64> {
        self.records.front().map(|r| r.at + self.window)
    }

    /// Bytes held (texts and slots).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records in the log, freed slots included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }

    /// Records not freed yet: the events held (each once).
    pub(crate) fn events(&self) -> usize {
        self.live
    }

    fn pop_front(&mut self) {
        if let Some(r) = self.records.pop_front() {
            // A freed record (no text) only still costs its slot.
            self.bytes -= if r.text.is_empty() {
                RECORD_COST
            } else {
                self.live -= 1;
                r.cost
            };
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(log: &mut EventLog, text: &str, timestamp: f64) -> LogId {
        let text = log.write(text);
        log.push((text, false, 11), (7, 0.0), timestamp, 0).id
    }

    #[test]
    fn records_are_freed_when_the_last_window_lets_go_and_leave_from_the_front() {
        let mut log = EventLog::new(Duration::from_secs(10), usize::MAX);
        let a = push(&mut log, r#"{"type":"m","cursor":1,"seq":1}"#, 0.0);
        let b = push(&mut log, r#"{"type":"m","cursor":2,"seq":2}"#, 0.0);
        assert_eq!((a, b, log.first_id(), log.next_id()), (0, 1, 0, 2));
        let cost = 31 + RECORD_COST;
        assert_eq!(log.bytes(), 2 * cost);
        let held = |h: Option<Held>| h.map(|h| (h.id, h.offset, h.cost));
        assert_eq!(held(log.hold(a)), Some((a, 0, cost)));
        assert_eq!(held(log.hold(a)), Some((a, 0, cost)));
        assert_eq!(held(log.hold(b)), Some((b, cost as u64, cost)));
        assert_eq!(log.get(a).unwrap().kind_json(), "\"m\"");
        // Held twice: one release keeps it.
        log.release(a);
        assert_eq!(log.bytes(), 2 * cost);
        // b freed in the middle: its text goes at once, its slot stays behind a.
        log.release(b);
        assert_eq!(log.bytes(), cost + RECORD_COST);
        assert_eq!((log.len(), log.events()), (2, 1));
        // The last hold of the front goes: it leaves, and b's slot at the next eviction.
        log.release(a);
        assert_eq!(
            (log.len(), log.bytes(), log.first_id()),
            (1, RECORD_COST, 1)
        );
        assert!(!log.evict(0.0), "nothing held was evicted");
        assert_eq!((log.len(), log.bytes(), log.first_id()), (0, 0, 2));
        assert_eq!(log.get(a).map(|r| r.refs), None);
        assert!(log.hold(b).is_none(), "gone");
    }

    #[test]
    fn eviction_by_age_and_size_keeps_the_newest_and_reports_held_records() {
        let cost = 12 + RECORD_COST;
        let five = |max_bytes| {
            let mut log = EventLog::new(Duration::from_secs(10), max_bytes);
            let ids: Vec<LogId> = (0..5)
                .map(|i| {
                    let id = push(&mut log, r#"{"type":"m"}"#, f64::from(i));
                    log.hold(id);
                    id
                })
                .collect();
            (log, ids)
        };
        let (mut log, ids) = five(usize::MAX);
        assert_eq!(log.expires_at(), Some(10.0));
        assert!(!log.evict(9.5), "nothing is 10 s old yet");
        assert!(log.evict(11.0), "ages 11 and 10 go");
        assert_eq!(log.first_id(), ids[2]);
        assert_eq!(log.expires_at(), Some(12.0));
        // Everything by age: the log is empty.
        assert!(log.evict(100.0));
        assert_eq!((log.len(), log.bytes(), log.expires_at()), (0, 0, None));
        // A record no window took is discarded; offsets continue where they were.
        let next = log.next_id();
        let id = push(&mut log, r#"{"type":"m"}"#, 100.0);
        log.discard_unheld(id);
        assert_eq!((log.next_id(), log.bytes()), (next, 0));
        assert_eq!(log.offset(next), 5 * cost as u64);
        // Size: down to the bound.
        let (mut log, ids) = five(2 * cost);
        assert!(log.evict(0.0));
        assert_eq!((log.first_id(), log.bytes()), (ids[3], 2 * cost));
        // Never the newest record.
        let (mut log, ids) = five(0);
        assert!(log.evict(0.0));
        assert_eq!((log.first_id(), log.len()), (ids[4], 1));
    }

    #[test]
    fn shared_records_get_each_session_its_own_tail() {
        let mut log = EventLog::new(Duration::from_secs(10), usize::MAX);
        let body = log.write(r#"{"type":"tick","n":1"#);
        let id = log.push((body, true, 14), (1, 0.0), 0.0, 1).id;
        let record = log.get(id).unwrap();
        let mut writer = FrameWriter::default();
        assert_eq!(
            record.frame(7, &mut writer),
            r#"{"type":"tick","n":1,"cursor":7,"seq":7}"#
        );
        assert_eq!(
            record.frame(12, &mut writer),
            r#"{"type":"tick","n":1,"cursor":12,"seq":12}"#
        );
        let mut out = String::new();
        record.push_frame(&mut out, 3);
        assert_eq!(out, r#"{"type":"tick","n":1,"cursor":3,"seq":3}"#);
        assert_eq!(record.kind_json(), "\"tick\"");
    }
}
