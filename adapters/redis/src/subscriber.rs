//! The notification reader: ingests, in order, the new events of the sessions this node holds;
//! a gap (a missed notification) is read back from the log.

use std::sync::Arc;

use futures::future::{self, Either};
use futures::StreamExt;
use redis::{PushInfo, PushKind, RedisError};
use tether_core::server::{Ingest, Recorded, SessionId};

use crate::link::Pushes;
use crate::node::Inner;
use crate::wire::{self, Note};
use crate::worker::Write;

/// Most notifications ingested in one hub job.
const NOTIFY_BATCH: usize = 512;

/// Ingests notifications; a connection replaced wakes the health loop, which resubscribes
/// and catches the held sessions up.
pub(crate) async fn subscriber(inner: Arc<Inner>, mut pushes: Pushes) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    loop {
        let first = match future::select(pushes.next(), &mut stopped).await {
            Either::Left((Some(push), _)) => push,
            Either::Left((None, _)) | Either::Right(_) => return,
        };
        let mut notes: Vec<(SessionId, Vec<Recorded>, Option<u64>)> = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(push) = next.take() {
            taken += 1;
            match note_of(&inner, push) {
                Some(Note::Events(session, events)) => {
                    let generation = inner.subs.generation(&session);
                    match notes.iter_mut().find(|(s, _, _)| *s == session) {
                        Some((_, all, _)) => all.extend(events),
                        None => notes.push((session, events, generation)),
                    }
                }
                Some(Note::Gone(session)) => {
                    let _ = inner.writes.unbounded_send(Write::Verify(session));
                }
                None => {}
            }
            if taken < NOTIFY_BATCH {
                next = futures::FutureExt::now_or_never(pushes.next()).flatten();
            }
        }
        if notes.is_empty() {
            continue;
        }
        let outcome = inner
            .server
            .apply(move |m, now| {
                let mut gaps: Vec<(SessionId, u64)> = Vec::new();
                let mut not_held: Vec<(SessionId, Option<u64>)> = Vec::new();
                for (session, events, generation) in notes {
                    for recorded in events {
                        match m.handle_store_event(now, &session, recorded) {
                            Ok(Ingest::Gap { expected }) => {
                                // The catch-up read below covers the rest.
                                gaps.push((session.clone(), expected));
                                break;
                            }
                            Ok(Ingest::NotHeld) => {
                                not_held.push((session.clone(), generation));
                                break;
                            }
                            Ok(_) => {}
                            Err(err) => tracing::error!("session store: {err}"),
                        }
                    }
                }
                (gaps, not_held)
            })
            .await;
        let Ok((gaps, not_held)) = outcome else {
            return; // the server stopped
        };
        for (session, generation) in not_held {
            if let Some(generation) = generation {
                inner.unsubscribe_later(session, generation);
            }
        }
        for (session, expected) in gaps {
            if let Err(e) = inner.catch_up(&session, expected - 1).await {
                inner.failed(&e);
            }
        }
    }
}

/// What a push says: a notification (counted), or the library's notice that a connection
/// dropped (the health loop then resynchronises).
fn note_of(inner: &Inner, push: PushInfo) -> Option<Note> {
    match push.kind {
        PushKind::Disconnection => {
            inner.health.wake.notify_one();
            None
        }
        PushKind::SMessage | PushKind::Message => {
            inner.metrics.notifications.inc();
            let mut data = push.data.into_iter();
            let channel: Vec<u8> = redis::from_owned_redis_value(data.next()?).ok()?;
            inner.keys.session_of_channel(&channel)?;
            let payload: Vec<u8> = redis::from_owned_redis_value(data.next()?).ok()?;
            wire::parse_notification(&payload)
        }
        _ => None,
    }
}

impl Inner {
    /// Reads the log after `after` and ingests it (no-op if this node does not hold the
    /// session's connection).
    pub(crate) async fn catch_up(&self, session: &SessionId, after: u64) -> Result<(), RedisError> {
        let events = wire::read_log(&mut self.link.clone(), &self.keys, session, after + 1).await?;
        self.answered();
        if events.is_empty() {
            return Ok(());
        }
        let sid = session.clone();
        let _ = self
            .server
            .apply(move |m, now| {
                if ingest_all(m, now, &sid, events).is_some() {
                    // The log was trimmed past what this node needs: the client's resume
                    // (anywhere) reports the loss instead of waiting here forever.
                    m.handle_store_gap(now, &sid);
                }
            })
            .await;
        Ok(())
    }

    pub(crate) fn unsubscribe_later(self: &Arc<Self>, session: SessionId, generation: u64) {
        let inner = self.clone();
        self.spawn(async move {
            inner
                .subs
                .unsubscribe(&inner.link, &inner.keys, &session, generation)
                .await;
        });
    }
}

/// Ingests `events` (ascending) into the machine; stops at a gap (the caller's catch-up read
/// covers it).
fn ingest_all(
    m: &mut tether_core::server::Server,
    now: std::time::Instant,
    session: &SessionId,
    events: Vec<Recorded>,
) -> Option<u64> {
    for e in events {
        match m.handle_store_event(now, session, e) {
            Ok(Ingest::Gap { expected }) => return Some(expected),
            Ok(Ingest::NotHeld) => return None,
            Ok(_) => {}
            Err(err) => tracing::error!("session store: {err}"),
        }
    }
    None
}
