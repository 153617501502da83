//! Client frames after the handshake: requests (handed to the application once per request
//! id within the dedup window), `leave`, `ping`, unknown types and undecodable frames.

use std::time::Instant;

use serde_json::Value;

use super::conns::{ConnId, Flush};
use super::event::{PeerError, ServerEvent};
use super::handshake::{self, Handshake};
use super::session::{Outcome, SessionId};
use super::store::StoreRequest;
use super::Server;
use crate::wire::{close, encode, ClientFrame, ConnectErrorCode, DecodeError, MessageFrame};

impl Server {
    pub(super) fn on_frame(&mut self, now: Instant, conn: ConnId, frame: ClientFrame) {
        match frame {
            ClientFrame::Hello(h) => self.on_handshake(now, conn, Handshake::Hello(h)),
            ClientFrame::Join(j) => self.on_handshake(now, conn, Handshake::Join(j)),
            ClientFrame::Message(m) => self.on_message(now, conn, m),
            ClientFrame::Leave(_) => self.on_leave(now, conn),
            ClientFrame::Ping => self.push_control(now, conn, encode::PONG),
            // Pong only proves liveness; abort/server_reply are not modelled yet (ignored).
            ClientFrame::Pong | ClientFrame::Abort(_) | ClientFrame::ServerReply(_) => {}
            ClientFrame::Other(ev) if ev.kind == "resync" => self.on_resync(now, conn, &ev.text),
            ClientFrame::Other(_) => self.on_unknown(now, conn),
            // ClientFrame is non_exhaustive: future frame types count as unknown.
            #[allow(unreachable_patterns)]
            _ => self.on_unknown(now, conn),
        }
    }

    pub(super) fn on_unknown(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.unknown_frames = c.unknown_frames.saturating_add(1);
        if c.unknown_frames > self.config.max_unknown_frames {
            self.bad_input(conn, PeerError::Flood);
            self.close_conn(
                now,
                conn,
                close::UNKNOWN_FRAME_FLOOD,
                String::new(),
                Flush::Control,
            );
        }
    }

    pub(super) fn on_decode_error(
        &mut self,
        now: Instant,
        conn: ConnId,
        text: &str,
        err: DecodeError,
    ) {
        let Some(field) = err.field().map(str::to_owned) else {
            // Not JSON or not an object.
            self.unreadable_frame(now, conn, err, close::INVALID_PAYLOAD);
            return;
        };
        #[derive(serde::Deserialize)]
        struct Kind {
            #[serde(rename = "type", default)]
            kind: Option<Value>,
        }
        let kind = serde_json::from_str::<Kind>(text)
            .ok()
            .and_then(|k| k.kind)
            .and_then(|k| k.as_str().map(str::to_owned));
        let reply = match kind.as_deref() {
            Some("hello") => handshake::hello_field_error(&field, &err),
            Some("join") => handshake::join_field_error(&field),
            None | Some("message") => encode::error(
                Some(ConnectErrorCode::InvalidValue),
                &err.to_string(),
                Some(&field),
            ),
            Some(_) => encode::error(
                Some(ConnectErrorCode::InvalidFrame),
                &err.to_string(),
                Some(&field),
            ),
        };
        self.push_control(now, conn, reply);
        self.bad_input(conn, PeerError::Decode(err));
    }

    fn on_message(&mut self, now: Instant, conn: ConnId, m: MessageFrame) {
        let Some(b) = self.bound_or_refuse(now, conn) else {
            return;
        };
        let content = match m.content {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => Some(v),
        };
        let Some(content) = content else {
            // An empty turn would never get a `final` (PROTOCOL.md §14.13): refuse it.
            self.push_control(
                now,
                conn,
                encode::error(
                    Some(ConnectErrorCode::InvalidValue),
                    "message content must be non-empty",
                    Some("content"),
                ),
            );
            self.bad_input(
                conn,
                PeerError::InvalidValue {
                    field: "content".into(),
                },
            );
            return;
        };
        let request_id = m.request_id.unwrap_or_else(|| self.rng.hex_id(16));
        if self.config.external_store {
            // Another node may have seen this id: the store decides (`handle_store_check`).
            self.store_requests.push_back(StoreRequest::CheckRequest {
                conn,
                session: b.session,
                request_id,
                content,
            });
            return;
        }
        let Some(s) = self.sessions.get_mut(&b.session) else {
            return;
        };
        s.dedup.prune(now, self.config.dedup_ttl);
        if let Some(prev) = s.dedup.find(&request_id) {
            // A resend (e.g. after a reconnect): never abuse, never handed out twice.
            let outcome = prev.outcome.clone();
            self.record_duplicate(now, &b.session, &request_id, outcome);
            return;
        }
        self.accept_request(now, conn, &b.session, request_id, content);
    }

    /// Answers a resent request with `duplicate` (and its outcome once known).
    pub(super) fn record_duplicate(
        &mut self,
        now: Instant,
        sid: &SessionId,
        request_id: &str,
        outcome: Option<Outcome>,
    ) {
        let outcome_json = outcome.as_ref().map(Outcome::outcome_json);
        let answer = outcome.as_ref().zip(outcome_json.as_ref());
        let answer = answer.map(|(o, json)| (&o.content, json));
        self.record(now, sid, "response", |o| {
            encode::duplicate(o, answer, sid.as_str(), request_id)
        });
    }

    /// A first sighting: remembered, `accepted`, handed to the application once.
    pub(super) fn accept_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: &SessionId,
        request_id: String,
        content: Value,
    ) {
        let (ttl, max) = (self.config.dedup_ttl, self.config.dedup_max);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.dedup.prune(now, ttl);
            s.dedup.insert(request_id.clone(), now, max);
        }
        self.record(now, sid, "response", |o| {
            encode::accepted(o, sid.as_str(), &request_id)
        });
        self.events.push_back(ServerEvent::Request {
            session: sid.clone(),
            request_id,
            content: content.into(),
            conn,
        });
    }

    fn on_leave(&mut self, now: Instant, conn: ConnId) {
        let Some(b) = self.conns.get_mut(conn).and_then(|c| {
            c.replay = None;
            c.bound.take()
        }) else {
            return; // the reference sends nothing when unbound
        };
        let left = encode::left(b.session.as_str());
        self.push_control(now, conn, left);
        self.detach_if_owner(now, &b.session, conn);
    }
}
