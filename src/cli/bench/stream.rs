//! Streaming throughput: one tether server publishing to one tether client on 127.0.0.1,
//! against a bare tungstenite pair doing the same JSON encode, decode and sequence check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tether_core::client::{ClientConfig, Event};
use tether_core::server::{ServerConfig, ServerEvent, SessionId};
use tether_driver::{
    Bound, BoxFuture, Client, ClientError, ClientEvents, EventBatch, Runtime, ServeError, Server,
    ServerOptions,
};
use tokio::sync::Notify;

use super::bare::{self, spawn_with};
use super::{before, median, Failure, Row, Sizes, Target, Unit, CONTENT};
use tether_tokio::{ConnectOptions, TokioRuntime};

/// Recovery window of the benchmark server, capped in events (the bound these rows have been
/// measured with since the first table): the publisher stays within half of it. A bigger
/// window only adds cache misses: with 65,536 events (~20 MB of frames) the smol row measured
/// 6% fewer events/s than with 4,096.
pub const WINDOW_EVENTS: usize = 1 << 12;
/// Events published per `publish_batch` call.
pub const BATCH: usize = 256;

/// A runtime adapter of tether, with its bare baseline.
pub trait Adapter: Clone + Send + Sync + 'static {
    /// Its runtime (clock, timers, spawn).
    type Rt: Runtime;
    /// The runtime.
    fn rt(&self) -> Self::Rt;
    /// Starts a tether server on 127.0.0.1:0.
    fn serve(
        &self,
        config: ServerConfig,
        options: ServerOptions,
    ) -> BoxFuture<Result<Bound, ServeError>>;
    /// Starts a tether client.
    fn connect(
        &self,
        url: &str,
        config: ClientConfig,
    ) -> Result<(Client, ClientEvents), ClientError>;
    /// The bare pair's events per second.
    fn bare_stream(&self, n: u64) -> BoxFuture<Result<f64, String>>;
}

/// tether-tokio against tokio-tungstenite.
#[derive(Clone)]
pub struct Tokio;

impl Adapter for Tokio {
    type Rt = tether_tokio::TokioRuntime;
    fn rt(&self) -> Self::Rt {
        tether_tokio::TokioRuntime
    }
    fn serve(
        &self,
        config: ServerConfig,
        options: ServerOptions,
    ) -> BoxFuture<Result<Bound, ServeError>> {
        Box::pin(
            async move { tether_tokio::serve(TokioRuntime, "127.0.0.1:0", config, options).await },
        )
    }
    fn connect(
        &self,
        url: &str,
        config: ClientConfig,
    ) -> Result<(Client, ClientEvents), ClientError> {
        tether_tokio::connect(TokioRuntime, url, config, ConnectOptions::default())
    }
    fn bare_stream(&self, n: u64) -> BoxFuture<Result<f64, String>> {
        Box::pin(bare::tokio_stream(n))
    }
}

/// tether-async-std on async-std or smol, against async-tungstenite on the same executor.
#[derive(Clone)]
pub struct AsyncAdapter<R>(pub R);

impl<R: Runtime> Adapter for AsyncAdapter<R> {
    type Rt = R;
    fn rt(&self) -> R {
        self.0.clone()
    }
    fn serve(
        &self,
        config: ServerConfig,
        options: ServerOptions,
    ) -> BoxFuture<Result<Bound, ServeError>> {
        let rt = self.0.clone();
        Box::pin(async move { tether_async_std::serve(rt, "127.0.0.1:0", config, options).await })
    }
    fn connect(
        &self,
        url: &str,
        config: ClientConfig,
    ) -> Result<(Client, ClientEvents), ClientError> {
        tether_async_std::connect(self.0.clone(), url, config, ConnectOptions::default())
    }
    fn bare_stream(&self, n: u64) -> BoxFuture<Result<f64, String>> {
        Box::pin(bare::async_stream(self.0.clone(), n))
    }
}

/// The benchmark server's configuration: open, a recovery window that holds the publisher's
/// in-flight events.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        recovery_session_events: WINDOW_EVENTS,
        recovery_session_bytes: 256 << 20,
        max_sessions: 100_000,
        max_connections: 100_000,
        ..ServerConfig::default()
    }
}

/// A started server and the session of its one client.
pub struct Pair {
    pub server: Server,
    pub client: Client,
    pub events: ClientEvents,
    pub session: SessionId,
    accepting: BoxFuture<()>,
}

