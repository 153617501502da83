//! Client requests from `send` to their outcome, across reconnects.

use std::collections::VecDeque;

use serde_json::Value;

use super::event::{RequestStatus, RequestUpdate};
use crate::cursor::PendingRequest;
use crate::wire::{ClientFrame, Content, MessageFrame, ResponseFrame};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not on the current connection yet (new, or to be resent after a resume).
    Queued,
    /// Written on the current connection, no answer yet.
    Written,
    /// `accepted` (at this sequence number); waiting for `final`.
    Accepted(u64),
}

#[derive(Debug, Clone)]
struct Entry {
    request_id: String,
    content: Value,
    stage: Stage,
    /// Reached the server at least once (on this or an earlier connection).
    sent: bool,
}

/// Bounded, ordered requests awaiting an outcome.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
}

impl Outbox {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn contains(&self, request_id: &str) -> bool {
        self.entries.iter().any(|e| e.request_id == request_id)
    }

    /// Adds a request; `sent` when restored from a persisted state (it may have been written).
    pub(crate) fn push(&mut self, request_id: String, content: Value, sent: bool) {
        self.entries.push_back(Entry {
            request_id,
            content,
            stage: Stage::Queued,
            sent,
        });
    }

    /// Frames for every queued request, in order; they become `Written`.
    pub(crate) fn write_queued(&mut self) -> Vec<String> {
        self.entries
            .iter_mut()
            .filter(|e| e.stage == Stage::Queued)
            .map(|e| {
                e.stage = Stage::Written;
                e.sent = true;
                message_frame(&e.request_id, &e.content)
            })
            .collect()
    }

    /// The connection died. Written-but-unanswered requests are queued again for a resend if
    /// `resend`, else resolved as ambiguous.
    pub(crate) fn connection_lost(&mut self, resend: bool) -> Vec<RequestUpdate> {
        if resend {
            for e in self
                .entries
                .iter_mut()
                .filter(|e| e.stage == Stage::Written)
            {
                e.stage = Stage::Queued;
            }
            return Vec::new();
        }
        self.resolve_where(|e| e.stage == Stage::Written)
    }

    /// Events up to `to` were lost: a `final` of a request accepted before `to` may be among
    /// them. Such requests are resent with their id; the server answers `duplicate` (tether's
    /// server with the original outcome), so they resolve instead of waiting forever.
    pub(crate) fn requeue_after_loss(&mut self, to: u64) -> bool {
        let mut any = false;
        for e in self.entries.iter_mut() {
            if matches!(e.stage, Stage::Accepted(at) if at < to) {
                e.stage = Stage::Queued;
                any = true;
            }
        }
        any
    }

    /// The session was not resumed: nothing already written can be deduplicated any more.
    pub(crate) fn session_lost(&mut self) -> Vec<RequestUpdate> {
        self.resolve_where(|e| e.sent)
    }

    fn resolve_where(&mut self, pred: impl Fn(&Entry) -> bool) -> Vec<RequestUpdate> {
        let mut out = Vec::new();
        self.entries.retain(|e| {
            if pred(e) {
                out.push(RequestUpdate {
                    request_id: e.request_id.clone(),
                    status: RequestStatus::Ambiguous,
                });
                false
            } else {
                true
            }
        });
        out
    }

    /// Applies a `response` frame; returns the update, if it concerns one of our requests.
    /// A `final` without `request_id` (PraisonAI) answers the oldest accepted request: turns of
    /// a session run strictly in order.
    pub(crate) fn on_response(&mut self, r: ResponseFrame, seq: u64) -> Option<RequestUpdate> {
        let index = match &r.request_id {
            Some(id) => self.entries.iter().position(|e| &e.request_id == id)?,
            None if r.status == "final" => self
                .entries
                .iter()
                .position(|e| matches!(e.stage, Stage::Accepted(_)))?,
            None => return None,
        };
        let status = match r.status.as_str() {
            "accepted" => {
                self.entries[index].stage = Stage::Accepted(seq);
                RequestStatus::Accepted
            }
            "final" => RequestStatus::Final {
                content: r.content.map(Content::from),
                outcome: r.outcome,
            },
            "duplicate" => RequestStatus::Duplicate {
                content: r.content.map(Content::from),
                outcome: r.outcome,
            },
            _ => return None,
        };
        let entry = if matches!(status, RequestStatus::Accepted) {
            self.entries[index].clone()
        } else {
            self.entries.remove(index)?
        };
        Some(RequestUpdate {
            request_id: entry.request_id,
            status,
        })
    }

    /// What to persist: every unresolved request, in order.
    pub(crate) fn pending(&self) -> Vec<PendingRequest> {
        self.entries
            .iter()
            .map(|e| PendingRequest {
                request_id: e.request_id.clone(),
                content: e.content.clone(),
            })
            .collect()
    }
}

fn message_frame(request_id: &str, content: &Value) -> String {
    ClientFrame::Message(MessageFrame {
        content: Some(content.clone()),
        request_id: Some(request_id.to_owned()),
        extra: Default::default(),
    })
    .encode()
}
