//! The batched and fire-and-forget server API: `publish_many`, `publish_nowait`,
//! `publish_batch`, `publish_batch_nowait` and `broadcast_nowait` deliver in order, exactly once, and report what they should.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tether_tokio::{
    connect, serve, ClientConfig, ClientEvents, Event, EventBatch, ServerConfig, ServerError,
    ServerEvent, TokioRuntime,
};

/// The delivered `message` events' `n` fields and sequences, until `count` of them.
async fn delivered(events: &mut ClientEvents, count: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    while out.len() < count {
        match events.next().await.expect("client events ended") {
            Event::Delivered(d) if d.kind == "message" => {
                let v: Value = serde_json::from_str(&d.payload).expect("JSON payload");
                out.push((v["n"].as_u64().expect("n"), d.seq));
            }
            Event::Lost { from, to } => panic!("lost {from}..={to}"),
            Event::Closed(r) => panic!("closed: {r:?}"),
            _ => {}
        }
    }
    out
}

fn event(n: u64) -> Vec<(&'static str, Value)> {
    vec![("n", json!(n)), ("text", json!("hello"))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_published_in_order_and_errors_stop_the_rest_of_a_batch() {
    let bound = serve(
        TokioRuntime,
        "127.0.0.1:0",
        ServerConfig::default(),
        Default::default(),
    )
    .await
    .expect("serve");
    let url = format!("ws://{}/ws", bound.local_addr);
    let (server, mut server_events) = (bound.server.clone(), bound.events);
    let (client, mut events) = connect(
        TokioRuntime,
        &url,
        ClientConfig::new("a"),
        Default::default(),
    )
    .expect("connect");
    let session = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let ServerEvent::SessionCreated { session, .. } =
                server_events.next().await.expect("server events")
            {
                return session;
            }
        }
    })
    .await
    .expect("a session within 10 s");
    tokio::spawn(async move { while server_events.next().await.is_some() {} });

    // One round trip, consecutive cursors; the last one is returned.
    let last = server
        .publish_many(&session, "message", (1..=3).map(event).collect())
        .await
        .expect("publish_many");
    assert_eq!(last, 3);
    // An empty batch returns the head.
    let empty: Vec<Vec<(&str, Value)>> = Vec::new();
    assert_eq!(
        server
            .publish_many(&session, "message", empty)
            .await
            .unwrap(),
        3
    );
    // String names work too; a reserved field stops the batch there.
    let mut bad = vec![("n".to_owned(), json!(4))];
    bad.push(("seq".to_owned(), json!(99)));
    let batch = vec![
        vec![("n".to_owned(), json!(4))],
        bad,
        vec![("n".to_owned(), json!(5))],
    ];
    let err = server.publish_many(&session, "message", batch).await;
    assert!(matches!(err, Err(ServerError::Command(_))), "{err:?}");
    // Fire and forget: queued in order behind the above.
    server
        .publish_nowait(&session, "message", (5..=6).map(event).collect())
        .await
        .expect("publish_nowait");
    let too_many: Vec<Vec<(&str, Value)>> = (0..=tether_tokio::PUBLISH_MANY_MAX as u64)
        .map(event)
        .collect();
    assert!(matches!(
        server.publish_many(&session, "message", too_many).await,
        Err(ServerError::BatchTooLarge(_))
    ));

    // Fields the producer encoded itself, one buffer per batch, waited for or not.
    let mut encoded = EventBatch::new();
    for n in 7..=8 {
        encoded
            .push(&json!({"n": n, "text": "hello"}))
            .expect("an object");
    }
    assert_eq!(
        server
            .publish_batch(&session, "message", encoded.clone())
            .await
            .expect("publish_batch"),
        8
    );
    encoded.clear();
    encoded.push_json(r#"{"n":9}"#).expect("an object");
    server
        .publish_batch_nowait(&session, "message", encoded)
        .await
        .expect("publish_batch_nowait");
    let mut oversized = EventBatch::new();
    for _ in 0..=tether_tokio::PUBLISH_MANY_MAX {
        oversized.push_json("{}").expect("an object");
    }
    assert!(matches!(
        server.publish_batch(&session, "message", oversized).await,
        Err(ServerError::BatchTooLarge(_))
    ));
    // An empty batch returns the head; a reserved kind is refused.
    let mut one = EventBatch::new();
    assert_eq!(
        server
            .publish_batch(&session, "message", one.clone())
            .await
            .unwrap(),
        9
    );
    one.push_json("{}").expect("an object");
    let err = server.publish_batch(&session, "replay", one).await;
    assert!(matches!(err, Err(ServerError::Command(_))), "{err:?}");

    let got = tokio::time::timeout(Duration::from_secs(10), delivered(&mut events, 9))
        .await
        .expect("nine events within 10 s");
    let expected: Vec<(u64, u64)> = (1..=9).map(|n| (n, n)).collect();
    assert_eq!(got, expected);

    // A broadcast without waiting reaches the bound connection as a notice.
    server
        .broadcast_nowait("tick", json!({"i": 1}))
        .await
        .expect("broadcast_nowait");
    let notice = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await.expect("client events") {
                Event::Notice(frame) if frame.kind == "tick" => return frame,
                _ => {}
            }
        }
    })
    .await
    .expect("the broadcast within 10 s");
    let v: Value = serde_json::from_str(&notice.text).unwrap();
    assert_eq!(v["data"]["i"], 1);

    client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
}
