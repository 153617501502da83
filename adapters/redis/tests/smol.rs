//! Two gateway nodes on smol sharing one real Redis (tether-redis runs on any runtime of
//! tether-driver): a client on smol fails over between them, twice, and gets every event
//! exactly once, in order.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use smol::{Executor, Timer};
use tether_async_std::SmolRuntime;
use tether_core::server::{ServerConfig, SessionId};
use tether_driver::{BoxFuture, ClientEvents, Runtime};
use tether_redis::{NodeError, RedisConfig, RedisNode};

use support::{echo, failover_client_config, publish, redis, server_config, store_config, Seen};
use tether_async_std::{ConnectOptions, ServerOptions};

const STREAM: u64 = 3_000;
const AWAY: u64 = 300;
const TOTAL: u64 = 3 * STREAM + 2 * AWAY;

/// One node's smol executor, run by a thread of its own. Tasks hold it weakly, so that
/// killing the node drops the executor, and with it every task of the node.
#[derive(Clone)]
struct NodeRuntime(Weak<Executor<'static>>);

impl Runtime for NodeRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(async move {
            Timer::at(deadline).await;
        })
    }
    fn spawn(&self, future: BoxFuture<()>) {
        if let Some(executor) = self.0.upgrade() {
            executor.spawn(future).detach();
        }
    }
}

/// A gateway node on smol, whose kill is as abrupt as a crash: its tasks stop where they are,
/// its sockets close, nothing is flushed, its presence is not cleared.
struct SmolNode {
    node: RedisNode,
    addr: SocketAddr,
    /// Sessions created on this node.
    created: mpsc::UnboundedReceiver<SessionId>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SmolNode {
    /// Starts a node at `addr` (retrying while a killed predecessor's listener still holds the
    /// port); requests are answered with `echo: <content>`.
    async fn start(addr: &str, config: ServerConfig, redis: RedisConfig) -> SmolNode {
        let executor = Arc::new(Executor::new());
        let runtime = NodeRuntime(Arc::downgrade(&executor));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            smol::block_on(executor.run(async {
                let _ = stopped.await;
            }));
        });
        let (created_tx, created) = mpsc::unbounded();
        let (started_tx, started) = oneshot::channel();
        let addr = addr.to_owned();
        let rt = runtime.clone();
        runtime.spawn(Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            let (bound, node) = loop {
                let bind = |config| {
                    tether_async_std::serve(rt.clone(), &addr, config, ServerOptions::default())
                };
                match tether_redis::serve(rt.clone(), config.clone(), redis.clone(), bind).await {
                    Ok(started) => break started,
                    Err(NodeError::Serve(_)) if Instant::now() < deadline => {
                        Timer::after(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("node did not start: {e}"),
                }
            };
            let _ = started_tx.send((node.clone(), bound.local_addr));
            echo(bound.events, node.server().clone(), created_tx).await;
        }));
        let (node, addr) = started.await.expect("the node starts");
        SmolNode {
            node,
            addr,
            created,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Kills the node: its executor stops and is dropped with every task on it.
    fn kill(mut self) -> SocketAddr {
        self.halt();
        self.addr
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the node's thread");
        }
    }
}

impl Drop for SmolNode {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `future`'s output, or a panic naming `what` after `limit`.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    let timeout = async {
        Timer::after(limit).await;
        None
    };
    smol::future::or(async { Some(future.await) }, timeout)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// The application: records what it is given, reports (delivered, resumes) after each event.
async fn consume(mut events: ClientEvents, progress: mpsc::UnboundedSender<(u64, u32)>) -> Seen {
    let mut seen = Seen::default();
    while let Some(e) = events.next().await {
        let delivered = seen.note(e);
        let _ = progress.unbounded_send(seen.progress());
        if delivered {
            if seen.seqs.len() as u64 == TOTAL {
                break;
            }
            // A slowish application (~50 events/ms), so a kill lands mid-stream.
            if seen.seqs.len() % 50 == 0 {
                Timer::after(Duration::from_millis(1)).await;
            }
        }
    }
    seen
}

