//! Replay set-up: what a connection is owed after a handshake (the retained events after its
//! `since`) or after a v2 `resync`, and how the reply reports it.

use std::time::Instant;

use super::conns::{ConnId, ReplayPhase};
use super::event::{PeerError, ServerEvent};
use super::handshake::ReplayInfo;
use super::session::SessionId;
use super::Server;
use crate::version::V2;
use crate::wire::{encode, ConnectErrorCode};

impl Server {
    /// The `since` to replay from: a client of another epoch may hold numbers this line of
    /// history gave to other events (a restore from an older snapshot lost them), so it is
    /// rewound to the epoch's start; the handshake's `sequence` tells it so.
    pub(super) fn effective_since(
        &self,
        sid: &SessionId,
        resumed: bool,
        since: Option<u64>,
        epoch: Option<u64>,
    ) -> Option<u64> {
        match (self.sessions.get(sid), since, epoch) {
            (Some(s), Some(c), Some(e)) if resumed && e != s.epoch && c > s.epoch_start => {
                Some(s.epoch_start)
            }
            _ => since,
        }
    }

    /// Sets the connection's send cursors after a handshake: replays of the retained events
    /// with cursor > `since` (nothing without `since`), then live from head + 1.
    pub(super) fn start_replay(
        &mut self,
        conn: ConnId,
        sid: &SessionId,
        since: Option<u64>,
        with_seq: bool,
        v2: bool,
    ) -> ReplayInfo {
        let (head, oldest) = self
            .sessions
            .get(sid)
            .map_or((0, 1), |s| (s.head, s.oldest_cursor(&self.log)));
        let mut info = ReplayInfo {
            sequence: head,
            oldest,
            resync_required: false,
            lost: None,
        };
        let mut replay = None;
        let mut replayed = 0;
        if let Some(since) = since {
            let first = since.saturating_add(1).max(oldest);
            if first <= head {
                replayed = head - first + 1;
                info.sequence = first - 1;
                replay = Some((first, head));
            }
            info.resync_required = since.saturating_add(1) < oldest;
            if info.resync_required {
                info.lost = Some((since + 1, oldest - 1));
            }
        }
        let end_frame = v2.then(|| encode::replay_end(head, replayed, info.lost));
        if let Some(c) = self.conns.get_mut(conn) {
            c.live_next = head + 1;
            c.owed = true;
            c.replay = match (replay, end_frame) {
                (Some((first, end)), end_frame) => Some(ReplayPhase {
                    next: first,
                    end,
                    with_seq,
                    end_frame,
                }),
                (None, Some(f)) => Some(ReplayPhase {
                    next: 1,
                    end: 0,
                    with_seq,
                    end_frame: Some(f),
                }),
                (None, None) => None,
            };
        }
        self.conns.mark_ready(conn);
        info
    }

    /// Completes this connection's queued `SessionResumed` with the loss its replay reports.
    pub(super) fn note_resume_loss(&mut self, conn: ConnId, loss: Option<(u64, u64)>) {
        let queued = self.events.iter_mut().rev().find_map(|e| match e {
            ServerEvent::SessionResumed { conn: c, lost, .. } if *c == conn => Some(lost),
            _ => None,
        });
        if let Some(lost) = queued {
            *lost = loss;
        }
    }

    /// v2 in-band repair: `{"type":"resync","since":n}` → replays of cursor > n, then
    /// `replay_end` (with `lost_from`/`lost_to` when the window no longer holds n+1).
    pub(super) fn on_resync(&mut self, now: Instant, conn: ConnId, text: &str) {
        #[derive(serde::Deserialize)]
        struct Resync {
            since: u64,
        }
        let Some(b) = self.bound_or_refuse(now, conn) else {
            return;
        };
        if b.version < V2 {
            self.on_unknown(now, conn); // not a v1 frame: ignored like the reference
            return;
        }
        let since = match serde_json::from_str::<Resync>(text) {
            Ok(r) => r.since,
            Err(_) => {
                self.push_control(
                    now,
                    conn,
                    encode::error(
                        Some(ConnectErrorCode::InvalidValue),
                        "resync requires an integer 'since'",
                        Some("since"),
                    ),
                );
                self.bad_input(
                    conn,
                    PeerError::InvalidValue {
                        field: "since".into(),
                    },
                );
                return;
            }
        };
        let (Some(c), Some(s)) = (self.conns.get_mut(conn), self.sessions.get(&b.session)) else {
            return;
        };
        // Replays cover what was already sent live; live sending continues after them.
        let end = c.live_next.saturating_sub(1).min(s.head);
        let oldest = s.oldest_cursor(&self.log);
        let first = since.saturating_add(1).max(oldest);
        let replayed = if first <= end { end - first + 1 } else { 0 };
        let lost = (since.saturating_add(1) < oldest && since < end)
            .then(|| (since + 1, (oldest - 1).min(end)));
        c.owed = true;
        c.replay = Some(ReplayPhase {
            next: first,
            end,
            with_seq: true,
            end_frame: Some(encode::replay_end(end, replayed, lost)),
        });
        self.conns.mark_ready(conn);
    }
}
