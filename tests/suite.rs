//! The adapter integration suite, run against every runtime and cross-runtime pair: tokio,
//! async-std and smol on their own, a tokio server with async-std and smol clients, and an
//! async-std server with a tokio client. All on 127.0.0.1; no sleeps as synchronisation (every
//! wait is on an event, under a timeout so a failure cannot hang CI).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use support::*;
use tether_core::client::{ClosedReason, DisconnectCause, Event, RequestStatus, State};
use tether_core::server::{Outcome, ServerEvent};
use tether_core::version::VersionRange;
use tether_core::wire::{ConnectErrorCode, RecoveryStep};
use tokio_tungstenite::tungstenite::Message as RawMessage;

type Scenario = fn(&'static dyn Kit, &'static dyn Kit) -> tether_driver::BoxFuture<()>;

fn run(server: &'static dyn Kit, client: &'static dyn Kit, scenario: Scenario) {
    client.block_on(scenario(server, client));
}

/// Must-show 1: 10,000 events over one connection arrive in order.
async fn ten_thousand_in_order(s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(60), async {
        let mut gw = Gateway::start(s, server_config()).await;
        let (_client, mut events) = c.connect(&gw.url(), Some(TOKEN), client_config());
        let session = gw.next_session().await;
        let publisher = gw.publisher(session, 10_000);
        let delivered = collect_delivered(&mut events, 10_000).await;
        publisher.await;
        assert_eq!(delivered, (1..=10_000).collect::<Vec<u64>>());
    })
    .await;
}