/// The consumer's latest (delivered, resumes).
struct Progress {
    updates: mpsc::UnboundedReceiver<(u64, u32)>,
    last: (u64, u32),
}

impl Progress {
    async fn wait_for(&mut self, what: &str, done: impl Fn((u64, u32)) -> bool) {
        within(Duration::from_secs(10), what, async {
            while !done(self.last) {
                self.last = self.updates.next().await.expect("the consumer runs");
            }
        })
        .await;
    }

    fn now(&mut self) -> (u64, u32) {
        while let Ok(update) = self.updates.try_recv() {
            self.last = update;
        }
        self.last
    }
}

#[test]
fn two_nodes_on_smol_fail_a_client_over_twice_delivering_every_event_exactly_once_in_order() {
    smol::block_on(async {
        let redis = redis();
        let store = store_config(&redis, "smol");
        let config = server_config();
        let first = SmolNode::start("127.0.0.1:0", config.clone(), store.clone()).await;
        let second = SmolNode::start("127.0.0.1:0", config.clone(), store.clone()).await;
        let mut nodes = [Some(first), Some(second)];
        let urls: Vec<String> = nodes.iter().flatten().map(SmolNode::url).collect();
        let (_client, events) = tether_async_std::connect(
            SmolRuntime,
            urls,
            failover_client_config(),
            ConnectOptions::default(),
        )
        .expect("the client starts");
        let session = within(Duration::from_secs(10), "a session on node A", async {
            let created = &mut nodes[0].as_mut().expect("running").created;
            created.next().await.expect("node A runs")
        })
        .await;
        let (updates_tx, updates) = mpsc::unbounded();
        let consumer = smol::spawn(consume(events, updates_tx));
        let mut progress = Progress {
            updates,
            last: (0, 0),
        };

        // Three phases of streaming through the node the client is on, a kill after each of
        // the first two, each followed by events published through the other node while the
        // client is away; the killed node comes back on its address.
        let mut next = 1;
        let mut on = 0;
        let mut kills = Vec::new();
        for phase in 0..3 {
            publish(
                &nodes[on].as_ref().expect("running").node,
                &session,
                next,
                STREAM,
            )
            .await;
            next += STREAM;
            if phase == 2 {
                break;
            }
            let halfway = next - STREAM / 2;
            progress
                .wait_for("the client to stream", |(delivered, _)| {
                    delivered >= halfway
                })
                .await;
            let addr = nodes[on].take().expect("running").kill();
            let delivered = progress.now().0;
            let other = 1 - on;
            publish(
                &nodes[other].as_ref().expect("running").node,
                &session,
                next,
                AWAY,
            )
            .await;
            kills.push((next, next + AWAY - 1, delivered, next - 1));
            next += AWAY;
            let addr = addr.to_string();
            nodes[on] = Some(SmolNode::start(&addr, config.clone(), store.clone()).await);
            progress
                .wait_for("the client to resume on the other node", |(_, resumed)| {
                    resumed == phase + 1
                })
                .await;
            on = other;
        }

        let seen = within(Duration::from_secs(60), "every event", consumer).await;
        assert!(seen.bad.is_empty(), "loss reported: {:?}", seen.bad);
        assert!(
            seen.seqs.iter().copied().eq(1..=TOTAL),
            "not exactly once in order: {} events, first disorder at {:?}",
            seen.seqs.len(),
            seen.seqs.windows(2).find(|w| w[1] != w[0] + 1)
        );
        assert_eq!(seen.resumed, 2, "two resumes of the same session");
        for (from, to, delivered, published) in kills {
            assert!(
                delivered < published,
                "killed mid-stream: the client had {delivered} of {published} events"
            );
            assert!(
                (from..=to).all(|s| seen.replayed.binary_search(&s).is_ok()),
                "events {from}..={to}, published through the other node while the client was \
                 away, came as replays of its resume"
            );
        }
    });
}
