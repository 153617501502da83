//! What a connection sends next: control frames, owed replays, live events (both read from
//! its session's recovery window while its in-flight window has room), then its close.

use super::config::ServerConfig;
use super::conns::Conn;
use super::event::ServerTransmit;
use super::log::EventLog;
use super::sessions::Sessions;
use super::text::FrameWriter;

/// The buffers frames are assembled in.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Reused buffer frames are written into before they become shared text.
    pub(crate) scratch: String,
    /// Where frames assembled for sending (replays, shared bodies with a session's tail) are
    /// written.
    writer: FrameWriter,
}

/// The frame buffer keeps its capacity up to this size between frames.
pub(crate) const SCRATCH_KEEP: usize = 64 << 10;

impl Output {
    /// The output of one connection, reading the log under `config`'s flow control.
    #[inline]
    pub(crate) fn for_conn<'a>(
        &'a mut self,
        log: &'a EventLog,
        config: &'a ServerConfig,
    ) -> ConnOutput<'a> {
        ConnOutput {
            log,
            scratch: &mut self.scratch,
            writer: &mut self.writer,
            window: (config.max_queued_frames, config.max_buffered_bytes),
            evicted: false,
        }
    }
}

/// Releases an oversized frame buffer: one huge frame must not pin its buffer forever.
#[inline]
pub(crate) fn shrink(scratch: &mut String) {
    if scratch.capacity() > SCRATCH_KEEP {
        *scratch = String::new();
    }
}

/// What [`ConnOutput::next_frame`] reads and writes besides the connection and its session.
pub(crate) struct ConnOutput<'a> {
    log: &'a EventLog,
    /// Replay frames are assembled here.
    scratch: &'a mut String,
    /// Frames that are not a record's text as it is go out from here.
    writer: &'a mut FrameWriter,
    /// The in-flight window: frames, bytes.
    window: (usize, usize),
    /// Set when the connection is owed an event its session's window no longer holds (a slow
    /// consumer; `next_frame` then returns `None`).
    pub(crate) evicted: bool,
}

impl ConnOutput<'_> {
    /// The next output of connection `c` (its session read from `sessions` only when it may
    /// be owed something there): control frames, then owed replays, then live events (both
    /// read from the session's window while the in-flight window has room), then its close.
    /// The flag says whether more may follow (false: nothing is pending until new output
    /// wakes it).
    pub(crate) fn next_frame(
        &mut self,
        c: &mut Conn,
        sessions: &Sessions,
    ) -> Option<(ServerTransmit, bool)> {
        let (max_frames, max_bytes) = self.window;
        if c.close_sent || (c.awaiting_store && c.closing.is_none()) {
            return None;
        }
        if let Some(f) = c.control.pop_front() {
            c.handed_out(f.len());
            return Some((ServerTransmit::Frame(f), true));
        }
        let window_open = c.closing.is_some()
            || (c.in_flight_frames < max_frames && c.in_flight_bytes < max_bytes);
        let session = if c.owed || c.closing.is_some() {
            c.bound.as_ref().and_then(|b| sessions.get(&b.session))
        } else {
            None
        };
        if let (Some(s), true) = (session, window_open) {
            if let Some(r) = c.replay.as_mut() {
                while r.next <= r.end {
                    let cursor = r.next;
                    let Some(e) = s.window.get(self.log, cursor) else {
                        // Evicted since the replay was set up. A closing connection's client
                        // learns of the loss when it resumes; anyone else was owed it.
                        if c.closing.is_none() {
                            self.evicted = true;
                            return None;
                        }
                        r.next += 1;
                        continue;
                    };
                    r.next += 1;
                    let scratch = &mut *self.scratch;
                    scratch.clear();
                    e.write_replay(scratch, r.with_seq);
                    let f = self.writer.write(scratch);
                    shrink(scratch);
                    c.handed_out(f.len());
                    return Some((ServerTransmit::Frame(f), true));
                }
                let end = r.end_frame.take();
                c.replay = None;
                if let Some(f) = end {
                    c.handed_out(f.len());
                    return Some((ServerTransmit::Frame(f.into()), true));
                }
            }
            let limit = c.closing.as_ref().map_or(u64::MAX, |cl| cl.flush_until);
            if c.live_next <= s.head && c.live_next <= limit {
                let e = match s.window.get(self.log, c.live_next) {
                    Some(e) => Some(e),
                    None if c.closing.is_none() => {
                        self.evicted = true;
                        return None;
                    }
                    // Closing: what is still retained goes out; the client learns of the rest
                    // when it resumes.
                    None => s
                        .window
                        .oldest(self.log)
                        .and_then(|o| s.window.get(self.log, o.max(c.live_next))),
                };
                if let Some(e) = e {
                    c.live_next = e.cursor + 1;
                    let f = e.record.frame(e.cursor, self.writer);
                    c.handed_out(f.len());
                    let more = c.closing.is_some() || c.live_next <= s.head.min(limit);
                    return Some((ServerTransmit::Frame(f), more));
                }
                c.live_next = s.head + 1;
            }
        }
        if window_open || session.is_none() {
            // Looked at everything it could be owed: nothing until the next append or replay.
            c.owed = false;
        }
        if let Some(cl) = c.closing.take() {
            c.close_sent = true;
            c.replay = None;
            return Some((
                ServerTransmit::Close {
                    code: cl.code,
                    reason: cl.reason,
                },
                false,
            ));
        }
        None
    }
}
