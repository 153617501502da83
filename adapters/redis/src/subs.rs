//! Which sessions' notification channels this node is subscribed to.
//!
//! A node subscribes to a session's shard channel (`SSUBSCRIBE`) before it reads the session
//! for a handshake, or before it writes a new session's metadata: no append after that read
//! or write goes unnoticed. It unsubscribes when the session's connection leaves, or when a
//! notification comes for a session it no longer holds. Every subscribe takes a new
//! generation; an unsubscribe names the generation it saw, and is skipped if the session was
//! subscribed again since (a resume here racing the old connection's departure).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redis::RedisError;
use tether_core::server::SessionId;

use crate::keys::Keys;
use crate::link::Link;

/// The node's subscriptions.
#[derive(Default)]
pub(crate) struct Subscriptions {
    /// Subscribed (or being subscribed) sessions and their generations.
    generations: Mutex<HashMap<SessionId, u64>>,
    next: AtomicU64,
    /// Keeps the commands in the order of the decisions.
    order: tokio::sync::Mutex<()>,
}

impl Subscriptions {
    fn generations(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, u64>> {
        self.generations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation of `session`'s subscription, if subscribed.
    pub(crate) fn generation(&self, session: &SessionId) -> Option<u64> {
        self.generations().get(session).copied()
    }

    /// How many sessions this node is subscribed to.
    pub(crate) fn len(&self) -> usize {
        self.generations().len()
    }

    /// Subscribes to `session`'s channel; returns the subscription's generation. On failure
    /// the session stays listed, so the resubscription after the store comes back covers it.
    pub(crate) async fn subscribe(
        &self,
        link: &Link,
        keys: &Keys,
        session: &SessionId,
    ) -> Result<u64, RedisError> {
        let _order = self.order.lock().await;
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        self.generations().insert(session.clone(), generation);
        redis::cmd("SSUBSCRIBE")
            .arg(keys.channel(session))
            .exec_async(&mut link.clone())
            .await?;
        Ok(generation)
    }

    /// Unsubscribes from `session`'s channel unless it was subscribed again after
    /// `generation`. A failed command is left alone: the subscription died with its
    /// connection, or the next notification for it ends it.
    pub(crate) async fn unsubscribe(
        &self,
        link: &Link,
        keys: &Keys,
        session: &SessionId,
        generation: u64,
    ) {
        let _order = self.order.lock().await;
        {
            let mut all = self.generations();
            if all.get(session) != Some(&generation) {
                return;
            }
            all.remove(session);
        }
        let _ = redis::cmd("SUNSUBSCRIBE")
            .arg(keys.channel(session))
            .exec_async(&mut link.clone())
            .await;
    }

    /// Subscribes again to every listed channel (after the connection was replaced).
    pub(crate) async fn resubscribe(&self, link: &Link, keys: &Keys) -> Result<(), RedisError> {
        let _order = self.order.lock().await;
        let all: Vec<SessionId> = self.generations().keys().cloned().collect();
        let sent = futures::future::join_all(all.iter().map(|session| {
            let mut link = link.clone();
            let channel = keys.channel(session);
            async move {
                redis::cmd("SSUBSCRIBE")
                    .arg(channel)
                    .exec_async(&mut link)
                    .await
            }
        }))
        .await;
        sent.into_iter().collect()
    }
}
