//! Redis faults under a streaming client, each on a private Redis (never the shared one):
//! killed and restarted with its data, connections killed, data flushed or lost, a full queue
//! while Redis is down, `/ready`, and the eviction check.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tether_core::client::{Event, State};
use tether_core::server::SessionId;
use tether_redis::testing::{Persistence, RedisServer};
use tether_redis::{EvictionCheck, NodeError, RedisConfig, StoreError};
use tokio::sync::watch;

use support::{event, eventually, kill_connections, quick_client_config, server_config, Node};
use tether_tokio::{ConnectOptions, TokioRuntime};

const BATCH: usize = 100;

fn store(redis: &RedisServer) -> RedisConfig {
    RedisConfig::new(redis.url.clone())
}

/// Warnings and errors logged by every node of this test binary.
fn logged() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let writer = || LineWriter;
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(writer)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        Mutex::new(Vec::new())
    })
}

struct LineWriter;

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf).into_owned();
        logged().lock().unwrap().push(line);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lines_mentioning(text: &str) -> Vec<String> {
    logged()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(text))
        .cloned()
        .collect()
}

/// What the client's application saw.
#[derive(Default, Debug)]
struct Seen {
    seqs: Vec<u64>,
    /// Loss reports (`Lost`, `ServerReset`), which must not happen here.
    losses: Vec<String>,
    replaced: Option<(Instant, String)>,
    disconnects: Vec<String>,
}

/// Consumes the client's events into a shared `Seen`; `progress` carries the count delivered.
fn consume(mut events: tether_tokio::ClientEvents) -> (Arc<Mutex<Seen>>, watch::Receiver<usize>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (tx, rx) = watch::channel(0);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let mut s = s.lock().unwrap();
            match e {
                Event::Delivered(d) => {
                    s.seqs.push(d.seq);
                    let _ = tx.send(s.seqs.len());
                }
                Event::Lost { .. } | Event::ServerReset { .. } => s.losses.push(format!("{e:?}")),
                Event::SessionReplaced { current, .. } => {
                    s.replaced = Some((Instant::now(), current));
                    let _ = tx.send(s.seqs.len());
                }
                Event::StateChanged(State::Disconnected { cause }) => {
                    s.disconnects.push(format!("{cause:?}"));
                }
                _ => {}
            }
        }
    });
    (seen, rx)
}

/// Publishes events `1..=count` in batches, waiting through outages; `published` carries how
/// many were acknowledged.
fn publisher(
    node: &Node,
    session: &SessionId,
    count: u64,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<u64>) {
    let (node, session) = (node.node.clone(), session.clone());
    let (tx, published) = watch::channel(0);
    let task = tokio::spawn(async move {
        let mut i = 1;
        while i <= count {
            let n = (BATCH as u64).min(count + 1 - i);
            let range = node
                .publish_many(&session, "message", (i..i + n).map(event).collect())
                .await
                .expect("published");
            assert_eq!(range, i..=i + n - 1, "one sequence per event, in order");
            i += n;
            let _ = tx.send(i - 1);
        }
    });
    (task, published)
}

fn assert_exactly_once_in_order(seen: &Seen, total: u64) {
    assert!(seen.losses.is_empty(), "loss reported: {:?}", seen.losses);
    assert!(
        seen.replaced.is_none(),
        "session replaced: {:?}",
        seen.replaced
    );
    assert_eq!(seen.seqs.len() as u64, total, "every event delivered");
    assert!(
        seen.seqs.iter().copied().eq(1..=total),
        "not exactly once in order: first disorder at {:?}",
        seen.seqs.windows(2).find(|w| w[1] != w[0] + 1)
    );
}

/// A node on `store` with one connected client, and what that client's application sees.
struct Streaming {
    node: Node,
    client: tether_tokio::Client,
    session: SessionId,
    seen: Arc<Mutex<Seen>>,
    progress: watch::Receiver<usize>,
}

async fn one_client(store: RedisConfig) -> Streaming {
    let mut node = Node::start("127.0.0.1:0", server_config(), store).await;
    let (client, events) = tether_tokio::connect(
        TokioRuntime,
        node.url(),
        quick_client_config(),
        ConnectOptions::default(),
    )
    .expect("client");
    let session = node.created.next().await.expect("session");
    let (seen, progress) = consume(events);
    Streaming {
        node,
        client,
        session,
        seen,
        progress,
    }
}

