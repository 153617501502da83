//! Two gateway nodes sharing one real Redis: failover with exactly-once delivery, events
//! published through the other node while the client is away, presence across nodes.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tether_core::client::Event;
use tether_driver::RequestOutcome;
use tether_redis::{RedisConfig, StoreError};

use support::{
    event, eventually, failover_client_config, publish, redis, server_config, store_config, Node,
    Seen,
};
use tether_tokio::{ConnectOptions, TokioRuntime};

const TOTAL: u64 = 20_000;
const AWAY: u64 = 500;

fn running(node: &Option<Node>) -> &Node {
    node.as_ref().expect("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failovers_deliver_twenty_thousand_events_exactly_once_in_order() {
    let redis = redis();
    let store = store_config(&redis, "failover");
    let config = server_config();
    let mut first = Node::start("127.0.0.1:0", config.clone(), store.clone()).await;
    let second = Node::start("127.0.0.1:0", config.clone(), store.clone()).await;
    let urls = vec![first.url(), second.url()];
    let (_client, mut events) = tether_tokio::connect(
        TokioRuntime,
        urls,
        failover_client_config(),
        ConnectOptions::default(),
    )
    .expect("client starts");
    let session = tokio::time::timeout(Duration::from_secs(10), first.created.next())
        .await
        .expect("a session is created on node A")
        .expect("node A runs");

    // (events delivered, resumes) as the application sees them.
    let (progress_tx, mut progress) = tokio::sync::watch::channel((0u64, 0u32));
    let consumer = tokio::spawn(async move {
        let mut seen = Seen::default();
        while let Some(e) = events.next().await {
            let delivered = seen.note(e);
            let _ = progress_tx.send(seen.progress());
            if delivered {
                if seen.seqs.len() as u64 == TOTAL {
                    return seen;
                }
                // A slowish application (~50 events/ms), so a kill lands mid-stream.
                if seen.seqs.len() % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        seen
    });

    // Four phases of streaming through the node the client is on, three kills in between,
    // each followed by events published through the surviving node while the client is away.
    let stream_per_phase = (TOTAL - 3 * AWAY) / 4;
    let mut nodes = [Some(first), Some(second)];
    let mut next = 1;
    let mut on = 0;
    let mut away_ranges = Vec::new();
    for phase in 0..4 {
        let count = if phase == 3 {
            TOTAL + 1 - next
        } else {
            stream_per_phase
        };
        publish(&running(&nodes[on]).node, &session, next, count).await;
        next += count;
        if phase == 3 {
            break;
        }
        // Mid-stream: killed once the client is halfway through this phase.
        let halfway = next - count / 2;
        tokio::time::timeout(
            Duration::from_secs(10),
            progress.wait_for(|(delivered, _)| *delivered >= halfway),
        )
        .await
        .expect("the client streams")
        .expect("consumer running");
        let addr = nodes[on].take().expect("running").kill();
        let delivered = progress.borrow().0;
        // While the client backs off: publish through the other node.
        let other = 1 - on;
        publish(&running(&nodes[other]).node, &session, next, AWAY).await;
        away_ranges.push((next, next + AWAY - 1, delivered));
        next += AWAY;
        // The killed node comes back on its address, so the client's URL list stays valid.
        nodes[on] = Some(Node::start(&addr.to_string(), config.clone(), store.clone()).await);
        // The next phase streams through the node the client resumed on.
        tokio::time::timeout(
            Duration::from_secs(10),
            progress.wait_for(|(_, resumed)| *resumed == phase + 1),
        )
        .await
        .expect("the client resumes on the other node")
        .expect("consumer running");
        on = other;
    }

    let seen = tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .expect("every event delivered within 2 minutes")
        .expect("consumer");
    assert!(seen.bad.is_empty(), "loss reported: {:?}", seen.bad);
    assert_eq!(seen.seqs.len() as u64, TOTAL);
    assert!(
        seen.seqs.iter().copied().eq(1..=TOTAL),
        "not exactly once in order: first disorder at {:?}",
        seen.seqs.windows(2).find(|w| w[1] != w[0] + 1)
    );
    assert_eq!(seen.resumed, 3, "three resumes of the same session");
    for (from, to, _) in &away_ranges {
        assert!(
            (*from..=*to).all(|s| seen.replayed.binary_search(&s).is_ok()),
            "events {from}..={to}, published through the other node while the client was \
             away, came as replays of its resume"
        );
    }
    // The kills really were mid-stream: at each, the client had not yet received everything.
    let mut published_before = stream_per_phase;
    for (i, (_, _, delivered)) in away_ranges.iter().enumerate() {
        assert!(
            *delivered < published_before,
            "kill {i}: client had all {published_before} events already"
        );
        published_before += AWAY + stream_per_phase;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_and_expires_within_its_ttl() {
    let redis = redis();
    let store = RedisConfig {
        presence_ttl: Duration::from_secs(1),
        ..store_config(&redis, "presence")
    };
    let config = server_config();
    let mut a = Node::start("127.0.0.1:0", config.clone(), store.clone()).await;
    let b = Node::start("127.0.0.1:0", config.clone(), store.clone()).await;
    let b_node = b.node.clone();
    let sees = move |session: String| {
        let node = b_node.clone();
        async move {
            let all = node.presence(Some("echo")).await.expect("presence");
            all.iter().any(|p| {
                p.metadata.get("session_id").and_then(|v| v.as_str()) == Some(session.as_str())
            })
        }
    };

    // A client that leaves cleanly: node A withdraws it at once.
    let (leaver, _leaver_events) = tether_tokio::connect(
        TokioRuntime,
        a.url(),
        failover_client_config(),
        ConnectOptions::default(),
    )
    .expect("client");
    let leaving = a.created.next().await.expect("session").to_string();
    eventually(Duration::from_secs(5), "B to see A's client", || {
        let s = sees(leaving.clone());
        async move { s.await.then_some(()) }
    })
    .await;
    leaver.disconnect().await;
    let left_at = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the client to leave presence",
        || {
            let s = sees(leaving.clone());
            async move { (!s.await).then_some(()) }
        },
    )
    .await;
    assert!(
        left_at.elapsed() <= store.presence_ttl,
        "gone within the TTL"
    );

    // A client whose node dies: its entry expires within the TTL.
    let (_stayer, _stayer_events) = tether_tokio::connect(
        TokioRuntime,
        a.url(),
        failover_client_config(),
        ConnectOptions::default(),
    )
    .expect("client");
    let staying = a.created.next().await.expect("session").to_string();
    eventually(Duration::from_secs(5), "B to see A's second client", || {
        let s = sees(staying.clone());
        async move { s.await.then_some(()) }
    })
    .await;
    a.kill();
    let killed_at = Instant::now();
    eventually(
        Duration::from_secs(5),
        "the dead node's client to expire",
        || {
            let s = sees(staying.clone());
            async move { (!s.await).then_some(()) }
        },
    )
    .await;
    assert!(
        killed_at.elapsed() <= store.presence_ttl + Duration::from_millis(200),
        "gone within the TTL (+ one poll): {:?}",
        killed_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_and_unknown_sessions_refused() {
    let redis = redis();
    let store = store_config(&redis, "requests");
    let a = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let b = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let (client, _events) = tether_tokio::connect(
        TokioRuntime,
        a.url(),
        failover_client_config(),
        ConnectOptions::default(),
    )
    .expect("client");
    let outcome = tokio::time::timeout(Duration::from_secs(10), client.send("hi"))
        .await
        .expect("answered in time")
        .expect("sent");
    match outcome {
        RequestOutcome::Final { content, .. } => {
            assert_eq!(content, Some(json!("echo: hi").into()));
        }
        other => panic!("expected a final answer, got {other:?}"),
    }
    let unknown = tether_core::server::SessionId("no-such-session".into());
    let refused = b.node.publish(&unknown, "message", event(1)).await;
    assert!(
        matches!(refused, Err(StoreError::UnknownSession(ref s)) if *s == unknown),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_feed_is_caught_up_from_the_log() {
    // Its own Redis: the test kills connections.
    let redis = tether_redis::testing::RedisServer::own(Default::default(), &[]);
    let store = store_config(&redis, "resubscribe");
    let mut a = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let (_client, mut events) = tether_tokio::connect(
        TokioRuntime,
        a.url(),
        failover_client_config(),
        ConnectOptions::default(),
    )
    .expect("client");
    let session = a.created.next().await.expect("session");
    publish(&a.node, &session, 1, 100).await;
    // Drop every pub/sub connection (the node's notification feed) and publish at once: the
    // notifications of these events go nowhere; the node must read them from the log.
    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .expect("client kill");
    assert!(killed >= 1, "the node's subscription was killed");
    publish(&a.node, &session, 101, 100).await;
    let seqs = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seqs = Vec::new();
        while seqs.len() < 200 {
            match events.next().await {
                Some(Event::Delivered(d)) => seqs.push(d.seq),
                Some(Event::Lost { .. }) => panic!("loss reported"),
                Some(_) => {}
                None => panic!("client ended"),
            }
        }
        seqs
    })
    .await
    .expect("all 200 delivered after the feed was lost");
    assert!(seqs.into_iter().eq(1..=200));
}
