//! `tether demo`: a server, a client and a fault-injecting proxy between them, in one process.
//! The server publishes numbered events; the proxy cuts the connection mid-frame, swallows
//! frames and duplicates frames at seeded points; the client must still deliver every event
//! exactly once, in order. Ends with a summary table; exit 0 iff nothing was lost or duplicated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tether_core::backoff::BackoffConfig;
use tether_core::client::State;
use tether_core::rng::Rng;
use tether_tokio::{
    connect, serve, Bound, Client, ClientConfig, ConnectOptions, Event, Server, ServerConfig,
    ServerEvent, ServerOptions, SessionId, TokioRuntime,
};

use super::proxy::{Fault, Injected, Proxy};
use super::{parse_duration, parse_rate, Failure, Pacer};

const TOKEN: &str = "tether-demo";

/// Options of `tether demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events to publish.
    #[arg(long, value_name = "N", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub events: u64,
    /// Connection cuts (mid-frame) to inject.
    #[arg(long, value_name = "K", default_value_t = 20)]
    pub cuts: u32,
    /// Live frames to swallow (each makes a sequence gap the client must repair).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub drops: u32,
    /// Live frames to send twice (the client must drop the copies).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub duplicates: u32,
    /// Publishing rate. Default: events/10 per second, at least 1000/s (about 10 s).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Seed of the fault schedule (which events are hit, where frames are torn).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Give up (exit 1) if not everything arrived by then.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What the client side saw.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    /// The next event number expected (events are numbered from 1).
    next: u64,
    duplicates_delivered: u64,
    out_of_order: u64,
    gaps: u64,
    lost: u64,
    lost_ranges: u64,
    reconnects: u64,
    connections: u64,
    latencies: Vec<Duration>,
}

