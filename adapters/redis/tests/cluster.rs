//! tether nodes on a private Redis Cluster (three masters, AOF): failover between nodes with
//! a master restarted mid-stream, notifications that reach only the node holding the session,
//! and presence across the masters.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tether_core::client::{Event, State};
use tether_core::server::SessionId;
use tether_redis::testing::RedisCluster;
use tether_redis::RedisConfig;
use tokio::sync::watch;

use support::{event, quick_client_config, server_config, Node};
use tether_tokio::{ConnectOptions, TokioRuntime};

/// The index of the master serving `session`'s keys.
async fn master_of(cluster: &RedisCluster, session: &SessionId) -> usize {
    let urls = cluster.urls();
    let mut admin = redis::Client::open(urls[0].as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("tether:{{{session}}}:s"))
        .query_async(&mut admin)
        .await
        .expect("keyslot");
    let slots: Vec<(i64, i64, (String, i64))> = {
        let raw: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut admin)
            .await
            .expect("slots");
        raw.into_iter()
            .map(|range| {
                let (start, end, master, ..): (i64, i64, Vec<redis::Value>) =
                    redis::from_owned_redis_value(range).expect("slot range");
                let mut master = master.into_iter();
                let host: String =
                    redis::from_owned_redis_value(master.next().expect("host")).expect("host");
                let port: i64 =
                    redis::from_owned_redis_value(master.next().expect("port")).expect("port");
                (start, end, (host, port))
            })
            .collect()
    };
    let (_, _, (_, port)) = slots
        .iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .expect("a master serves the slot");
    urls.iter()
        .position(|u| u.ends_with(&format!(":{port}")))
        .expect("one of ours")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fails_over_between_nodes_and_a_master_restarts_mid_stream_losing_nothing() {
    const TOTAL: u64 = 20_000;
    let mut cluster = RedisCluster::start();
    let store = RedisConfig::cluster(cluster.urls());
    let mut a = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let b = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let (_client, mut events) = tether_tokio::connect(
        TokioRuntime,
        vec![a.url(), b.url()],
        quick_client_config(),
        ConnectOptions::default(),
    )
    .expect("client");
    let session = tokio::time::timeout(Duration::from_secs(10), a.created.next())
        .await
        .expect("a session on node A")
        .expect("node A runs");
    let (progress_tx, mut progress) = watch::channel((0u64, 0u32));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let p = problems.clone();
    let consumer = tokio::spawn(async move {
        let (mut seqs, mut resumed) = (Vec::new(), 0u32);
        while let Some(e) = events.next().await {
            match e {
                Event::Delivered(d) => {
                    seqs.push(d.seq);
                    let _ = progress_tx.send((seqs.len() as u64, resumed));
                    if seqs.len() as u64 == TOTAL {
                        break;
                    }
                    if seqs.len() % 100 == 0 {
                        // A slowish application, so the faults land mid-stream.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Event::StateChanged(State::Connected { resumed: true, .. }) => {
                    resumed += 1;
                    let _ = progress_tx.send((seqs.len() as u64, resumed));
                }
                Event::Lost { .. } | Event::ServerReset { .. } | Event::SessionReplaced { .. } => {
                    p.lock().unwrap().push(format!("{e:?}"));
                }
                _ => {}
            }
        }
        seqs
    });
    // The first event through node A: once it is numbered, the session exists for every
    // node. Everything else is published through node B, which stays up.
    let first = a
        .node
        .publish(&session, "message", event(1))
        .await
        .expect("published");
    assert_eq!(first, 1);
    let (publisher, sid) = (b.node.clone(), session.clone());
    let publishing = tokio::spawn(async move {
        let mut i = 2;
        while i <= TOTAL {
            let n = 250.min(TOTAL + 1 - i);
            publisher
                .publish_many(&sid, "message", (i..i + n).map(event).collect())
                .await
                .expect("published");
            i += n;
        }
    });
    let limit = Duration::from_secs(30);
    tokio::time::timeout(limit, progress.wait_for(|(n, _)| *n >= 4_000))
        .await
        .expect("streaming")
        .expect("consumer");
    a.kill();
    tokio::time::timeout(limit, progress.wait_for(|(_, resumed)| *resumed >= 1))
        .await
        .expect("the client resumes on node B")
        .expect("consumer");
    let at_restart = tokio::time::timeout(limit, progress.wait_for(|(n, _)| *n >= 10_000))
        .await
        .expect("streaming on B")
        .expect("consumer")
        .0;
    let master = master_of(&cluster, &session).await;
    cluster.restart(master);
    let seqs = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("every event delivered")
        .expect("consumer");
    publishing.await.expect("publisher");
    assert!(
        problems.lock().unwrap().is_empty(),
        "{:?}",
        problems.lock().unwrap()
    );
    assert!(at_restart < TOTAL, "the master restarted mid-stream");
    assert!(
        seqs.iter().copied().eq(1..=TOTAL),
        "not exactly once in order: first disorder at {:?}",
        seqs.windows(2).find(|w| w[1] != w[0] + 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_only_the_node_holding_the_session() {
    const EVENTS: u64 = 300;
    let cluster = RedisCluster::start();
    let store = RedisConfig::cluster(cluster.urls());
    let mut holder = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let publisher = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let idle = Node::start("127.0.0.1:0", server_config(), store.clone()).await;
    let (_client, mut events) = tether_tokio::connect(
        TokioRuntime,
        holder.url(),
        quick_client_config(),
        ConnectOptions::default(),
    )
    .expect("client");
    let session = holder.created.next().await.expect("session");
    // Once the holder has written the session, any node may publish to it.
    let first = holder
        .node
        .publish(&session, "message", event(0))
        .await
        .expect("published");
    assert_eq!(first, 1);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Event::Delivered(d))) if d.seq == 1 => break,
            Ok(Some(_)) => {}
            _ => panic!("the first event was not delivered"),
        }
    }
    let before = holder.node.server().metrics().store().notifications.get();
    for i in 1..=EVENTS {
        publisher
            .node
            .publish(&session, "message", event(i))
            .await
            .expect("published");
    }
    let mut delivered = 0;
    while delivered < EVENTS {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Event::Delivered(_))) => delivered += 1,
            Ok(Some(_)) => {}
            _ => panic!("{delivered} of {EVENTS} delivered"),
        }
    }
    let received = |n: &Node| n.node.server().metrics().store().notifications.get();
    let for_published = received(&holder) - before;
    assert!(
        for_published > 0 && for_published <= EVENTS,
        "the holder got {for_published} notifications for {EVENTS} events"
    );
    assert_eq!(received(&publisher), 0, "the publishing node holds nothing");
    assert_eq!(received(&idle), 0, "the idle node holds nothing");
    assert_eq!(holder.node.subscriptions(), 1);
    assert_eq!(publisher.node.subscriptions(), 0);
    // Presence is shared across the cluster's masters: every node sees the holder's client.
    for node in [&holder, &publisher, &idle] {
        let everyone = node.node.presence(Some("echo")).await.expect("presence");
        assert!(
            everyone.iter().any(|p| {
                p.metadata.get("session_id").and_then(|v| v.as_str()) == Some(session.as_str())
            }),
            "{everyone:?}"
        );
    }
}