async fn wait_delivered(progress: &mut watch::Receiver<usize>, at_least: usize, limit: Duration) {
    tokio::time::timeout(limit, progress.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("{at_least} events not delivered within {limit:?}"))
        .expect("consumer running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_and_restarted_with_its_data_loses_nothing_and_tells_nothing() {
    logged();
    let mut redis = RedisServer::own(Persistence::Aof, &[]);
    let Streaming {
        node,
        client: _client,
        session,
        seen,
        mut progress,
    } = one_client(store(&redis)).await;
    const TOTAL: u64 = 20_000;
    let (publishing, mut published) = publisher(&node, &session, TOTAL);
    tokio::time::timeout(Duration::from_secs(20), published.wait_for(|n| *n >= 1_000))
        .await
        .expect("publishing")
        .expect("publisher");
    redis.kill();
    let published_at_kill = *published.borrow();
    // Down for a while: the publisher waits, the client is told nothing.
    eventually(
        Duration::from_secs(5),
        "the node to notice the outage",
        || {
            let down = !node.node.store_up();
            async move { down.then_some(()) }
        },
    )
    .await;
    redis.restart();
    let back = Instant::now();
    // The first event surely published after Redis came back (the batch in flight at the
    // kill may have been taken before it).
    let after_restart = usize::try_from(published_at_kill).expect("count") + BATCH + 1;
    wait_delivered(&mut progress, after_restart, Duration::from_secs(2)).await;
    let resumed_after = back.elapsed();
    tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("publisher done")
        .expect("publisher ok");
    wait_delivered(&mut progress, TOTAL as usize, Duration::from_secs(30)).await;
    let seen = seen.lock().unwrap();
    assert_exactly_once_in_order(&seen, TOTAL);
    assert!(
        seen.disconnects.is_empty(),
        "the client was told nothing: {:?}",
        seen.disconnects
    );
    assert!(published_at_kill < TOTAL, "killed mid-stream");
    eprintln!("delivery resumed {resumed_after:?} after Redis was back");
    node.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_five_times_mid_stream_lose_nothing() {
    logged();
    let redis = RedisServer::own(Persistence::None, &[]);
    let Streaming {
        node,
        client: _client,
        session,
        seen,
        mut progress,
    } = one_client(store(&redis)).await;
    const TOTAL: u64 = 10_000;
    let (publishing, _published) = publisher(&node, &session, TOTAL);
    let mut killed_total = 0u64;
    for k in 1..=5 {
        wait_delivered(&mut progress, k * 1_500, Duration::from_secs(20)).await;
        killed_total += kill_connections(&redis).await;
    }
    assert!(
        killed_total >= 5,
        "the node's connection was killed each time"
    );
    tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("publisher done")
        .expect("publisher ok");
    wait_delivered(&mut progress, TOTAL as usize, Duration::from_secs(30)).await;
    assert_exactly_once_in_order(&seen.lock().unwrap(), TOTAL);
}

/// The node's warnings about `session`: one, however many events were in flight.
fn assert_one_line_about(session: &SessionId) {
    let lines = lines_mentioning(session.as_str());
    assert_eq!(
        lines.len(),
        1,
        "one log line about the lost session: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_mid_stream_replaces_the_session_at_once_with_one_log_line() {
    logged();
    let redis = RedisServer::own(Persistence::None, &[]);
    let Streaming {
        node,
        client: _client,
        session,
        seen,
        mut progress,
    } = one_client(store(&redis)).await;
    // A publisher that goes on after the flush (its events now fail as unknown).
    let (n, s) = (node.node.clone(), session.clone());
    let streaming = tokio::spawn(async move {
        let mut i = 0;
        loop {
            i += 1;
            match n
                .publish_many(&s, "message", (0..10).map(event).collect())
                .await
            {
                Ok(_) => {}
                Err(StoreError::UnknownSession(_)) => return i,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    });
    wait_delivered(&mut progress, 2_000, Duration::from_secs(20)).await;
    let mut admin = redis::Client::open(redis.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .expect("flushall");
    let flushed = Instant::now();
    eventually(Duration::from_secs(2), "SessionReplaced", || {
        let replaced = seen.lock().unwrap().replaced.clone();
        async move { replaced }
    })
    .await;
    let (at, current) = seen.lock().unwrap().replaced.clone().expect("replaced");
    assert!(at.duration_since(flushed) <= Duration::from_secs(2));
    assert_ne!(current, session.as_str());
    tokio::time::timeout(Duration::from_secs(5), streaming)
        .await
        .expect("the publisher learns the session is gone")
        .expect("publisher");
    assert!(seen.lock().unwrap().losses.is_empty());
    assert_one_line_about(&session);
    assert_eq!(node.node.server().metrics().store().sessions_lost.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_restart_replaces_the_session_within_two_seconds_of_redis_being_back() {
    logged();
    let mut redis = RedisServer::own(Persistence::None, &[]);
    let Streaming {
        node,
        client: _client,
        session,
        seen,
        mut progress,
    } = one_client(store(&redis)).await;
    node.node
        .publish_many(&session, "message", (1..=50).map(event).collect())
        .await
        .expect("published");
    wait_delivered(&mut progress, 50, Duration::from_secs(10)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let back = Instant::now();
    // Nobody publishes: the node finds out by itself.
    eventually(Duration::from_secs(2), "SessionReplaced", || {
        let replaced = seen.lock().unwrap().replaced.clone();
        async move { replaced }
    })
    .await;
    let (at, _) = seen.lock().unwrap().replaced.clone().expect("replaced");
    assert!(at.duration_since(back) <= Duration::from_secs(2));
    assert_one_line_about(&session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_gets_a_typed_error_while_redis_is_down_and_the_queue_is_full() {
    logged();
    let mut redis = RedisServer::own(Persistence::Aof, &[]);
    let config = RedisConfig {
        append_queue: 100,
        ..store(&redis)
    };
    let Streaming {
        node,
        client: _client,
        session,
        seen,
        mut progress,
    } = one_client(config).await;
    // The session's metadata is written (its write no longer takes room).
    node.node
        .publish(&session, "message", event(1))
        .await
        .expect("published");
    redis.kill();
    // Two batches fill the queue; they wait for Redis.
    let waiting: Vec<_> = [2u64, 52]
        .into_iter()
        .map(|from| {
            let (n, s) = (node.node.clone(), session.clone());
            tokio::spawn(async move {
                n.publish_many(&s, "message", (from..from + 50).map(event).collect())
                    .await
            })
        })
        .collect();
    let store = node.node.server().metrics().store().clone();
    eventually(Duration::from_secs(5), "a full queue, Redis down", || {
        let full = store.append_queue.get() == 100 && !node.node.store_up();
        async move { full.then_some(()) }
    })
    .await;
    let refused = tokio::time::timeout(
        Duration::from_secs(1),
        node.node.publish(&session, "message", event(0)),
    )
    .await
    .expect("refused at once");
    assert!(
        matches!(refused, Err(StoreError::Backlogged { queued: 100 })),
        "{refused:?}"
    );
    redis.restart();
    let mut ranges = Vec::new();
    for w in waiting {
        ranges.push(
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("published once Redis is back")
                .expect("task")
                .expect("published"),
        );
    }
    ranges.sort_by_key(|r| *r.start());
    assert_eq!(ranges, vec![2..=51, 52..=101]);
    wait_delivered(&mut progress, 101, Duration::from_secs(5)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.seqs, (1..=101).collect::<Vec<_>>());
}

/// `GET path` on the node's port: (status, body).
async fn http_get(node: &Node, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_503_while_the_store_is_unreachable() {
    logged();
    let mut redis = RedisServer::own(Persistence::None, &[]);
    let node = Node::start("127.0.0.1:0", server_config(), store(&redis)).await;
    assert_eq!(http_get(&node, "/ready").await.0, 200);
    redis.kill();
    // An idle node notices by itself (its connection drops).
    let body = eventually(Duration::from_secs(15), "503 from /ready", || {
        let node = &node;
        async move {
            let (status, body) = http_get(node, "/ready").await;
            (status == 503).then_some(body)
        }
    })
    .await;
    assert!(body.contains(r#""failing":["store"]"#), "{body}");
    let metrics = node.node.server().metrics_text().await.expect("metrics");
    assert!(metrics.contains("tether_store_up 0"), "{metrics}");
    redis.restart();
    eventually(Duration::from_secs(2), "200 from /ready", || {
        let node = &node;
        async move { (http_get(node, "/ready").await.0 == 200).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_on_request_and_warned_about_otherwise() {
    logged();
    let redis = RedisServer::own(
        Persistence::None,
        &["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"],
    );
    let refusing = RedisConfig {
        eviction: EvictionCheck::Refuse,
        ..store(&redis)
    };
    match support::serve_tokio("127.0.0.1:0", server_config(), refusing).await {
        Err(NodeError::Store(StoreError::Evicting { policy })) => assert_eq!(policy, "allkeys-lru"),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("started on an evicting Redis"),
    }
    let warned_before = lines_mentioning("allkeys-lru").len();
    let (_bound, _node) = support::serve_tokio("127.0.0.1:0", server_config(), store(&redis))
        .await
        .expect("starts with a warning");
    assert_eq!(lines_mentioning("allkeys-lru").len(), warned_before + 1);
    // A Redis that refuses CONFIG (managed services often do): a warning, not a refusal.
    let managed = RedisServer::own(Persistence::None, &["--rename-command", "CONFIG", ""]);
    let refusing = RedisConfig {
        eviction: EvictionCheck::Refuse,
        ..store(&managed)
    };
    let warned_before = lines_mentioning("cannot read Redis's maxmemory-policy").len();
    let (_bound, _node) = support::serve_tokio("127.0.0.1:0", server_config(), refusing)
        .await
        .expect("starts when the policy cannot be read");
    assert_eq!(
        lines_mentioning("cannot read Redis's maxmemory-policy").len(),
        warned_before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_resumes_a_session_right_after_its_connection_was_killed() {
    logged();
    let redis = RedisServer::own(Persistence::None, &[]);
    let Streaming {
        node,
        client,
        session,
        seen: _seen,
        mut progress,
    } = one_client(store(&redis)).await;
    node.node
        .publish(&session, "message", event(1))
        .await
        .expect("published");
    wait_delivered(&mut progress, 1, Duration::from_secs(10)).await;
    let state = client.resume_state().await.expect("state");
    client.disconnect().await;
    kill_connections(&redis).await;
    // The node's first store call after the fault is this resume's read.
    let (_client, mut events) = tether_tokio::connect(
        TokioRuntime,
        node.url(),
        quick_client_config(),
        ConnectOptions::default().resume(state),
    )
    .expect("client");
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.next().await {
                Some(Event::StateChanged(State::Connected { resumed, .. })) => return Ok(resumed),
                Some(Event::StateChanged(State::Disconnected { cause })) => {
                    return Err(format!("{cause:?}"))
                }
                Some(_) => {}
                None => return Err("client ended".into()),
            }
        }
    })
    .await
    .expect("connected in time");
    assert_eq!(first, Ok(true), "resumed at the first attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_reply_was_lost_is_numbered_once() {
    logged();
    let redis = RedisServer::own(Persistence::None, &[]);
    let config = RedisConfig {
        response_timeout: Duration::from_millis(100),
        ..store(&redis)
    };
    let Streaming {
        node,
        client: _client,
        session,
        seen,
        mut progress,
    } = one_client(config).await;
    node.node
        .publish(&session, "message", event(1))
        .await
        .expect("published");
    // Redis holds writes past the response timeout: the append is taken but its reply comes
    // too late, so the node sends it again.
    let mut admin = redis::Client::open(redis.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(500)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("client pause");
    let range = node
        .node
        .publish_many(&session, "message", (2..=11).map(event).collect())
        .await
        .expect("published once Redis answers");
    assert_eq!(range, 2..=11);
    assert!(
        node.node.server().metrics().store().retries.get() > 0,
        "the append was sent again"
    );
    wait_delivered(&mut progress, 11, Duration::from_secs(5)).await;
    let after = node
        .node
        .publish(&session, "message", event(12))
        .await
        .expect("published");
    assert_eq!(after, 12, "no number was given twice");
    wait_delivered(&mut progress, 12, Duration::from_secs(5)).await;
    assert_exactly_once_in_order(&seen.lock().unwrap(), 12);
}