/// Runs the demo and prints the table.
pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    let rate = args.rate.unwrap_or((args.events as f64 / 10.0).max(1000.0));
    let config = ServerConfig {
        agents: vec!["echo".into()],
        auth_token: Some(TOKEN.into()),
        // Keep every event: the demo is about resume, not about a too-small buffer.
        recovery_session_bytes: 1 << 30,
        recovery_total_bytes: 1 << 30,
        ..ServerConfig::default()
    };
    let Bound {
        server,
        mut events,
        local_addr,
        accepting,
    } = serve(
        TokioRuntime,
        "127.0.0.1:0",
        config,
        ServerOptions::default(),
    )
    .await
    .map_err(|e| Failure::Runtime(format!("cannot start the demo server: {e}")))?;
    let proxy = Proxy::start(local_addr, args.seed)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot start the demo proxy: {e}")))?;
    eprintln!(
        "tether demo: server {local_addr}, client via proxy {}; {} events at {rate:.0}/s; \
         faults: {} cuts, {} drops, {} duplicates (seed {})",
        proxy.url(),
        args.events,
        args.cuts,
        args.drops,
        args.duplicates,
        args.seed
    );

    let client_config = ClientConfig {
        backoff: BackoffConfig {
            // Cuts come every few hundred ms: retry within 10 ms (each completed handshake
            // restarts the schedule).
            initial: Duration::from_millis(10),
            max: Duration::from_millis(250),
            ..BackoffConfig::default()
        },
        seed: Some(tether_core::rng::seed_from_u64(args.seed)),
        ..ClientConfig::new("echo")
    };
    let (client, mut client_events) = connect(
        TokioRuntime,
        proxy.url(),
        client_config,
        ConnectOptions::default().token(TOKEN),
    )
    .map_err(|e| Failure::Runtime(format!("cannot start the demo client: {e}")))?;

    let session = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            if let ServerEvent::SessionCreated { session, .. } = event {
                return Some(session);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| Failure::Runtime("the demo client did not connect within 10 s".into()))?;
    // The hub waits for its event consumer: keep draining.
    let drain = tokio::spawn(async move { while events.next().await.is_some() {} });

    let schedule = fault_schedule(&args);
    let proxy = Arc::new(proxy);
    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish(
        server.clone(),
        session,
        args.events,
        rate,
        schedule,
        proxy.clone(),
        published.clone(),
    ));

    let duplicates = DuplicateCounter::start(client.clone());
    let bar = progress_bar(args.events);
    let started = Instant::now();
    let deadline = tokio::time::sleep(args.timeout);
    tokio::pin!(deadline);
    let mut tally = Tally {
        next: 1,
        ..Tally::default()
    };
    // Start of the current outage (the cut that caused it), until the next delivered event.
    let mut outage: Option<Instant> = None;
    let mut last_delivery = Instant::now();
    let mut timed_out = false;
    let mut closed = None;
    while tally.delivered < args.events {
        let event = tokio::select! {
            e = client_events.next() => e,
            () = &mut deadline => { timed_out = true; break }
        };
        let Some(event) = event else { break };
        match event {
            Event::Delivered(d) if d.kind == "message" => {
                let now = Instant::now();
                if let Some(cut) = outage.take() {
                    tally.latencies.push(now.saturating_duration_since(cut));
                }
                last_delivery = now;
                let n = serde_json::from_str::<serde_json::Value>(&d.payload)
                    .ok()
                    .and_then(|v| v["n"].as_u64())
                    .unwrap_or(0);
                tally.delivered += 1;
                if n == tally.next {
                    tally.next += 1;
                } else if n < tally.next {
                    tally.duplicates_delivered += 1;
                } else {
                    tally.out_of_order += 1;
                    tally.next = n + 1;
                }
                bar.set_position(tally.delivered);
            }
            Event::StateChanged(State::Disconnected { .. }) if outage.is_none() => {
                // The cut that tore this connection, if the proxy made one since the last
                // delivery; otherwise (heartbeat, server close) the moment we noticed.
                let cut = proxy.last_cut().filter(|c| *c >= last_delivery);
                outage = Some(cut.unwrap_or_else(Instant::now));
            }
            Event::StateChanged(State::Connected { .. }) => {
                tally.connections += 1;
                if tally.connections > 1 {
                    tally.reconnects += 1;
                }
                bar.set_message(status(&tally, proxy.injected()));
            }
            Event::Gap { .. } => {
                tally.gaps += 1;
                bar.set_message(status(&tally, proxy.injected()));
            }
            Event::Lost { from, to } => {
                tally.lost += to.saturating_sub(from) + 1;
                tally.lost_ranges += 1;
            }
            Event::Closed(reason) => {
                closed = Some(reason);
                break;
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let dropped = duplicates.finish().await;
    if tally.delivered >= args.events {
        // Everything arrived, so the publisher is returning from its last publish.
        let _ = tokio::time::timeout(Duration::from_secs(5), publisher).await;
    } else {
        publisher.abort(); // the run has failed: no point publishing on
    }
    let published = published.load(Ordering::SeqCst);
    client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), accepting).await;
    drain.abort();

    let injected = proxy.injected();
    let exact = tally.delivered == args.events
        && published == args.events
        && tally.next == args.events + 1
        && tally.duplicates_delivered == 0
        && tally.out_of_order == 0
        && tally.lost == 0;
    print_summary(&tally, dropped, published, injected, elapsed);
    if exact {
        println!("result: OK: every published event was delivered exactly once, in order");
        return Ok(());
    }
    let why = if timed_out {
        format!("timed out after {:?}", args.timeout)
    } else if let Some(reason) = closed {
        format!("the client stopped: {reason:?}")
    } else {
        "events were lost, duplicated or reordered".into()
    };
    println!("result: FAILED: {why}");
    Err(Failure::Runtime(format!("demo failed: {why}")))
}

/// Sums the client's dropped-duplicate counter over all its connections. The core's
/// `ClientStats::duplicates` starts again from zero at each handshake (its sequence tracker is
/// replaced), so it is sampled often and a drop in the figure carries the last value over. A
/// duplicate dropped in the few ms between the last sample and a reconnect can be missed.
struct DuplicateCounter {
    task: tokio::task::JoinHandle<()>,
    total: Arc<Mutex<(u64, u64)>>,
    client: Client,
}

impl DuplicateCounter {
    fn start(client: Client) -> Self {
        // (carried over from finished connections, last sample)
        let total = Arc::new(Mutex::new((0u64, 0u64)));
        let (c, t) = (client.clone(), total.clone());
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(5));
            loop {
                ticker.tick().await;
                let Ok(stats) = c.stats().await else { return };
                Self::record(&t, stats.duplicates);
            }
        });
        Self {
            task,
            total,
            client,
        }
    }

    fn record(total: &Mutex<(u64, u64)>, now: u64) {
        let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
        if now < t.1 {
            t.0 += t.1;
        }
        t.1 = now;
    }

    async fn finish(self) -> u64 {
        self.task.abort();
        if let Ok(stats) = self.client.stats().await {
            Self::record(&self.total, stats.duplicates);
        }
        let t = self.total.lock().unwrap_or_else(|p| p.into_inner());
        t.0 + t.1
    }
}

