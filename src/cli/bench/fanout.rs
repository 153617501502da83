//! Fan-out (tokio): one server, many connected sessions, a stream of broadcasts. Delivered
//! events per second and the p99 delivery latency (broadcast call to frame decoded by the
//! client), against a bare tokio-tungstenite server writing the same frames to the same
//! clients. The clients are the same bare readers in both runs (they are the environment).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tether_driver::tungstenite::Message;
use tether_driver::websocket_config;
use tokio::sync::Notify;

use super::bare::{bare_session, BareClient};
use super::stream::server_config;
use super::{before, percentile, Row, Sizes, Target, Unit};
use tether_tokio::{ServerOptions, TokioRuntime};

/// Broadcasts in flight (sent, not yet read by every client).
const IN_FLIGHT: u64 = 16;
/// Clients connecting at once.
const WAVE: usize = 200;

/// What the readers decode.
#[derive(Deserialize)]
struct Tick {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<TickData>,
}

#[derive(Deserialize)]
struct TickData {
    /// Microseconds since the run's origin when it was broadcast.
    t: u64,
}

/// What the readers share.
struct Shared {
    origin: Instant,
    delivered: AtomicU64,
    progress: Notify,
    latencies: Mutex<Vec<u32>>,
}

/// Connects `n` readers; each counts `tick` frames until `expect`, recording latencies.
async fn readers(
    url: &str,
    n: usize,
    expect: u64,
    shared: Arc<Shared>,
) -> Result<Vec<tokio::task::JoinHandle<Result<(), String>>>, String> {
    let mut sockets: Vec<BareClient> = Vec::with_capacity(n);
    while sockets.len() < n {
        let first = sockets.len();
        let wave = WAVE.min(n - first);
        let opened = join_all(
            (first..first + wave)
                .map(|i| async move { bare_session(url, &format!("bench-{i}")).await }),
        )
        .await;
        for o in opened {
            sockets.push(o?.0);
        }
    }
    let clients = n as u64;
    Ok(sockets
        .into_iter()
        .map(|mut ws| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(expect as usize);
                while (lat.len() as u64) < expect {
                    match ws.next().await {
                        Some(Ok(Message::Text(text))) => {
                            let tick: Tick = serde_json::from_str(text.as_str())
                                .map_err(|e| format!("fan-out frame: {e}"))?;
                            let Some(data) = tick.data.filter(|_| tick.kind == "tick") else {
                                continue;
                            };
                            let now = shared.origin.elapsed().as_micros() as u64;
                            lat.push(now.saturating_sub(data.t).min(u64::from(u32::MAX)) as u32);
                            // The broadcaster looks at whole rounds: wake it once per round.
                            let seen = shared.delivered.fetch_add(1, Ordering::Relaxed) + 1;
                            if seen % clients == 0 {
                                shared.progress.notify_one();
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(format!("fan-out reader: {e}")),
                        None => return Err("fan-out reader: closed".into()),
                    }
                }
                shared
                    .latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(lat);
                // Hold the socket until every reader is done (the run ends by dropping tasks).
                std::future::pending::<()>().await;
                Ok(())
            })
        })
        .collect())
}

/// Broadcasts `count` ticks with `send`, at most `IN_FLIGHT` ahead of the slowest reader on
/// average; returns events per second and the latencies (µs).
async fn drive<F, Fut>(
    clients: u64,
    count: u64,
    shared: &Shared,
    mut send: F,
) -> Result<(f64, Vec<Duration>), String>
where
    F: FnMut(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    for i in 0..count {
        while i.saturating_sub(IN_FLIGHT) * clients > shared.delivered.load(Ordering::Relaxed) {
            shared.progress.notified().await;
        }
        let t = shared.origin.elapsed().as_micros() as u64;
        send(serde_json::json!({ "i": i, "t": t })).await?;
    }
    let total = clients * count;
    let finished = before(Duration::from_secs(60), async {
        while shared.delivered.load(Ordering::Relaxed) < total {
            shared.progress.notified().await;
        }
    })
    .await;
    if finished.is_none() {
        return Err(format!(
            "{} of {total} deliveries within 60 s",
            shared.delivered.load(Ordering::Relaxed)
        ));
    }
    let elapsed = started.elapsed();
    // The readers file their latencies as they finish.
    let mut lat = Vec::new();
    for _ in 0..200 {
        lat = shared
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if lat.len() as u64 >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lat: Vec<Duration> = lat
        .into_iter()
        .map(|us| Duration::from_micros(u64::from(us)))
        .collect();
    lat.sort();
    Ok((total as f64 / elapsed.as_secs_f64(), lat))
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        origin: Instant::now(),
        delivered: AtomicU64::new(0),
        progress: Notify::new(),
        latencies: Mutex::new(Vec::new()),
    })
}