impl Pair {
    /// A tether server and one connected tether client.
    pub async fn start<A: Adapter>(a: &A, config: ClientConfig) -> Result<Pair, String> {
        Self::start_with(a, config, ServerOptions::default()).await
    }

    /// [`Pair::start`] with the server's options.
    pub async fn start_with<A: Adapter>(
        a: &A,
        config: ClientConfig,
        options: ServerOptions,
    ) -> Result<Pair, String> {
        let bound = a
            .serve(server_config(), options)
            .await
            .map_err(|e| format!("serve: {e}"))?;
        let url = format!("ws://{}/ws", bound.local_addr);
        let Bound {
            server,
            mut events,
            accepting,
            ..
        } = bound;
        let (client, client_events) = a.connect(&url, config).map_err(|e| e.to_string())?;
        let session = before(Duration::from_secs(10), async {
            while let Some(e) = events.next().await {
                if let ServerEvent::SessionCreated { session, .. } = e {
                    return Some(session);
                }
            }
            None
        })
        .await
        .flatten()
        .ok_or("the client did not connect within 10 s")?;
        // The hub waits for its event consumer: keep draining.
        a.rt().spawn(Box::pin(
            async move { while events.next().await.is_some() {} },
        ));
        Ok(Pair {
            server,
            client,
            events: client_events,
            session,
            accepting,
        })
    }

    /// Disconnects the client and shuts the server down (bounded waits).
    pub async fn stop(self) {
        stop(self.server, self.client, self.accepting).await;
    }
}

/// Disconnects `client` and shuts `server` down (bounded waits).
pub async fn stop(server: Server, client: Client, accepting: BoxFuture<()>) {
    let _ = before(Duration::from_secs(2), client.disconnect()).await;
    let _ = before(Duration::from_secs(5), server.shutdown()).await;
    let _ = before(Duration::from_secs(2), accepting).await;
}

/// The fields of benchmark event `n`.
pub fn fields(n: u64) -> Vec<(&'static str, Value)> {
    vec![
        ("content", Value::String(CONTENT.to_owned())),
        ("n", json!(n)),
    ]
}

/// The fields of benchmark event `n` as the producer encodes them for `publish_batch` (the
/// bare writer serializes the same fields, plus the ones tether's server stamps).
#[derive(Serialize)]
pub struct Fields<'a> {
    pub content: &'a str,
    pub n: u64,
}

/// Publishes `n` events as fast as the server takes them (`publish_batch`, [`BATCH`] events
/// per call, each encoded with serde by the producer), never more than half the window ahead
/// of what the application has consumed (`delivered`).
pub async fn publish_stream(
    server: &Server,
    session: &SessionId,
    n: u64,
    delivered: &AtomicU64,
    progress: &Notify,
) -> Result<(), String> {
    let window = (WINDOW_EVENTS / 2) as u64;
    let mut published = 0u64;
    while published < n {
        while published.saturating_sub(delivered.load(Ordering::Acquire)) > window {
            progress.notified().await;
        }
        let batch = (n - published).min(BATCH as u64);
        let mut events = EventBatch::with_capacity(BATCH, BATCH * (CONTENT.len() + 32));
        for i in published + 1..=published + batch {
            let fields = Fields {
                content: CONTENT,
                n: i,
            };
            events.push(&fields).map_err(|e| format!("encode: {e}"))?;
        }
        server
            .publish_batch(session, "message", events)
            .await
            .map_err(|e| format!("publish: {e}"))?;
        published += batch;
    }
    Ok(())
}

/// Counts delivered `message` events until `n`, checking their order; the instant of the last.
pub async fn consume(
    mut events: ClientEvents,
    n: u64,
    delivered: Arc<AtomicU64>,
    progress: Arc<Notify>,
) -> Result<(Instant, ClientEvents), String> {
    let mut next = 1u64;
    while next <= n {
        match events.next().await {
            Some(Event::Delivered(d)) if d.kind == "message" => {
                if d.seq != next {
                    return Err(format!("expected seq {next}, got {}", d.seq));
                }
                next += 1;
                if next % 1024 == 0 {
                    delivered.store(next - 1, Ordering::Release);
                    progress.notify_one();
                }
            }
            Some(Event::Lost { from, to }) => return Err(format!("lost {from}..={to}")),
            Some(Event::Closed(r)) => return Err(format!("client closed: {r:?}")),
            Some(_) => {}
            None => return Err("client events ended".into()),
        }
    }
    Ok((Instant::now(), events))
}

