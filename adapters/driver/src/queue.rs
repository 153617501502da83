//! A batching single-consumer queue between two tasks: the producer pushes any number of items
//! under one lock and wakes the consumer once; the consumer takes everything queued in one
//! swap and then pops from its private buffer without touching shared state. Compared with a
//! channel that costs an allocation, a few atomic operations and possibly a wake-up per item,
//! a stream of events costs one lock and at most one wake-up per batch.
//!
//! It carries the hub's frames to a connection task and the client loop's events to the
//! application. A [`Ledger`] is the many-producer counterpart: connection tasks report written
//! frames to the hub through one, at a lock per report and at most one wake-up per batch. The producer may wait for the queue to drain below a capacity
//! ([`Sender::poll_room`]); pushing itself never waits, so the bound is the producer's to
//! keep. A dropped receiver makes pushes no-ops; a dropped sender ends the stream once the
//! queue is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    items: VecDeque<T>,
    /// The consumer, waiting for items.
    consumer: Option<Waker>,
    /// The producer, waiting for room.
    producer: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the queue inconsistent (every critical
        // section is a few field updates), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The producing half (one owner).
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The consuming half.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Items taken from the shared queue, not yet handed out.
    local: VecDeque<T>,
}

/// A queue whose producer waits (with [`Sender::poll_room`]) while `capacity` items or more are
/// queued. `usize::MAX` = never.
pub(crate) fn queue<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            consumer: None,
            producer: None,
            sender_gone: false,
            receiver_gone: false,
        }),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            local: VecDeque::new(),
        },
    )
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

impl<T> Sender<T> {
    /// Queues every item of `items` and wakes the consumer once. Returns false (dropping the
    /// items) if the receiver is gone.
    pub(crate) fn push_all(&self, items: impl IntoIterator<Item = T>) -> bool {
        let waker = {
            let mut s = self.shared.lock();
            if s.receiver_gone {
                return false;
            }
            let before = s.items.len();
            s.items.extend(items);
            if s.items.len() == before {
                return true;
            }
            s.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Ready once fewer than `capacity` items are queued (or the receiver is gone).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.shared.lock();
        if s.receiver_gone || s.items.len() < self.shared.capacity {
            return Poll::Ready(());
        }
        register(&mut s.producer, cx.waker());
        Poll::Pending
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.shared.lock();
            s.sender_gone = true;
            s.consumer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Moves everything queued into the private buffer (registering for a wake-up with `cx`
    /// if nothing is) and wakes a producer waiting for room. `None` once the sender is gone
    /// and the queue is empty; `Some(false)` if nothing was queued.
    fn refill(&mut self, cx: Option<&mut Context<'_>>) -> Option<bool> {
        let waker = {
            let mut s = self.shared.lock();
            if s.items.is_empty() {
                if s.sender_gone {
                    return None;
                }
                if let Some(cx) = cx {
                    register(&mut s.consumer, cx.waker());
                }
                return Some(false);
            }
            std::mem::swap(&mut s.items, &mut self.local);
            s.producer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Some(true)
    }

    /// The next item: `Ready(None)` once the sender is gone and everything was taken.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.local.pop_front() {
            return Poll::Ready(Some(item));
        }
        match self.refill(Some(cx)) {
            None => Poll::Ready(None),
            Some(false) => Poll::Pending,
            Some(true) => Poll::Ready(self.local.pop_front()),
        }
    }

    /// The next item if one is queued, without registering for a wake-up. `Err(())` once the
    /// sender is gone and everything was taken.
    pub(crate) fn try_next(&mut self) -> Result<Option<T>, ()> {
        if let Some(item) = self.local.pop_front() {
            return Ok(Some(item));
        }
        match self.refill(None) {
            None => Err(()),
            Some(false) => Ok(None),
            Some(true) => Ok(self.local.pop_front()),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (waker, items) = {
            let mut s = self.shared.lock();
            s.receiver_gone = true;
            (s.producer.take(), std::mem::take(&mut s.items))
        };
        // Items are dropped outside the lock.
        drop(items);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Reports from many producers to one consumer: a report costs a lock and a push; the
/// consumer takes every report in one swap and is woken only by the first report of a batch
/// (it registers for a wake-up only when it found none).
pub(crate) struct Ledger<T> {
    state: Mutex<LedgerState<T>>,
}

struct LedgerState<T> {
    items: Vec<T>,
    consumer: Option<Waker>,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(LedgerState {
                items: Vec::new(),
                consumer: None,
            }),
        }
    }
}

impl<T> Ledger<T> {
    fn lock(&self) -> MutexGuard<'_, LedgerState<T>> {
        // As `Shared::lock`: every critical section is a few field updates.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a report; wakes the consumer if it is the first since the consumer last took.
    pub(crate) fn push(&self, item: T) {
        let waker = {
            let mut s = self.lock();
            s.items.push(item);
            if s.items.len() == 1 {
                s.consumer.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Moves every report into `out` (which must be empty); `Pending` (registered for a
    /// wake-up with `cx`) if there were none.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>, out: &mut Vec<T>) -> Poll<()> {
        let mut s = self.lock();
        if s.items.is_empty() {
            register(&mut s.consumer, cx.waker());
            return Poll::Pending;
        }
        std::mem::swap(&mut s.items, out);
        Poll::Ready(())
    }

    /// Moves every report into `out` (which must be empty), without registering.
    pub(crate) fn take(&self, out: &mut Vec<T>) {
        std::mem::swap(&mut self.lock().items, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    #[test]
    fn items_arrive_in_order_in_batches_and_the_stream_ends_after_the_sender() {
        let (tx, mut rx) = queue::<u32>(usize::MAX);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert_eq!(rx.poll_next(&mut cx), Poll::Pending);
        assert!(tx.push_all([1, 2, 3]));
        assert!(tx.push_all([4]));
        let got: Vec<_> = std::iter::from_fn(|| match rx.poll_next(&mut cx) {
            Poll::Ready(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
        assert_eq!(got, vec![1, 2, 3, 4]);
        assert!(tx.push_all([5]));
        drop(tx);
        assert_eq!(rx.try_next(), Ok(Some(5)));
        assert_eq!(rx.try_next(), Err(()));
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_ledger_wakes_its_consumer_once_per_batch_and_hands_over_every_report() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let ledger = Ledger::default();
        let mut out = Vec::new();
        assert_eq!(ledger.poll_take(&mut cx, &mut out), Poll::Pending);
        ledger.push(1);
        ledger.push(2);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "one wake for the batch");
        assert_eq!(ledger.poll_take(&mut cx, &mut out), Poll::Ready(()));
        assert_eq!(out, [1, 2]);
        out.clear();
        ledger.push(3);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "not waiting: no wake");
        ledger.take(&mut out);
        assert_eq!(out, [3]);
    }

    #[test]
    fn the_producer_waits_for_room_and_pushes_to_a_dropped_receiver_are_dropped() {
        let (tx, mut rx) = queue::<u32>(2);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert_eq!(tx.poll_room(&mut cx), Poll::Ready(()));
        tx.push_all([1, 2]);
        assert_eq!(tx.poll_room(&mut cx), Poll::Pending);
        assert_eq!(rx.try_next(), Ok(Some(1)));
        assert_eq!(tx.poll_room(&mut cx), Poll::Ready(()));
        drop(rx);
        assert!(!tx.push_all([3]));
        assert_eq!(tx.poll_room(&mut cx), Poll::Ready(()));
    }
}
