//! The machine's store requests ([`StoreRequests`]): writes queued for the writer (once there
//! is room in the append queue, so memory stays bounded), and the reads of the sessions
//! handshakes name. Beside them, the relay of the application's events, which the node watches
//! (sessions leaving, presence) and orders after the store writes they depend on.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures::channel::mpsc;
use futures::future::{self, Either};
use futures::{SinkExt, StreamExt};
use tether_core::server::{ConnId, ServerEvent, SessionId, StoreRequest, StoreUnavailable};
use tether_driver::{ServerEvents, StoreRequests};

use crate::keys::Keys;
use crate::node::Inner;
use crate::wire;
use crate::worker::Write;

/// Attempts of a handshake's read before the client is told to retry.
const READ_ATTEMPTS: u32 = 3;

/// Queues the machine's store writes (waiting for room in the append queue, so memory stays
/// bounded) and starts the handshakes' reads; tells the relay (`queued`) when a created
/// session's metadata write is queued.
pub(crate) async fn pump(
    inner: Arc<Inner>,
    mut requests: StoreRequests,
    queued: mpsc::UnboundedSender<SessionId>,
) {
    while let Some(request) = requests.next().await {
        let mut announce = None;
        let write = match request {
            StoreRequest::ReadSession { conn, session } => {
                inner.spawn(provide(inner.clone(), conn, session));
                continue;
            }
            StoreRequest::WriteSession { session, created } => {
                if created {
                    announce = Some(session.session_id.clone());
                }
                Write::Meta {
                    stored: session,
                    created,
                    room: None,
                }
            }
            StoreRequest::Append(pending) => Write::Append {
                events: vec![pending],
                reply: None,
                room: None,
            },
            StoreRequest::CheckRequest {
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
            StoreRequest::WriteOutcome {
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
                tracing::error!("session store: request not understood: {other:?}");
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
        if let Some(session) = announce {
            let _ = queued.unbounded_send(session);
        }
    }
}

/// Passes the application's events on, in order, watching sessions leave (unsubscribe) and
/// presence change (refresh). A `SessionCreated` waits until its metadata write is queued
/// (`queued`), and the events behind it with it: the application learns of a session only
/// then, so that its publishes through this node come after the metadata.
pub(crate) async fn relay(
    inner: Arc<Inner>,
    mut events: ServerEvents,
    mut queued: mpsc::UnboundedReceiver<SessionId>,
    mut app: mpsc::Sender<ServerEvent>,
) {
    let mut waiting: VecDeque<ServerEvent> = VecDeque::new();
    let mut stored: HashSet<SessionId> = HashSet::new();
    // Once the pump has ended (the server stopped) nothing is held back any more.
    let mut pumping = true;
    loop {
        while let Some(event) = waiting.pop_front() {
            if let ServerEvent::SessionCreated { session, .. } = &event {
                if pumping && !stored.remove(session) {
                    waiting.push_front(event);
                    break;
                }
            }
            match &event {
                ServerEvent::SessionDetached { session } => {
                    if let Some(generation) = inner.subs.generation(session) {
                        inner.unsubscribe_later(session.clone(), generation);
                    }
                }
                ServerEvent::PresenceChanged { .. } => inner.presence_due.notify_one(),
                _ => {}
            }
            // Nobody listening is fine: the node keeps serving.
            let _ = app.send(event).await;
        }
        if !waiting.is_empty() {
            // Only its metadata write releases the first one (the hub's bounded channel holds
            // the next events back meanwhile).
            match queued.next().await {
                Some(session) => {
                    stored.insert(session);
                }
                None => pumping = false,
            }
            continue;
        }
        if !pumping {
            match events.next().await {
                Some(event) => waiting.push_back(event),
                None => return,
            }
            continue;
        }
        match future::select(events.next(), queued.next()).await {
            Either::Left((Some(event), _)) => waiting.push_back(event),
            Either::Left((None, _)) => return,
            Either::Right((Some(session), _)) => {
                stored.insert(session);
            }
            Either::Right((None, _)) => pumping = false,
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
            .apply(move |m, now| m.handle_store_session(now, conn, Ok(None)))
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
            Err(e) => break Err(StoreUnavailable::new(e)),
        }
    };
    let head = read.as_ref().ok().and_then(|s| s.as_ref().map(|s| s.head));
    let sid = session.clone();
    let held = inner
        .server
        .apply(move |m, now| {
            m.handle_store_session(now, conn, read);
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