/// One tether streaming run: events per second from the first publish to the last delivery.
pub async fn tether_stream<A: Adapter>(a: &A, n: u64) -> Result<f64, String> {
    tether_stream_with(a, n, ServerOptions::default()).await
}

/// [`tether_stream`] with the server's options.
pub async fn tether_stream_with<A: Adapter>(
    a: &A,
    n: u64,
    options: ServerOptions,
) -> Result<f64, String> {
    let pair = Pair::start_with(a, ClientConfig::new("bench"), options).await?;
    let Pair {
        server,
        client,
        events,
        session,
        accepting,
    } = pair;
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let consumer = spawn_with(
        &a.rt(),
        consume(events, n, delivered.clone(), progress.clone()),
    );
    let started = Instant::now();
    // The producer is a task on the runtime, as the bare pair's writer is.
    let publisher = {
        let server = server.clone();
        spawn_with(&a.rt(), async move {
            publish_stream(&server, &session, n, &delivered, &progress).await
        })
    };
    let published = before(Duration::from_secs(60), publisher).await;
    let consumed = before(Duration::from_secs(60), consumer).await;
    let result = match (published, consumed) {
        (None, _) => Err("publisher timed out".into()),
        (Some(Err(_)), _) => Err("publisher task lost".into()),
        (Some(Ok(Err(e))), _) => Err(e),
        (_, None) => Err("timed out".into()),
        (_, Some(Err(_))) => Err("consumer task lost".into()),
        (_, Some(Ok(Err(e)))) => Err(e),
        (Some(Ok(Ok(()))), Some(Ok(Ok((done, events))))) => {
            drop(events);
            Ok(n as f64 / done.saturating_duration_since(started).as_secs_f64())
        }
    };
    stop(server, client, accepting).await;
    result
}

/// Medians of interleaved rounds: tether's figure, the baseline's, and the per-round ratio.
pub type Paired = (f64, f64, f64);

/// The medians of paired rounds.
fn paired(ours: Vec<f64>, bare: Vec<f64>) -> Paired {
    let ratios = ours.iter().zip(&bare).map(|(o, b)| o / b).collect();
    (median(ours), median(bare), median(ratios))
}

/// Alternating rounds of tether and bare runs (which goes first alternates too).
pub async fn compare<A: Adapter>(a: &A, n: u64, rounds: usize) -> Result<Paired, String> {
    let (ours, bare) = rounds_of(a.clone(), n, rounds).await?;
    Ok(paired(ours, bare))
}

/// The figures of [`compare`]'s rounds: tether's and the baseline's, round by round.
async fn rounds_of<A: Adapter>(
    a: A,
    n: u64,
    rounds: usize,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        if round % 2 == 0 {
            ours.push(tether_stream(&a, n).await?);
            bare.push(a.bare_stream(n).await?);
        } else {
            bare.push(a.bare_stream(n).await?);
            ours.push(tether_stream(&a, n).await?);
        }
    }
    Ok((ours, bare))
}

/// Alternating rounds of tether with metrics on and off (which goes first alternates too);
/// the median of each.
pub async fn compare_metrics<A: Adapter>(a: &A, n: u64, rounds: usize) -> Result<Paired, String> {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let with = |metrics| ServerOptions::default().metrics(metrics);
    for round in 0..rounds.max(1) {
        if round % 2 == 0 {
            on.push(tether_stream_with(a, n, with(true)).await?);
            off.push(tether_stream_with(a, n, with(false)).await?);
        } else {
            off.push(tether_stream_with(a, n, with(false)).await?);
            on.push(tether_stream_with(a, n, with(true)).await?);
        }
    }
    Ok(paired(on, off))
}

fn row(name: &str, baseline: &str, measured: Result<Paired, String>) -> Row {
    row_at_least(name, baseline, measured, 0.8)
}

fn row_at_least(name: &str, baseline: &str, measured: Result<Paired, String>, target: f64) -> Row {
    match measured {
        Ok((ours, bare, ratio)) => Row::measured(
            name,
            ours,
            bare,
            Unit::PerSecond,
            Target::AtLeast(target),
            baseline,
        )
        .with_paired_ratio(ratio),
        Err(e) => Row::failed(name, e),
    }
}

