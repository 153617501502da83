//! The handshake: the `hello` (or legacy `join`) the client offers, and what it adopts from
//! the reply or learns from a refusal.

use super::*;

/// What a handshake reply establishes.
struct Adopted {
    version: u32,
    epoch: Option<u64>,
    session_id: String,
    head: u64,
    sequence: Option<u64>,
    heartbeat_ms: Option<u64>,
    legacy: bool,
}

impl Client {
    pub(super) fn send_handshake(&mut self, mode: HandshakeMode) {
        let since = self.session_id.as_ref().and(self.cursor);
        let (min, max) = (self.config.versions.min(), self.config.versions.max());
        let frame = match mode {
            HandshakeMode::Hello => ClientFrame::Hello(Hello {
                agent_id: Some(self.config.agent_id.clone()),
                protocol_min: Some(min),
                protocol_max: Some(max),
                capabilities: Some(self.config.capabilities.clone()),
                session_id: self.session_id.clone(),
                since,
                epoch: self.session_id.as_ref().and(self.epoch),
                ..Hello::default()
            }),
            HandshakeMode::Join => ClientFrame::Join(Join {
                agent_id: Some(self.config.agent_id.clone()),
                min_version: Some(min),
                max_version: Some(max),
                session_id: self.session_id.clone(),
                since,
                epoch: self.session_id.as_ref().and(self.epoch),
                ..Join::default()
            }),
        };
        self.send_frame(&frame);
        self.phase = Phase::Handshaking(mode);
    }

    pub(super) fn on_handshake_reply(
        &mut self,
        now: Instant,
        mode: HandshakeMode,
        frame: ServerFrame,
    ) {
        match frame {
            ServerFrame::HelloOk(ok) => self.adopt(
                now,
                Adopted {
                    version: ok.protocol,
                    epoch: ok.epoch,
                    session_id: ok.session_id,
                    head: ok.cursor,
                    sequence: ok.sequence,
                    heartbeat_ms: ok.policy.heartbeat_ms,
                    legacy: false,
                },
            ),
            ServerFrame::Joined(j) => self.adopt(
                now,
                Adopted {
                    version: j.protocol_version.unwrap_or(crate::version::V1),
                    epoch: j.epoch,
                    session_id: j.session_id,
                    head: j.cursor,
                    sequence: j.sequence,
                    heartbeat_ms: None,
                    legacy: true,
                },
            ),
            ServerFrame::HelloError(e) => self.reject(now, rejection_of_hello_error(e)),
            ServerFrame::Error(e) if mode == HandshakeMode::Hello && knows_no_hello(&e) => {
                self.send_handshake(HandshakeMode::Join);
            }
            ServerFrame::Error(e) => {
                let rejection = rejection_of_error(e, self.config.versions);
                self.reject(now, rejection)
            }
            ServerFrame::Ping => self.send_frame(&ClientFrame::Pong),
            ServerFrame::Pong => {}
            other => self.protocol_error(now, format!("unexpected handshake reply {other:?}")),
        }
    }