/// Seeded fault positions: faults spread over the first 90% of the stream (so each has live
/// events left to hit), with jitter, in a shuffled order of kinds.
fn fault_schedule(args: &DemoArgs) -> Vec<(u64, Fault)> {
    let mut rng = Rng::from_u64(args.seed);
    let mut kinds: Vec<Fault> = std::iter::repeat_n(Fault::Cut, args.cuts as usize)
        .chain(std::iter::repeat_n(Fault::Drop, args.drops as usize))
        .chain(std::iter::repeat_n(
            Fault::Duplicate,
            args.duplicates as usize,
        ))
        .collect();
    for i in (1..kinds.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        kinds.swap(i, j);
    }
    let span = args.events as f64 * 0.9;
    let slot = span / (kinds.len() as f64 + 1.0);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let jitter = (rng.unit_f64() - 0.5) * slot * 0.5;
            let at = (slot * (i as f64 + 1.0) + jitter).round().max(1.0) as u64;
            (at.min(args.events), kind)
        })
        .collect()
}

/// Publishes events 1..=count at `rate`, arming each fault as its position is published, and
/// counts them in `published`.
async fn publish(
    server: Server,
    session: SessionId,
    count: u64,
    rate: f64,
    schedule: Vec<(u64, Fault)>,
    proxy: Arc<Proxy>,
    published: Arc<AtomicU64>,
) {
    let mut pacer = Pacer::new(rate);
    let mut faults = schedule.into_iter().peekable();
    let mut n = 0;
    while n < count {
        let due = pacer.next_batch().await.min(count - n);
        for _ in 0..due {
            n += 1;
            let sent = server
                .publish(&session, "message", vec![("n".to_owned(), json!(n))])
                .await;
            if sent.is_err() {
                return;
            }
            published.store(n, Ordering::SeqCst);
            while faults.peek().is_some_and(|(at, _)| *at <= n) {
                if let Some((_, fault)) = faults.next() {
                    proxy.arm(fault);
                }
            }
        }
    }
}

/// A bar on stderr; indicatif hides it when stderr is not a terminal.
fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events  {msg}",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn status(tally: &Tally, injected: Injected) -> String {
    format!(
        "cuts {} · reconnects {} · gaps {}",
        injected.cuts, tally.reconnects, tally.gaps
    )
}

fn print_summary(
    tally: &Tally,
    dropped: u64,
    published: u64,
    injected: Injected,
    elapsed: Duration,
) {
    // A gap the server could not fill is reported as one lost range.
    let repaired = tally.gaps.saturating_sub(tally.lost_ranges);
    let mut sorted = tally.latencies.clone();
    sorted.sort();
    let rows: Vec<(&str, String)> = vec![
        ("events published", published.to_string()),
        ("events delivered", tally.delivered.to_string()),
        ("lost", tally.lost.to_string()),
        (
            "duplicated (delivered twice)",
            tally.duplicates_delivered.to_string(),
        ),
        ("out of order", tally.out_of_order.to_string()),
        ("duplicates dropped", dropped.to_string()),
        ("gaps repaired", format!("{repaired} of {}", tally.gaps)),
        ("reconnects", tally.reconnects.to_string()),
        (
            "faults injected",
            format!(
                "{} cuts, {} frames dropped, {} frames duplicated",
                injected.cuts, injected.drops, injected.duplicates
            ),
        ),
        (
            "resume latency p50",
            percentile(&sorted, 50).map_or("n/a".into(), ms),
        ),
        (
            "resume latency p99",
            percentile(&sorted, 99).map_or("n/a".into(), ms),
        ),
        ("elapsed", format!("{:.1} s", elapsed.as_secs_f64())),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{:-<1$}", "", width + 24);
    for (key, value) in rows {
        println!("{key:<width$}  {value}");
    }
    println!("{:-<1$}", "", width + 24);
}

/// Nearest-rank percentile.
fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(events: u64, cuts: u32, seed: u64) -> DemoArgs {
        DemoArgs {
            events,
            cuts,
            drops: 3,
            duplicates: 2,
            rate: None,
            seed,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_fault_schedule_is_seeded_in_range_and_complete() {
        let a = fault_schedule(&args(10_000, 20, 7));
        assert_eq!(a, fault_schedule(&args(10_000, 20, 7)));
        assert_ne!(a, fault_schedule(&args(10_000, 20, 8)));
        assert_eq!(a.len(), 25);
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(a.iter().all(|(at, _)| (1..=9_000).contains(at)));
        assert_eq!(a.iter().filter(|(_, f)| *f == Fault::Cut).count(), 20);
        // Tiny runs still get in-range positions.
        assert!(fault_schedule(&args(1, 3, 1))
            .iter()
            .all(|(at, _)| *at == 1));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&d, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&d[..1], 99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50), None);
    }
}
