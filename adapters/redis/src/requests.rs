//! The machine's store requests: writes queued for the writer (once there is room in the
//! append queue, so memory stays bounded), and the reads of the sessions handshakes name.

use std::collections::HashMap;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tether_core::server::{ConnId, ServerEvent, SessionId, StoreUnavailable};
use tether_driver::ServerEvents;

use crate::keys::Keys;
use crate::node::Inner;
use crate::wire::{self};
use crate::worker::Write;

/// Attempts of a handshake's read before the client is told to retry.
const READ_ATTEMPTS: u32 = 3;

/// Passes the application's events on; queues the store's (waiting for room in the append
/// queue, so memory stays bounded) and starts the handshakes' reads.
pub(crate) async fn pump(
    inner: Arc<Inner>,
    mut events: ServerEvents,
    mut app: mpsc::Sender<ServerEvent>,
) {
    // `SessionCreated` of sessions whose metadata is not queued yet: the application learns
    // of a session only after its metadata write, so that its publishes through this node
    // come after it (the machine emits `StoreSession` right after `SessionCreated`).
    let mut created: HashMap<SessionId, ServerEvent> = HashMap::new();
    while let Some(event) = events.next().await {
        let mut announce = None;
        let write = match event {
            ServerEvent::SessionWanted { conn, session } => {
                inner.spawn(provide(inner.clone(), conn, session));
                continue;
            }
            ServerEvent::StoreSession(stored) => {
                announce = created.remove(&stored.session_id);
                Write::Meta {
                    created: announce.is_some(),
                    stored,
                    room: None,
                }
            }
            ServerEvent::StoreAppend(pending) => Write::Append {
                events: vec![pending],
                reply: None,
                room: None,
            },
            ServerEvent::RequestCheck {
                conn,
                session,
                request_id,
                content,
            } => Write::Check {
                conn,
                session,
                request_id,
                content,
                room: None,
            },
            ServerEvent::OutcomeRecorded {
                session,
                request_id,
                outcome,
            } => Write::Outcome {
                session,
                request_id,
                outcome,
                room: None,
            },
            other => {
                match &other {
                    ServerEvent::SessionCreated { session, .. } => {
                        created.insert(session.clone(), other);
                        continue;
                    }
                    ServerEvent::SessionDetached { session } => {
                        if let Some(generation) = inner.subs.generation(session) {
                            inner.unsubscribe_later(session.clone(), generation);
                        }
                    }
                    ServerEvent::PresenceChanged { .. } => inner.presence_due.notify_one(),
                    _ => {}
                }
                // Nobody listening is fine: the node keeps serving.
                let _ = app.send(other).await;
                continue;
            }
        };
        let Ok(room) = inner.room.clone().acquire_owned().await else {
            return;
        };
        inner.count_queue();
        if inner.writes.unbounded_send(write.with_room(room)).is_err() {
            return;
        }
        if let Some(created) = announce {
            let _ = app.send(created).await;
        }
    }
}

/// Answers a handshake that names a session: subscribes to its notifications, reads it
/// (retrying a dropped connection), hands the answer to the machine, then reads what was
/// appended meanwhile.
async fn provide(inner: Arc<Inner>, conn: ConnId, session: SessionId) {
    if !Keys::storable(&session) {
        let _ = inner
            .server
            .apply(move |m, now| m.provide_session(now, conn, Ok(None)))
            .await;
        return;
    }
    let subscribed = inner
        .subs
        .subscribe(&inner.link, &inner.keys, &session, true)
        .await;
    if let Err(e) = subscribed {
        inner.failed(&e);
    }
    let mut attempt = 0;
    let read = loop {
        attempt += 1;
        match wire::read_session(&mut inner.link.clone(), &inner.keys, &session).await {
            Ok(read) => {
                inner.answered();
                break Ok(read);
            }
            Err(e) if inner.failed(&e) && attempt < READ_ATTEMPTS => {
                inner.sleep(inner.retry_every).await;
            }
            Err(e) => break Err(StoreUnavailable(e.to_string())),
        }
    };
    let head = read.as_ref().ok().and_then(|s| s.as_ref().map(|s| s.head));
    let sid = session.clone();
    let held = inner
        .server
        .apply(move |m, now| {
            m.provide_session(now, conn, read);
            m.holds(&sid)
        })
        .await
        .unwrap_or(false);
    let generation = inner.subs.unpin(&session, held);
    match (held, head) {
        (true, Some(head)) => {
            // Events appended after the read whose notification came before the attach.
            if let Err(e) = inner.catch_up(&session, head).await {
                inner.failed(&e);
            }
        }
        (false, _) => {
            if let Some(generation) = generation {
                inner.unsubscribe_later(session, generation);
            }
        }
        _ => {}
    }
}