/// Must-show 2: 50,000 events, cut at least 20 times by the server and by a proxy at random byte
/// offsets: every event exactly once, in order.
async fn fifty_thousand_through_cuts(s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(120), async {
        let mut gw = Gateway::start(s, server_config()).await;
        let proxy = proxy::Proxy::start(gw.addr, 7).await;
        proxy.cut_randomly(20_000, 400_000);
        let (_client, mut events) = c.connect(&proxy.url(), Some(TOKEN), client_config());
        let session = gw.next_session().await;
        let current = Arc::new(Mutex::new(None));
        let mut server_events = gw.take_events();
        let follow = {
            let current = current.clone();
            background(async move {
                while let Some(e) = server_events.next().await {
                    match e {
                        ServerEvent::SessionCreated { conn, .. }
                        | ServerEvent::SessionResumed { conn, .. } => {
                            *current.lock().unwrap() = Some(conn)
                        }
                        _ => {}
                    }
                }
            })
        };
        let server = gw.server.clone();
        let publisher = background({
            let current = current.clone();
            async move {
                let mut server_cuts = 0;
                for n in 1..=50_000u64 {
                    server
                        .publish(&session, "message", vec![("n".into(), json!(n))])
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
        let server_cuts = publisher.await;
        assert_eq!(delivered, (1..=50_000).collect::<Vec<u64>>());
        let proxy_cuts = proxy.cuts();
        assert!(server_cuts >= 10, "server cuts: {server_cuts}");
        assert!(proxy_cuts >= 10, "proxy cuts: {proxy_cuts}");
        gw.shutdown().await;
        follow.await;
    })
    .await;
}

/// Must-show 3: The server restarts from its snapshot file mid-stream; the client resumes; nothing lost
/// or duplicated.
async fn restart_from_snapshot_file(s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(60), async {
        let dir = std::env::temp_dir().join(format!(
            "tether-restart-{}-{}-{}",
            std::process::id(),
            s.name(),
            c.name()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sessions.json");
        let mut gw = Gateway::start(s, server_config()).await;
        let addr = gw.addr.to_string();
        let (_client, mut events) = c.connect(&gw.url(), Some(TOKEN), client_config());
        let session = gw.next_session().await;
        gw.publisher(session.clone(), 3_000).await;
        let first = collect_delivered(&mut events, 1_000).await;
        // Stop mid-stream: published events may not have reached the client yet.
        let snapshot = gw.shutdown().await;
        tether_driver::save_snapshot(&file, &snapshot).unwrap();
        let restored = tether_driver::load_snapshot(&file)
            .unwrap()
            .expect("snapshot file");
        let gw = Gateway::start_at(s, &addr, server_config(), Some(restored)).await;
        let publisher = publish_range(gw.server.clone(), session, 3_001, 6_000);
        let rest = collect_delivered(&mut events, 5_000).await;
        publisher.await;
        let all: Vec<u64> = first.into_iter().chain(rest).collect();
        assert_eq!(all, (1..=6_000).collect::<Vec<u64>>());
        std::fs::remove_dir_all(&dir).ok();
        gw.shutdown().await;
    })
    .await;
}

/// Must-show 4: A version mismatch stops after one attempt with the typed error; a wrong token stops
/// with `auth_required`.
async fn terminal_rejections(s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(30), async {
        let gw = Gateway::start(s, server_config()).await;
        let mut config = client_config();
        config.versions = VersionRange::new(3, 4).unwrap();
        let (_c1, events) = c.connect(&gw.url(), Some(TOKEN), config);
        let (attempts, reason) = until_closed(events).await;
        assert_eq!(attempts, 1);
        let ClosedReason::Rejected(r) = reason else {
            panic!("{reason:?}")
        };
        assert_eq!(r.code, ConnectErrorCode::ProtocolUnsupported);
        assert_eq!(r.next_step, Some(RecoveryStep::DowngradeClient));

        let (_c2, events) = c.connect(&gw.url(), Some("wrong"), client_config());
        let (attempts, reason) = until_closed(events).await;
        assert_eq!(attempts, 1);
        let ClosedReason::Rejected(r) = reason else {
            panic!("{reason:?}")
        };
        assert_eq!(r.code, ConnectErrorCode::AuthRequired);
        assert_eq!(r.next_step, Some(RecoveryStep::Reauthenticate));
        gw.shutdown().await;
    })
    .await;
}

/// Must-show 5: A listener that accepts and never answers hits the handshake deadline and the client
/// backs off.
async fn mute_listener(_s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(30), async {
        let (addr_tx, addr_rx) = futures::channel::oneshot::channel();
        let held = fixtures().spawn(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut sockets = vec![];
            while let Ok((s, _)) = listener.accept().await {
                sockets.push(s); // accepted, never answered
            }
        });
        let addr = addr_rx.await.unwrap();
        let mut config = client_config();
        config.handshake_timeout = Duration::from_millis(200);
        config.backoff.jitter = tether_core::backoff::Jitter::None;
        config.backoff.initial = Duration::from_millis(50);
        let (client, mut events) = c.connect(&format!("ws://{addr}/ws"), None, config);
        let (mut timeouts, mut delays) = (0, vec![]);
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
        let ms = Duration::from_millis;
        assert_eq!(delays, vec![ms(50), ms(100), ms(200)]);
        client.disconnect().await;
        held.abort();
    })
    .await;
}

/// Must-show 6: A server that goes silent (half-open) is detected and the client reconnects within 3
/// heartbeat intervals.
async fn half_open_detected(s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(30), async {
        let mut config = server_config();
        let interval = Duration::from_millis(400);
        config.heartbeat_interval = Some(interval);
        config.missed_beats = 100; // the server must not be the one to notice
        let mut gw = Gateway::start(s, config).await;
        let proxy = proxy::Proxy::start(gw.addr, 1).await;
        let (_client, mut events) = c.connect(&proxy.url(), Some(TOKEN), client_config());
        gw.next_session().await;
        wait_connected(&mut events).await;
        proxy.black_hole_current();
        let silent_since = std::time::Instant::now();
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
        wait_connected(&mut events).await;
        let elapsed = silent_since.elapsed();
        assert!(
            elapsed <= interval * 3,
            "detected and reconnected after {elapsed:?}"
        );
        gw.shutdown().await;
    })
    .await;
}

