//! Whether Redis answers: one log line per outage, `/ready` and `tether_store_up`, the probe
//! while it is down, and the resynchronisation once it is back or after the connection was
//! replaced.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::{self, Either};
use redis::RedisError;
use tokio::sync::Notify;

use crate::link::transient;
use crate::node::Inner;

/// Whether the store answers, and who must know.
pub(crate) struct Health {
    pub(crate) up: AtomicBool,
    /// Wakes the health loop (the store went down, or the connection was replaced).
    pub(crate) wake: Notify,
    /// Wakes publishers waiting for room: with the store down, a full queue is an error.
    pub(crate) down: Notify,
    /// The node is stopping: failures are expected, nothing is logged.
    pub(crate) stopping: AtomicBool,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            up: AtomicBool::new(true),
            wake: Notify::new(),
            down: Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Notes a failed command; returns whether it may succeed later (then the store is
    /// considered down until a command succeeds, with one log line per outage).
    pub(crate) fn failed(&self, e: &RedisError) -> bool {
        let transient = transient(e);
        if transient && self.health.up.swap(false, Ordering::AcqRel) {
            self.server.set_failing("store", true);
            self.metrics.up.set(0);
            if !self.health.stopping.load(Ordering::Acquire) {
                tracing::warn!(
                    "session store unreachable ({e}); retrying every {:?}",
                    self.retry_every
                );
            }
            self.health.down.notify_waiters();
            self.health.wake.notify_one();
        }
        transient
    }

    /// The node is stopping: store failures from now on are expected and not logged.
    pub(crate) fn stopping(&self) {
        self.health.stopping.store(true, Ordering::Release);
    }

    /// Notes a command the store answered.
    pub(crate) fn answered(&self) {
        if !self.health.up.swap(true, Ordering::AcqRel) {
            self.server.set_failing("store", false);
            self.metrics.up.set(1);
            tracing::info!("session store reachable again");
            self.health.wake.notify_one();
        }
    }

    /// After the connection was replaced or the store came back: subscribe again, read what
    /// the held sessions may have missed, and check (through the presence refresh) that they
    /// still exist.
    pub(crate) async fn resync(&self) {
        if let Err(e) = self.subs.resubscribe(&self.link, &self.keys).await {
            self.failed(&e);
            return;
        }
        let Ok(held) = self.server.apply(|m, _| m.held_sessions()).await else {
            return;
        };
        for (session, head) in held {
            if let Err(e) = self.catch_up(&session, head).await {
                self.failed(&e);
                return;
            }
        }
        self.presence_due.notify_one();
    }
}

/// Probes the store while it is down (so `/ready` recovers even when the node is idle), and
/// resynchronises once it is back or after a connection was replaced.
pub(crate) async fn health_loop(inner: Arc<Inner>) {
    let stopped = inner.server.stopped();
    futures::pin_mut!(stopped);
    loop {
        if let Either::Right(_) =
            future::select(pin!(inner.health.wake.notified()), &mut stopped).await
        {
            break;
        }
        while !inner.health.is_up() {
            let pause = inner.sleep(inner.retry_every);
            if let Either::Right(_) = future::select(pause, &mut stopped).await {
                inner.stopping();
                return;
            }
            let ping: Result<String, _> = redis::cmd("PING")
                .query_async(&mut inner.link.clone())
                .await;
            match ping {
                Ok(_) => inner.answered(),
                Err(e) => {
                    inner.failed(&e);
                }
            }
        }
        inner.resync().await;
    }
    inner.stopping();
}