/// tether: `Server::broadcast_nowait`.
async fn tether_fanout(clients: usize, count: u64) -> Result<(f64, Vec<Duration>), String> {
    let bound = tether_tokio::serve(
        TokioRuntime,
        "127.0.0.1:0",
        server_config(),
        ServerOptions::default(),
    )
    .await
    .map_err(|e| format!("serve: {e}"))?;
    let url = format!("ws://{}/ws", bound.local_addr);
    let mut events = bound.events;
    tokio::spawn(async move { while events.next().await.is_some() {} });
    let server = bound.server;
    let shared = shared();
    let result = async {
        let tasks = readers(&url, clients, count, shared.clone()).await?;
        let result = drive(clients as u64, count, &shared, |data| {
            let server = server.clone();
            async move {
                // Queued without waiting for the hub, as the bare broadcaster does.
                match server.broadcast_nowait("tick", data).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("broadcast: {e}")),
                }
            }
        })
        .await;
        tasks.iter().for_each(|t| t.abort());
        result
    }
    .await;
    let _ = before(Duration::from_secs(5), server.shutdown()).await;
    result
}

/// The frame a bare server writes: the same shape as tether's broadcast.
fn bare_frame(data: &serde_json::Value, n: u64) -> String {
    serde_json::json!({
        "type": "tick",
        "data": data,
        "event_id": format!("{n:032x}"),
        "timestamp": n as f64,
        "source": "gateway",
        "target": null,
    })
    .to_string()
}

/// A bare tokio-tungstenite server: answers `hello` with a minimal `hello_ok`, then a writer
/// task per connection feeds what the broadcaster queues and flushes once per batch.
async fn bare_fanout(clients: usize, count: u64) -> Result<(f64, Vec<Duration>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let writers: Arc<Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Message>>>> =
        Arc::new(Mutex::new(Vec::new()));
    let registry = writers.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let registry = registry.clone();
            tokio::spawn(async move {
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(tcp, Some(websocket_config()))
                        .await
                else {
                    return;
                };
                // The hello, then the fixed answer.
                if !matches!(ws.next().await, Some(Ok(Message::Text(_)))) {
                    return;
                }
                let ok = r#"{"type":"hello_ok","session_id":"bare"}"#;
                if ws.send(Message::text(ok)).await.is_err() {
                    return;
                }
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
                registry.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
                let (mut sink, mut stream) = ws.split();
                tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
                while let Some(m) = rx.recv().await {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                    while let Ok(m) = rx.try_recv() {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let url = format!("ws://{addr}/ws");
    let shared = shared();
    let result = async {
        let tasks = readers(&url, clients, count, shared.clone()).await?;
        let mut n = 0;
        let result = drive(clients as u64, count, &shared, |data| {
            n += 1;
            let frame = Message::text(bare_frame(&data, n));
            for w in writers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = w.send(frame.clone());
            }
            async { Ok(()) }
        })
        .await;
        tasks.iter().for_each(|t| t.abort());
        result
    }
    .await;
    acceptor.abort();
    writers.lock().unwrap_or_else(|p| p.into_inner()).clear();
    result
}

/// `--profile-fanout SIDE`: `rounds` runs of one side (`tether`, `bare`) or of both in turn
/// (`pair`), each printed as a line (side, delivered/s, p99).
pub async fn profile(side: &str, sizes: Sizes, rounds: usize) -> Result<(), super::Failure> {
    let (clients, count) = (sizes.fanout_clients, sizes.fanout_broadcasts as u64);
    let sides: &[&str] = match side {
        "tether" => &["tether"],
        "bare" => &["bare"],
        "pair" => &["tether", "bare"],
        _ => {
            return Err(super::Failure::Usage(format!(
                "--profile-fanout {side:?}: use tether, bare or pair"
            )))
        }
    };
    for _ in 0..rounds {
        for side in sides {
            let run = match *side {
                "tether" => tether_fanout(clients, count).await,
                _ => bare_fanout(clients, count).await,
            };
            let (rate, lat) = run.map_err(super::Failure::Runtime)?;
            let p99 = percentile(&lat, 99).as_secs_f64() * 1e6;
            println!("{side} {:.0} delivered/s p99 {p99:.0} µs", rate);
        }
    }
    Ok(())
}

/// The throughput and p99 rows.
pub async fn rows(sizes: Sizes) -> Vec<Row> {
    let (clients, count) = (sizes.fanout_clients, sizes.fanout_broadcasts as u64);
    let rate_name = format!("fan-out 1→{clients}: delivered/s");
    let p99_name = format!("fan-out 1→{clients}: delivery p99");
    let ours = tether_fanout(clients, count).await;
    let bare = bare_fanout(clients, count).await;
    match (ours, bare) {
        (Ok((rate, lat)), Ok((bare_rate, bare_lat))) => {
            let micros = |d: Duration| d.as_secs_f64() * 1e6;
            let note = format!(
                "bare tokio-tungstenite server, same frames; {count} broadcasts, ≤ {IN_FLIGHT} in flight"
            );
            vec![
                Row::measured(
                    rate_name,
                    rate,
                    bare_rate,
                    Unit::PerSecond,
                    Target::None,
                    note.clone(),
                ),
                Row::measured(
                    p99_name,
                    micros(percentile(&lat, 99)),
                    micros(percentile(&bare_lat, 99)),
                    Unit::Micros,
                    Target::None,
                    note,
                ),
            ]
        }
        (Err(e), _) | (_, Err(e)) => {
            vec![Row::failed(rate_name, e.clone()), Row::failed(p99_name, e)]
        }
    }
}
