//! Integration tests of the tokio adapter on 127.0.0.1 (issue: tether-tokio). No sleeps as
//! synchronisation: every wait is on an event, with a timeout so a failure cannot hang CI.

mod support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use support::*;
use tether_core::client::{ClosedReason, DisconnectCause, RequestStatus, State};
use tether_core::wire::{ConnectErrorCode, RecoveryStep};
use tether_tokio::{connect, Event, Outcome, ServerEvent};
use tokio_tungstenite::tungstenite::Message as RawMessage;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_from_its_snapshot_file_mid_stream_loses_and_duplicates_nothing() {
    within(Duration::from_secs(60), async {
        let dir = std::env::temp_dir().join(format!("tether-restart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sessions.json");
        let mut gw = Gateway::start(server_config()).await;
        let addr = gw.addr.to_string();
        let (_client, mut events) = connect(&gw.url(), Some(TOKEN), client_config()).unwrap();
        let session = gw.next_session().await;
        gw.publisher(session.clone(), 3_000).await.unwrap();
        let first = collect_delivered(&mut events, 1_000).await;
        // Stop mid-stream: 2,000 published events may not have reached the client yet.
        let snapshot = gw.shutdown().await;
        tether_tokio::save_snapshot(&file, &snapshot).unwrap();
        let restored = tether_tokio::load_snapshot(&file)
            .unwrap()
            .expect("snapshot file");
        let gw = Gateway::start_at(&addr, server_config(), Some(restored)).await;
        let publisher = publish_range(gw.server.clone(), session, 3_001, 6_000);
        let rest = collect_delivered(&mut events, 5_000).await;
        publisher.await.unwrap();
        let all: Vec<u64> = first.into_iter().chain(rest).collect();
        assert_eq!(all, (1..=6_000).collect::<Vec<u64>>());
        std::fs::remove_dir_all(&dir).ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_mismatch_stops_after_one_attempt_and_a_wrong_token_with_auth_required() {
    within(Duration::from_secs(30), async {
        let gw = Gateway::start(server_config()).await;
        let mut config = client_config();
        config.versions = tether_core::version::VersionRange::new(3, 4).unwrap();
        let (_c, events) = connect(&gw.url(), Some(TOKEN), config).unwrap();
        let (attempts, reason) = until_closed(events).await;
        assert_eq!(attempts, 1);
        let ClosedReason::Rejected(r) = reason else {
            panic!("{reason:?}")
        };
        assert_eq!(r.code, ConnectErrorCode::ProtocolUnsupported);
        assert_eq!(r.next_step, Some(RecoveryStep::DowngradeClient));

        let (_c, events) = connect(&gw.url(), Some("wrong"), client_config()).unwrap();
        let (attempts, reason) = until_closed(events).await;
        assert_eq!(attempts, 1);
        let ClosedReason::Rejected(r) = reason else {
            panic!("{reason:?}")
        };
        assert_eq!(r.code, ConnectErrorCode::AuthRequired);
        assert_eq!(r.next_step, Some(RecoveryStep::Reauthenticate));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_hits_the_handshake_deadline_and_the_client_backs_off() {
    within(Duration::from_secs(30), async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = vec![];
            while let Ok((s, _)) = listener.accept().await {
                sockets.push(s); // accepted, never answered
            }
        });
        let mut config = client_config();
        config.handshake_timeout = Duration::from_millis(200);
        config.backoff.jitter = tether_core::backoff::Jitter::None;
        config.backoff.initial = Duration::from_millis(50);
        let (client, mut events) = connect(&format!("ws://{addr}/ws"), None, config).unwrap();
        let mut timeouts = 0;
        let mut delays = vec![];
        while delays.len() < 3 {
            match events.next().await.unwrap() {
                Event::StateChanged(State::Disconnected {
                    cause: DisconnectCause::HandshakeTimeout,
                }) => timeouts += 1,
                Event::StateChanged(State::Reconnecting { delay, .. }) => delays.push(delay),
                Event::StateChanged(State::Connected { .. }) => {
                    panic!("connected to a mute listener")
                }
                _ => {}
            }
        }
        assert_eq!(timeouts, 3);
        assert_eq!(
            delays,
            vec![
                Duration::from_millis(50),
                Duration::from_millis(100),
                Duration::from_millis(200)
            ]
        );
        client.disconnect().await;
        held.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_half_open_server_is_detected_and_the_client_reconnects_within_three_intervals() {
    within(Duration::from_secs(30), async {
        let mut config = server_config();
        let interval = Duration::from_millis(400);
        config.heartbeat_interval = interval;
        config.missed_beats = 100; // the server must not be the one to notice
        let mut gw = Gateway::start(config).await;
        let proxy = proxy::Proxy::start(gw.addr, 1).await;
        let (_client, mut events) = connect(&proxy.url(), Some(TOKEN), client_config()).unwrap();
        gw.next_session().await;
        wait_connected(&mut events).await;
        proxy.black_hole(true);
        let silent_since = tokio::time::Instant::now();
        loop {
            match events.next().await.unwrap() {
                Event::StateChanged(State::Disconnected { cause }) => {
                    assert_eq!(cause, DisconnectCause::HeartbeatTimeout);
                    break;
                }
                Event::StateChanged(State::Connected { .. }) => {
                    panic!("reconnected before detection")
                }
                _ => {}
            }
        }
        proxy.black_hole(false);
        wait_connected(&mut events).await;
        let elapsed = silent_since.elapsed();
        assert!(
            elapsed <= interval * 3,
            "detected and reconnected after {elapsed:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_server_is_down_are_delivered_once_each_with_its_outcome() {
    within(Duration::from_secs(60), async {
        let mut gw = Gateway::start(server_config()).await;
        let addr = gw.addr.to_string();
        let (client, mut events) = connect(&gw.url(), Some(TOKEN), client_config()).unwrap();
        gw.next_session().await;
        wait_connected(&mut events).await;
        let snapshot = gw.shutdown().await;
        wait_disconnected(&mut events).await;
        let sends: Vec<_> = (0..5)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .send_with_id(format!("down-{i}"), format!("m{i}"))
                        .await
                })
            })
            .collect();
        let mut gw = Gateway::start_at(&addr, server_config(), Some(snapshot)).await;
        let server = gw.server.clone();
        let seen = tokio::spawn(async move {
            let mut seen = vec![];
            while seen.len() < 5 {
                if let Some(ServerEvent::Request {
                    session,
                    request_id,
                    content,
                    ..
                }) = gw.events.next().await
                {
                    seen.push(request_id.clone());
                    let answer = format!("echo: {}", content.as_str().unwrap_or_default());
                    server
                        .respond(&session, &request_id, Outcome::ok(answer))
                        .await
                        .unwrap();
                }
            }
            (seen, gw)
        });
        let drain = tokio::spawn(async move { while events.next().await.is_some() {} });
        for (i, send) in sends.into_iter().enumerate() {
            let outcome = send.await.unwrap().unwrap();
            let RequestStatus::Final { content, .. } = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(content, Some(serde_json::json!(format!("echo: m{i}"))));
        }
        let (mut seen, _gw) = seen.await.unwrap();
        seen.sort();
        assert_eq!(
            seen,
            (0..5).map(|i| format!("down-{i}")).collect::<Vec<_>>()
        );
        client.disconnect().await;
        drain.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_one_raw_client_gets_typed_errors_and_does_not_disturb_another() {
    within(Duration::from_secs(60), async {
        let mut config = server_config();
        config.max_payload = 64 * 1024;
        let mut gw = Gateway::start(config).await;
        let (_client, mut events) = connect(&gw.url(), Some(TOKEN), client_config()).unwrap();
        let session = gw.next_session().await;
        let publisher = gw.publisher(session, 2_000);
        let url = format!("{}?token={TOKEN}", gw.url());
        let garbage = tokio::spawn(async move {
            let mut results = vec![];
            let hello = r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1}"#;
            for bad in [
                RawMessage::text("{not json"),
                RawMessage::text("[1,2,3]"),
                RawMessage::Binary(vec![0, 1, 2].into()),
                RawMessage::text("x".repeat(100 * 1024)),
            ] {
                let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .unwrap();
                ws.send(RawMessage::text(hello)).await.unwrap();
                ws.send(bad).await.unwrap();
                results.push(read_until_close(&mut ws).await);
            }
            // A flood of pings: each gets a pong, nothing breaks.
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap();
            ws.send(RawMessage::text(hello)).await.unwrap();
            for _ in 0..5_000 {
                ws.feed(RawMessage::text(r#"{"type":"ping"}"#))
                    .await
                    .unwrap();
            }
            ws.flush().await.unwrap();
            let mut pongs = 0;
            while pongs < 5_000 {
                match ws.next().await {
                    Some(Ok(RawMessage::Text(t))) if t.as_str() == r#"{"type":"pong"}"# => {
                        pongs += 1
                    }
                    Some(Ok(_)) => {}
                    other => panic!("ping flood: {other:?} after {pongs} pongs"),
                }
            }
            (results, pongs)
        });
        let delivered = collect_delivered(&mut events, 2_000).await;
        publisher.await.unwrap();
        assert_eq!(
            delivered,
            (1..=2_000).collect::<Vec<u64>>(),
            "the good client saw a disturbance"
        );
        let (results, pongs) = garbage.await.unwrap();
        assert_eq!(pongs, 5_000);
        let codes: Vec<(Option<String>, Option<u16>)> = results;
        assert_eq!(
            codes,
            vec![
                (Some("invalid_frame".into()), Some(1007)),
                (Some("invalid_frame".into()), Some(1007)),
                (Some("invalid_frame".into()), Some(1003)),
                (Some("payload_too_large".into()), Some(1009)),
            ]
        );
    })
    .await;
}
