//! Integration tests of the tokio adapter on 127.0.0.1 (issue: tether-tokio). No sleeps as
//! synchronisation: every wait is on an event, with a timeout so a failure cannot hang CI.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::*;
use tether_tokio::{connect, ClientConfig, Event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_over_one_connection_arrive_in_order() {
    within(Duration::from_secs(60), async {
        let mut gw = Gateway::start(server_config()).await;
        let (_client, mut events) = connect(&gw.url(), Some(TOKEN), client_config()).unwrap();
        let session = gw.next_session().await;
        let publisher = gw.publisher(session, 10_000);
        let delivered = collect_delivered(&mut events, 10_000).await;
        publisher.await.unwrap();
        assert_eq!(delivered, (1..=10_000).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_events_through_twenty_cuts_by_server_and_proxy_arrive_exactly_once() {
    within(Duration::from_secs(120), async {
        let mut gw = Gateway::start(server_config()).await;
        let proxy = proxy::Proxy::start(gw.addr, 7).await;
        proxy.cut_randomly(20_000, 400_000);
        let (_client, mut events) = connect(&proxy.url(), Some(TOKEN), client_config()).unwrap();
        let session = gw.next_session().await;
        // Follow the session's current connection so the server can cut it.
        let current = std::sync::Arc::new(std::sync::Mutex::new(None));
        let follow = {
            let current = current.clone();
            let mut server_events = std::mem::replace(&mut gw.events, empty_events());
            tokio::spawn(async move {
                while let Some(e) = server_events.next().await {
                    match e {
                        tether_tokio::ServerEvent::SessionCreated { conn, .. }
                        | tether_tokio::ServerEvent::SessionResumed { conn, .. } => {
                            *current.lock().unwrap() = Some(conn)
                        }
                        _ => {}
                    }
                }
            })
        };
        let server = gw.server.clone();
        let publisher = tokio::spawn({
            let current = current.clone();
            async move {
                let mut server_cuts = 0;
                for n in 1..=50_000u64 {
                    server
                        .publish(
                            &session,
                            "message",
                            vec![("n".into(), serde_json::json!(n))],
                        )
                        .await
                        .unwrap();
                    if n % 4_000 == 0 {
                        let conn = *current.lock().unwrap();
                        if let Some(conn) = conn {
                            server.disconnect(conn, 1012, "test cut").await;
                            server_cuts += 1;
                        }
                    }
                }
                server_cuts
            }
        });
        let delivered = collect_delivered(&mut events, 50_000).await;
        let server_cuts = publisher.await.unwrap();
        follow.abort();
        assert_eq!(delivered, (1..=50_000).collect::<Vec<u64>>());
        let proxy_cuts = proxy.cuts();
        eprintln!(
            "server cuts {server_cuts}, proxy cuts {proxy_cuts}, connections {}",
            proxy.connections()
        );
        assert!(server_cuts >= 10, "server cuts: {server_cuts}");
        assert!(proxy_cuts >= 10, "proxy cuts: {proxy_cuts}");
        assert!(server_cuts + proxy_cuts >= 20);
    })
    .await;
}
