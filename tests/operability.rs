//! Operability: `/health`, `/ready`, `/live` and `/metrics` on the WebSocket port, scraped over
//! real HTTP after a scripted scenario (connect, 100 events, a cut, 20 events while away, a resume,
//! a bad token), with exact counter values; and the client's own metrics.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use support::*;
use tether_core::client::{Event, State};
use tether_core::server::ServerEvent;
use tether_driver::metrics::ClientMetrics;
use tether_tokio::{ConnectOptions, TokioRuntime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` with an optional bearer token: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// Sample lines of a Prometheus exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

#[test]
fn metrics_health_and_readiness_after_a_scripted_scenario() {
    TOKIO.block_on(Box::pin(async {
        within(Duration::from_secs(60), async {
            let mut gw = Gateway::start(&TOKIO, server_config()).await;
            let client_metrics = ClientMetrics::new();
            let mut config = client_config();
            config.backoff.initial = Duration::from_millis(300);
            config.backoff.jitter = tether_core::backoff::Jitter::None;
            let options = ConnectOptions::default()
                .token(TOKEN)
                .metrics(client_metrics.clone());
            let (client, mut events) = tether_driver::Client::start(
                tether_tokio::TokioRuntime,
                tether_tokio::TokioConnector,
                gw.url(),
                config,
                options,
            )
            .unwrap();
            let (session, conn) = loop {
                if let ServerEvent::SessionCreated { session, conn, .. } =
                    gw.events.next().await.unwrap()
                {
                    break (session, conn);
                }
            };
            gw.publisher(session.clone(), 100).await;
            assert_eq!(collect_delivered(&mut events, 100).await.len(), 100);

            // A cut by the server, then 20 events while the client is away.
            gw.server.disconnect(conn, 1012, "cut").await;
            publish_range(gw.server.clone(), session, 101, 120).await;
            let rest = collect_delivered(&mut events, 20).await;
            assert_eq!(rest, (101..=120).collect::<Vec<u64>>());

            // A bad token.
            let (_bad, bad_events) = TOKIO.connect(&gw.url(), Some("wrong"), client_config());
            until_closed(bad_events).await;

            let addr = gw.addr;
            let expected = [
                ("tether_handshakes_accepted_total{kind=\"created\"}", 1.0),
                ("tether_handshakes_accepted_total{kind=\"resumed\"}", 1.0),
                (
                    "tether_handshakes_rejected_total{kind=\"auth_required\"}",
                    1.0,
                ),
                ("tether_resumes_total{kind=\"complete\"}", 1.0),
                ("tether_events_published_total", 120.0),
                ("tether_events_delivered_total", 120.0),
                ("tether_events_replayed_total", 20.0),
                ("tether_connections_open", 1.0),
                ("tether_sessions_live", 1.0),
                ("tether_slow_consumer_evictions_total", 0.0),
                ("tether_reaped_connections_total", 0.0),
                ("tether_resume_latency_seconds_count", 1.0),
            ];
            // Counters of written frames are bumped just after the socket flush; read until they
            // settle (bounded), then demand exact values.
            let mut got = HashMap::new();
            for _ in 0..100 {
                let (status, body) =
                    background(async move { http_get(addr, "/metrics", Some(TOKEN)).await }).await;
                assert_eq!(status, 200);
                got = samples(&body);
                if expected.iter().all(|(k, v)| got.get(*k) == Some(v)) {
                    break;
                }
                async_io::Timer::after(Duration::from_millis(20)).await;
            }
            for (k, v) in expected {
                assert_eq!(got.get(k), Some(&v), "{k}");
            }
            assert!(got["tether_publish_to_write_seconds_count"] >= 1.0);

            let (status, _) =
                background(async move { http_get(addr, "/metrics", None).await }).await;
            assert_eq!(status, 401, "/metrics needs the bearer token");
            let (status, _) =
                background(async move { http_get(addr, "/metrics", Some("nope")).await }).await;
            assert_eq!(status, 401);
            let (status, body) =
                background(async move { http_get(addr, "/health", None).await }).await;
            assert_eq!(status, 200);
            let health: Value = serde_json::from_str(&body).unwrap();
            for key in [
                "status",
                "uptime",
                "agents",
                "sessions",
                "clients",
                "channels",
                "last_inbound_at",
                "liveness",
            ] {
                assert!(health.get(key).is_some(), "health lacks {key}: {body}");
            }
            assert_eq!(health["status"], "healthy");
            assert_eq!(health["sessions"], 1);
            for key in [
                "enabled",
                "interval_ms",
                "missed_beats_before_reap",
                "reaped_connections",
            ] {
                assert!(
                    health["liveness"].get(key).is_some(),
                    "liveness lacks {key}"
                );
            }
            let (status, _) = background(async move { http_get(addr, "/ready", None).await }).await;
            assert_eq!(status, 200);
            let (status, _) = background(async move { http_get(addr, "/live", None).await }).await;
            assert_eq!(status, 200);
            let (status, _) =
                background(async move { http_get(addr, "/nowhere", None).await }).await;
            assert_eq!(status, 404);

            // The client's own view.
            let client_samples = samples(&client_metrics.encode());
            assert_eq!(
                client_samples["tether_client_events_delivered_total"],
                120.0
            );
            assert_eq!(
                client_samples["tether_client_reconnects_total{kind=\"closed\"}"],
                1.0
            );
            assert_eq!(client_samples["tether_client_events_lost_total"], 0.0);
            assert!(client_samples["tether_client_disconnected_seconds_total"] > 0.0);
            client.disconnect().await;
            while let Some(e) = events.next().await {
                if let Event::StateChanged(State::Connected { .. }) = e {
                    panic!("reconnected after disconnect");
                }
            }
            gw.shutdown().await;
        })
        .await;
    }));
}

#[test]
fn a_server_without_metrics_serves_and_answers_404_on_metrics() {
    TOKIO.block_on(Box::pin(async {
        within(Duration::from_secs(30), async {
            let options = tether_driver::ServerOptions::default().metrics(false);
            let bound = tether_tokio::serve(TokioRuntime, "127.0.0.1:0", server_config(), options)
                .await
                .unwrap();
            let (addr, server, mut server_events) = (bound.local_addr, bound.server, bound.events);
            let url = format!("ws://{addr}/ws");
            let (client, mut events) = tether_tokio::connect(
                TokioRuntime,
                url.as_str(),
                client_config(),
                ConnectOptions::default().token(TOKEN),
            )
            .unwrap();
            let session = loop {
                if let ServerEvent::SessionCreated { session, .. } =
                    server_events.next().await.unwrap()
                {
                    break session;
                }
            };
            tokio::spawn(async move { while server_events.next().await.is_some() {} });
            publish_range(server.clone(), session, 1, 10).await;
            assert_eq!(collect_delivered(&mut events, 10).await.len(), 10);

            assert!(!server.metrics().is_enabled());
            assert_eq!(server.metrics().events_published.get(), 0);
            let (status, _) =
                background(async move { http_get(addr, "/metrics", Some(TOKEN)).await }).await;
            assert_eq!(status, 404, "/metrics is off");
            let (status, body) =
                background(async move { http_get(addr, "/health", None).await }).await;
            assert_eq!(status, 200, "{body}");
            client.disconnect().await;
            let _ = server.shutdown().await;
        })
        .await;
    }));
}