/// The three streaming rows.
pub async fn rows(sizes: Sizes) -> Vec<Row> {
    let (n, rounds) = (sizes.stream_events, sizes.stream_rounds);
    let note = |baseline: &str| format!("{baseline}; ratio: median of {rounds} paired rounds");
    let tokio_row = row(
        "stream 1→1, tokio",
        &note("bare tokio-tungstenite pair, same JSON work"),
        compare(&Tokio, n, rounds).await,
    );
    let async_std_row = row(
        "stream 1→1, async-std",
        &note("bare async-tungstenite pair on async-std"),
        on_other_runtime(move || {
            async_std::task::block_on(compare(
                &AsyncAdapter(tether_async_std::AsyncStdRuntime),
                n,
                rounds,
            ))
        })
        .await,
    );
    let smol_row = row(
        "stream 1→1, smol",
        &note("bare async-tungstenite pair on smol"),
        on_other_runtime(move || {
            smol::block_on(compare(
                &AsyncAdapter(tether_async_std::SmolRuntime),
                n,
                rounds,
            ))
        })
        .await,
    );
    // More rounds than the other rows: the two figures are close, and noise is not.
    let metrics_rounds = METRICS_ROUNDS.min(rounds * 5);
    let metrics_row = row_at_least(
        "stream 1→1, tokio, metrics on vs off",
        &format!(
            "the same server with metrics off (ServerOptions); ratio: median of \
             {metrics_rounds} paired rounds"
        ),
        compare_metrics(&Tokio, n, metrics_rounds).await,
        0.95,
    );
    vec![tokio_row, async_std_row, smol_row, metrics_row]
}

/// Interleaved rounds of the metrics on/off row.
const METRICS_ROUNDS: usize = 25;

/// Runs a blocking `block_on` of another runtime off the tokio workers.
pub async fn on_other_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("benchmark thread: {e}"))?
}

/// `--profile-stream SIDE-RUNTIME`: `rounds` streaming runs of one side only, each rate on a
/// line, so that a profiler sees that side alone; or, for `pair-RUNTIME`, the table's paired
/// rounds one by one and their median ratio, to compare two builds on a noisy machine.
pub async fn profile(which: &str, n: u64, rounds: usize) -> Result<(), Failure> {
    let (side, runtime) = which.split_once('-').unwrap_or((which, ""));
    let side = match side {
        "tether" => Side::Tether,
        "bare" => Side::Bare,
        "pair" => Side::Pair,
        _ => return Err(profile_usage(which)),
    };
    let label = which.to_owned();
    let lines = match runtime {
        "tokio" => profile_lines(Tokio, side, label, n, rounds).await,
        "async-std" => {
            let a = AsyncAdapter(tether_async_std::AsyncStdRuntime);
            on_other_runtime(move || {
                async_std::task::block_on(profile_lines(a, side, label, n, rounds))
            })
            .await
        }
        "smol" => {
            let a = AsyncAdapter(tether_async_std::SmolRuntime);
            on_other_runtime(move || smol::block_on(profile_lines(a, side, label, n, rounds))).await
        }
        _ => return Err(profile_usage(which)),
    };
    for line in lines.map_err(Failure::Runtime)? {
        println!("{line}");
    }
    Ok(())
}

/// What `--profile-stream` runs.
#[derive(Clone, Copy)]
enum Side {
    Tether,
    Bare,
    Pair,
}

/// The output lines of `--profile-stream` on `a`'s runtime.
async fn profile_lines<A: Adapter>(
    a: A,
    side: Side,
    label: String,
    n: u64,
    rounds: usize,
) -> Result<Vec<String>, String> {
    let million = |rate: f64| rate / 1e6;
    let mut lines = Vec::new();
    match side {
        Side::Tether | Side::Bare => {
            for _ in 0..rounds {
                let rate = match side {
                    Side::Tether => tether_stream(&a, n).await?,
                    _ => a.bare_stream(n).await?,
                };
                lines.push(format!("{label}: {:.3} M/s", million(rate)));
            }
        }
        Side::Pair => {
            let (ours, bare) = rounds_of(a, n, rounds).await?;
            for (o, b) in ours.iter().zip(&bare) {
                let (mo, mb) = (million(*o), million(*b));
                lines.push(format!(
                    "tether {mo:.3} M/s  bare {mb:.3} M/s  {:.2}×",
                    o / b
                ));
            }
            let (o, b, ratio) = paired(ours, bare);
            let (mo, mb) = (million(o), million(b));
            lines.push(format!(
                "median: tether {mo:.3} M/s  bare {mb:.3} M/s  ratio {ratio:.3}×"
            ));
        }
    }
    Ok(lines)
}

fn profile_usage(which: &str) -> Failure {
    Failure::Usage(format!(
        "--profile-stream {which:?}: use tether|bare|pair-tokio|async-std|smol (e.g. tether-smol)"
    ))
}