    fn adopt(&mut self, now: Instant, a: Adopted) {
        if a.head > MAX_SEQUENCE || a.sequence.is_some_and(|s| s > MAX_SEQUENCE) {
            return self.protocol_error(now, format!("handshake cursor {} out of range", a.head));
        }
        if !self.config.versions.contains(a.version) {
            self.close_socket(close::PROTOCOL_ERROR, "unsupported version");
            return self.finish(ClosedReason::ProtocolViolation(format!(
                "server chose version {} outside the offered {}",
                a.version, self.config.versions
            )));
        }
        self.handshake_deadline = None;
        self.phase = Phase::Connected;
        self.version = Some(a.version);
        self.stats.connections += 1;
        let resumed = self.session_id.as_deref() == Some(a.session_id.as_str());
        if let Some(previous) = self.session_id.take().filter(|_| !resumed) {
            self.events.push_back(Event::SessionReplaced {
                previous,
                current: a.session_id.clone(),
            });
            self.cursor = None;
            let updates = self.outbox.session_lost();
            self.push_request_updates(updates);
        }
        self.session_id = Some(a.session_id.clone());
        self.epoch = a.epoch.or(self.epoch.filter(|_| resumed));
        let expected = match self.cursor {
            Some(c) if a.head < c => {
                self.events.push_back(Event::ServerReset {
                    cursor: c,
                    head: a.head,
                });
                let updates = self.outbox.session_lost();
                self.push_request_updates(updates);
                self.cursor = Some(a.head);
                a.head.saturating_add(1)
            }
            // The server rewound us (`sequence` below our cursor): what we hold above it belongs
            // to a history the server lost (a restore from an older snapshot). Start over there.
            Some(c) if a.sequence.is_some_and(|s| s < c) => {
                let s = a.sequence.unwrap_or(c);
                self.events
                    .push_back(Event::ServerReset { cursor: c, head: s });
                let updates = self.outbox.session_lost();
                self.push_request_updates(updates);
                self.cursor = Some(s);
                s.saturating_add(1)
            }
            // Replays follow from since+1; the replay logic reports whatever is missing. Never
            // expect less than before: a peer whose cursor lags its seq must not get a replay of
            // what was already delivered.
            Some(c) => {
                let before = self.tracker.as_ref().map_or(0, SequenceTracker::expected);
                c.saturating_add(1).max(before)
            }
            None => {
                self.cursor = Some(a.sequence.unwrap_or(a.head));
                a.sequence.unwrap_or(a.head).saturating_add(1)
            }
        };
        // The new tracker starts its own duplicate count: keep the old one's in the stats.
        let dropped = self.tracker.as_ref().map_or(0, SequenceTracker::duplicates);
        self.stats.duplicates = self.stats.duplicates.saturating_add(dropped);
        self.tracker = Some(SequenceTracker::new(expected));
        self.conn.replay_head = Some(a.head);
        self.conn.legacy = a.legacy;
        let interval = a
            .heartbeat_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .or(self.config.fallback_heartbeat);
        self.conn.heartbeat = interval.map(|interval| {
            Heartbeat::new(
                HeartbeatConfig {
                    interval,
                    missed_beats: self.config.missed_beats,
                },
                now,
            )
        });
        // A completed handshake forgives the outage: the next cut retries from the first delay.
        self.backoff.reset();
        self.events.push_back(Event::StateChanged(State::Connected {
            version: a.version,
            session_id: a.session_id,
            resumed,
            legacy: a.legacy,
        }));
        self.flush_outbox();
    }
}

/// A bare `error` answering `hello` without a code (or with the core codec's "unknown frame
/// type" `configuration_error`) means the server predates `hello`: try `join`. Anything with a
/// real code is a real rejection (the reference client wrongly falls back on every error).
fn knows_no_hello(e: &ErrorFrame) -> bool {
    match &e.code {
        None => true,
        Some(ConnectErrorCode::ConfigurationError) => {
            e.message.to_ascii_lowercase().contains("unknown")
        }
        Some(_) => false,
    }
}

pub(super) fn rejection_of_hello_error(e: HelloError) -> Rejection {
    Rejection {
        next_step: e.next_step.or_else(|| e.next.map(RecoveryStep::from)),
        code: e.code,
        message: e.message,
        retry_after: e
            .retry_after_seconds
            .map(|s| Duration::from_secs(s).min(MAX_WAIT)),
    }
}

/// A legacy `error` answering the handshake, for a client that offered `offered`.
fn rejection_of_error(e: ErrorFrame, offered: VersionRange) -> Rejection {
    let next_step = match e.code {
        Some(ConnectErrorCode::VersionUnsupported) => Some(version_step(&e.extra, offered)),
        _ => None,
    };
    Rejection {
        code: e
            .code
            .unwrap_or_else(|| ConnectErrorCode::Other(String::new())),
        message: e.message,
        next_step,
        retry_after: None,
    }
}

/// What a `version_unsupported` refusal asks of a client that offered `offered`: the side
/// behind moves, as [`negotiate`] judges the two ranges (the server's from the frame). Without
/// a usable server range, a server minimum above v1 means the client is too old.
fn version_step(extra: &crate::wire::Map, offered: VersionRange) -> RecoveryStep {
    let field = |k: &str| {
        extra
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    let (min, max) = (field("server_min_version"), field("server_max_version"));
    let server = min.zip(max).and_then(|(a, b)| VersionRange::new(a, b).ok());
    match server.map(|server| negotiate(offered, server)) {
        Some(Err(mismatch)) => mismatch.next_step(),
        _ if min.is_some_and(|m| m > 1) => RecoveryStep::UpgradeClient,
        _ => RecoveryStep::DowngradeClient,
    }
}