/// Must-show 7: Messages sent while the server is down are delivered exactly once after it returns,
/// each with its outcome.
async fn sends_while_down(s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(60), async {
        let mut gw = Gateway::start(s, server_config()).await;
        let addr = gw.addr.to_string();
        let (client, mut events) = c.connect(&gw.url(), Some(TOKEN), client_config());
        gw.next_session().await;
        wait_connected(&mut events).await;
        let snapshot = gw.shutdown().await;
        wait_disconnected(&mut events).await;
        let sends: Vec<_> = (0..5)
            .map(|i| {
                let client = client.clone();
                background(async move {
                    client
                        .send_with_id(format!("down-{i}"), format!("m{i}"))
                        .await
                })
            })
            .collect();
        let mut gw = Gateway::start_at(s, &addr, server_config(), Some(snapshot)).await;
        let server = gw.server.clone();
        let mut server_events = gw.take_events();
        let seen = background(async move {
            let mut seen = vec![];
            while seen.len() < 5 {
                if let Some(ServerEvent::Request {
                    session,
                    request_id,
                    content,
                    ..
                }) = server_events.next().await
                {
                    seen.push(request_id.clone());
                    let answer = format!("echo: {}", content.as_str().unwrap_or_default());
                    server
                        .respond(&session, &request_id, Outcome::ok(answer))
                        .await
                        .unwrap();
                }
            }
            seen
        });
        let drain = background(async move { while events.next().await.is_some() {} });
        for (i, send) in sends.into_iter().enumerate() {
            let outcome = send.await.unwrap();
            let RequestStatus::Final { content, .. } = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(content, Some(json!(format!("echo: m{i}")).into()));
        }
        let mut seen = seen.await;
        seen.sort();
        assert_eq!(
            seen,
            (0..5).map(|i| format!("down-{i}")).collect::<Vec<_>>()
        );
        client.disconnect().await;
        drain.await;
        gw.shutdown().await;
    })
    .await;
}

/// Must-show 8: Garbage (invalid JSON, binary, oversized frames, a ping flood) from raw clients gets
/// typed errors or a clean close; a well-behaved client on the same server sees no disturbance.
async fn garbage_isolated(s: &'static dyn Kit, c: &'static dyn Kit) {
    within(Duration::from_secs(60), async {
        let mut config = server_config();
        config.max_frame_bytes = 64 * 1024;
        let mut gw = Gateway::start(s, config).await;
        let (_client, mut events) = c.connect(&gw.url(), Some(TOKEN), client_config());
        let session = gw.next_session().await;
        let publisher = gw.publisher(session, 2_000);
        let url = format!("{}?token={TOKEN}", gw.url());
        let garbage = background(async move {
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
        publisher.await;
        assert_eq!(
            delivered,
            (1..=2_000).collect::<Vec<u64>>(),
            "the good client was disturbed"
        );
        let (results, pongs) = garbage.await;
        assert_eq!(pongs, 5_000);
        assert_eq!(
            results,
            vec![
                (Some("invalid_frame".into()), Some(1007)),
                (Some("invalid_frame".into()), Some(1007)),
                (Some("invalid_frame".into()), Some(1003)),
                (Some("payload_too_large".into()), Some(1009)),
            ]
        );
        gw.shutdown().await;
    })
    .await;
}

macro_rules! suite {
    ($($pair:ident: $server:expr, $client:expr;)*) => {$(
        mod $pair {
            use super::*;
            #[test] fn ten_thousand_events_arrive_in_order() { run(&$server, &$client, |s, c| Box::pin(ten_thousand_in_order(s, c))) }
            #[test] fn fifty_thousand_events_through_cuts_arrive_exactly_once() { run(&$server, &$client, |s, c| Box::pin(fifty_thousand_through_cuts(s, c))) }
            #[test] fn a_restart_from_the_snapshot_file_loses_and_duplicates_nothing() { run(&$server, &$client, |s, c| Box::pin(restart_from_snapshot_file(s, c))) }
            #[test] fn version_mismatch_and_wrong_token_stop_after_one_attempt() { run(&$server, &$client, |s, c| Box::pin(terminal_rejections(s, c))) }
            #[test] fn a_mute_listener_hits_the_handshake_deadline_and_backs_off() { run(&$server, &$client, |s, c| Box::pin(mute_listener(s, c))) }
            #[test] fn a_half_open_server_is_detected_within_three_intervals() { run(&$server, &$client, |s, c| Box::pin(half_open_detected(s, c))) }
            #[test] fn sends_while_the_server_is_down_are_delivered_once_with_outcomes() { run(&$server, &$client, |s, c| Box::pin(sends_while_down(s, c))) }
            #[test] fn garbage_gets_typed_errors_and_disturbs_nobody() { run(&$server, &$client, |s, c| Box::pin(garbage_isolated(s, c))) }
        }
    )*};
}

suite! {
    on_tokio: TOKIO, TOKIO;
    on_async_std: ASYNC_STD, ASYNC_STD;
    on_smol: SMOL, SMOL;
    tokio_server_async_std_client: TOKIO, ASYNC_STD;
    tokio_server_smol_client: TOKIO, SMOL;
    async_std_server_tokio_client: ASYNC_STD, TOKIO;
}
