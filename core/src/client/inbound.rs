//! Frames after the handshake: live and replayed events, sequence checks, gap repair,
//! replay ends, responses and control frames.

use super::handshake::rejection_of_hello_error;
use super::*;

impl Client {
    pub(super) fn on_frame(&mut self, now: Instant, frame: ServerFrame) {
        match frame {
            ServerFrame::Replay(r) => {
                let inner = crate::wire::parse_typed::<SeqFields>(r.event.data.get());
                let Ok(inner) = inner else {
                    return self.bad_frame(inner.err().unwrap_or(DecodeError::NotObject));
                };
                let Some(seq) = r.event.sequence.or(r.seq).or(inner.seq).or(inner.cursor) else {
                    return self.bad_frame(DecodeError::Field {
                        field: "event.sequence".into(),
                        reason: "missing".into(),
                    });
                };
                let cursor = inner.cursor.unwrap_or(seq);
                self.on_tracked(now, &r.event.kind, seq, cursor, r.event.data.get(), true);
            }
            ServerFrame::Event(ev) if ev.kind == "replay_end" => self.on_replay_end(now, ev),
            ServerFrame::Event(ev) => {
                self.end_replay_phase(None);
                match (ev.sequence(), ev.resume_cursor()) {
                    (Some(seq), Some(cursor)) => {
                        self.on_tracked(now, &ev.kind, seq, cursor, &ev.text, false)
                    }
                    _ => self.events.push_back(Event::Notice(ev)),
                }
            }
            ServerFrame::Ping => {
                self.end_replay_phase(None);
                self.send_frame(&ClientFrame::Pong);
            }
            ServerFrame::Pong => self.end_replay_phase(None),
            ServerFrame::Error(e) => {
                self.end_replay_phase(None);
                self.events.push_back(Event::ServerError(e));
            }
            ServerFrame::Snapshot(s) => {
                self.events.push_back(Event::Snapshot(s));
                self.end_replay_phase(None);
            }
            ServerFrame::HelloError(e) => self.reject(now, rejection_of_hello_error(e)),
            other => {
                self.protocol_error(now, format!("unexpected frame after handshake {other:?}"))
            }
        }
    }

    fn on_replay_end(&mut self, now: Instant, ev: EventFrame) {
        let head = ev.resume_cursor();
        self.conn.repair_pending = None;
        if let Some(expected) = self.conn.replay_hole.take() {
            // The phase is over, nothing of it is on the way any more: ask again from the hole.
            self.conn.replay_head = None;
            return self.repair(now, expected);
        }
        self.end_replay_phase(head);
    }

    /// The replays that follow a handshake (or a resync) are over: whatever they did not cover up
    /// to the announced head is gone.
    pub(super) fn end_replay_phase(&mut self, head: Option<u64>) {
        let Some(head) = head.or(self.conn.replay_head.take()) else {
            return;
        };
        self.conn.replay_head = None;
        let Some(tracker) = self.tracker.as_mut() else {
            return;
        };
        let expected = tracker.expected();
        if expected <= head {
            tracker.skip_to(head);
            self.report_lost(expected, head);
            self.cursor = Some(self.cursor.map_or(head, |c| c.max(head)));
        }
    }

    fn report_lost(&mut self, from: u64, to: u64) {
        let count = to.saturating_sub(from).saturating_add(1);
        self.stats.lost = self.stats.lost.saturating_add(count);
        self.events.push_back(Event::Lost { from, to });
        if self.outbox.requeue_after_loss(to) && self.phase == Phase::Connected {
            self.flush_outbox();
        }
    }

    /// A tracked event; its payload is copied only if it is delivered.
    pub(super) fn on_tracked(
        &mut self,
        now: Instant,
        kind: &str,
        seq: u64,
        cursor: u64,
        payload: &str,
        replayed: bool,
    ) {
        if seq > MAX_SEQUENCE || cursor > MAX_SEQUENCE {
            return self.bad_frame(DecodeError::Field {
                field: "seq".into(),
                reason: format!("out of range (max {MAX_SEQUENCE})"),
            });
        }
        let Some(tracker) = self.tracker.as_mut() else {
            return;
        };
        let first_replay = replayed && !self.conn.replay_seen;
        self.conn.replay_seen |= replayed;
        match tracker.observe(seq) {
            Verdict::InOrder => self.deliver(kind, seq, cursor, payload, replayed),
            Verdict::Duplicate => {}
            Verdict::Gap { expected, received } => {
                if first_replay {
                    // The server replays all it holds: what comes before its first replay is
                    // gone and cannot be repaired.
                    tracker.skip_to(seq);
                    self.report_lost(expected, received - 1);
                    return self.deliver(kind, seq, cursor, payload, replayed);
                }
                if self.conn.repair_pending.is_some() || self.conn.replay_hole.is_some() {
                    return; // the repair under way will bring this frame again
                }
                self.stats.gaps += 1;
                self.events.push_back(Event::Gap { expected, received });
                let v2 = self.version.unwrap_or(1) >= crate::version::V2 && !self.conn.legacy;
                if self.config.repair_gaps && self.repaired_from != Some(expected) {
                    self.repaired_from = Some(expected);
                    if replayed && v2 {
                        self.conn.replay_hole = Some(expected);
                    } else {
                        self.repair(now, expected);
                    }
                } else {
                    tracker.skip_to(seq);
                    self.report_lost(expected, received - 1);
                    self.deliver(kind, seq, cursor, payload, replayed);
                }
            }
        }
    }

    /// v2: ask for the missing events in-band; v1: resume on a new socket.
    fn repair(&mut self, now: Instant, expected: u64) {
        let since = expected.saturating_sub(1);
        if self.version.unwrap_or(1) >= crate::version::V2 && !self.conn.legacy {
            self.conn.repair_pending = Some(expected);
            self.conn.replay_seen = false;
            self.transmits.push_back(Transmit::Frame(format!(
                r#"{{"type":"resync","since":{since}}}"#
            )));
        } else {
            self.close_socket(close::NORMAL, "gap repair");
            self.connection_ended(now, DisconnectCause::GapRepair);
        }
    }

    fn deliver(&mut self, kind: &str, seq: u64, cursor: u64, payload: &str, replayed: bool) {
        self.stats.delivered += 1;
        self.cursor = Some(self.cursor.map_or(cursor, |c| c.max(cursor)));
        let update = if kind == "response" {
            crate::wire::parse_typed::<ResponseFrame>(payload)
                .ok()
                .and_then(|r| self.outbox.on_response(r, seq))
        } else {
            None
        };
        self.events.push_back(Event::Delivered(Delivered {
            kind: Kind::from(kind),
            seq,
            cursor,
            replayed,
            payload: self.payloads.add(payload),
        }));
        if let Some(update) = update {
            self.events.push_back(Event::Request(update));
        }
    }
}

/// `cursor`/`seq` of a replayed event's original frame.
#[derive(serde::Deserialize)]
struct SeqFields {
    #[serde(default)]
    cursor: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
}
