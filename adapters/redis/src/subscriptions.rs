//! Which sessions' notification channels this node is subscribed to.
//!
//! A node subscribes to a session's shard channel (`SSUBSCRIBE`) before it reads the session
//! for a handshake, or before it writes a new session's metadata: no append after that read
//! or write goes unnoticed. It unsubscribes when the session's connection leaves, or when a
//! notification comes for a session it no longer holds. Every subscribe takes a new
//! generation; an unsubscribe names the generation it saw, and is skipped if the session was
//! subscribed again since (a resume here racing the old connection's departure). A handshake's
//! read pins the session until the machine has decided whether it attached here (a
//! notification meanwhile finds it not held yet): an unsubscribe is skipped while pinned, and
//! an attach takes a new generation, so no decision made before it can undo it.

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
    state: Mutex<State>,
    next: AtomicU64,
    /// Keeps the commands in the order of the decisions.
    order: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Subscribed (or being subscribed) sessions and their generations.
    generations: HashMap<SessionId, u64>,
    /// Sessions with handshake reads in flight, and how many.
    pinned: HashMap<SessionId, u32>,
}

impl Subscriptions {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_generation(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The generation of `session`'s subscription, if subscribed.
    pub(crate) fn generation(&self, session: &SessionId) -> Option<u64> {
        self.state().generations.get(session).copied()
    }

    /// How many sessions this node is subscribed to.
    pub(crate) fn len(&self) -> usize {
        self.state().generations.len()
    }

    /// Subscribes to `session`'s channel (`pin`: for a handshake's read, until
    /// [`Subscriptions::unpin`]). On failure the session stays listed, so the resubscription
    /// after the store comes back covers it.
    pub(crate) async fn subscribe(
        &self,
        link: &Link,
        keys: &Keys,
        session: &SessionId,
        pin: bool,
    ) -> Result<(), RedisError> {
        let _order = self.order.lock().await;
        {
            let generation = self.next_generation();
            let mut state = self.state();
            state.generations.insert(session.clone(), generation);
            if pin {
                *state.pinned.entry(session.clone()).or_default() += 1;
            }
        }
        redis::cmd("SSUBSCRIBE")
            .arg(keys.channel(session))
            .exec_async(&mut link.clone())
            .await
    }

    /// Ends a handshake's pin: `attached` here, the subscription takes a new generation;
    /// else the current one is returned, to unsubscribe with.
    pub(crate) fn unpin(&self, session: &SessionId, attached: bool) -> Option<u64> {
        let generation = self.next_generation();
        let mut state = self.state();
        if let Some(n) = state.pinned.get_mut(session) {
            *n -= 1;
            if *n == 0 {
                state.pinned.remove(session);
            }
        }
        let current = state.generations.get_mut(session)?;
        if attached {
            *current = generation;
        }
        Some(*current)
    }

    /// Unsubscribes from `session`'s channel unless it was subscribed again (or attached)
    /// after `generation`, or a handshake's read has it pinned. A failed command is left alone: the subscription died with its
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
            let mut state = self.state();
            if state.pinned.contains_key(session)
                || state.generations.get(session) != Some(&generation)
            {
                return;
            }
            state.generations.remove(session);
        }
        let _ = redis::cmd("SUNSUBSCRIBE")
            .arg(keys.channel(session))
            .exec_async(&mut link.clone())
            .await;
    }

    /// Subscribes again to every listed channel (after the connection was replaced).
    pub(crate) async fn resubscribe(&self, link: &Link, keys: &Keys) -> Result<(), RedisError> {
        let _order = self.order.lock().await;
        let all: Vec<SessionId> = self.state().generations.keys().cloned().collect();
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
