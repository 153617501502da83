//! `tether proxy`: the fault-injecting proxy ([`tether_testkit::proxy`]) as a command, and the demo's
//! proxy, whose faults the demo arms as it publishes.
//!
//! For the demo: armed faults are applied, one each, to the next live `message` frame that
//! passes (a few frames apart, so a drop right before a cut cannot go unnoticed).
//! - [`Fault::Cut`] tears the connection in the middle of that frame (a seeded number of its
//!   bytes get through), the way a dying link does: the client must resume its session.
//! - [`Fault::Drop`] swallows the frame: the client sees a sequence gap and must repair it.
//! - [`Fault::Duplicate`] sends it twice: the client must drop the copy.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use tether_core::rng::Rng;
use tether_testkit::proxy::{
    self as lib, Direction, EventInfo, FaultKind, FaultProxy, Plan, Schedule,
};

use super::{parse_duration, Failure};

/// Live frames that pass untouched after a fault before the next armed one applies, so two
/// faults never land on neighbouring frames (a drop right before a cut would go unnoticed).
const FAULT_SPACING: u64 = 3;

/// One fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Cut the connection mid-frame.
    Cut,
    /// Swallow one live event frame.
    Drop,
    /// Send one live event frame twice.
    Duplicate,
}

/// How many faults were actually injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Connections cut.
    pub cuts: u64,
    /// Frames swallowed.
    pub drops: u64,
    /// Frames duplicated.
    pub duplicates: u64,
}

/// The demo's running proxy; it stops when dropped.
pub struct Proxy {
    inner: FaultProxy,
    armed: Arc<Mutex<Armed>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(target: SocketAddr, seed: u64) -> std::io::Result<Proxy> {
        let armed = Arc::new(Mutex::new(Armed {
            queue: VecDeque::new(),
            untouched: FAULT_SPACING,
            rng: Rng::from_u64(seed),
        }));
        let plan = ArmedPlan(armed.clone());
        let inner = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), target, plan).await?;
        Ok(Proxy { inner, armed })
    }

    /// The WebSocket URL that goes through the proxy.
    pub fn url(&self) -> String {
        self.inner.url()
    }

    /// Queues a fault for the next live event frame without one.
    pub fn arm(&self, fault: Fault) {
        lock(&self.armed).queue.push_back(fault);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> Injected {
        let mut counts = Injected::default();
        for i in self.inner.injected() {
            match i.fault {
                lib::Fault::Cut { .. } => counts.cuts += 1,
                lib::Fault::Drop => counts.drops += 1,
                lib::Fault::Duplicate => counts.duplicates += 1,
                _ => {}
            }
        }
        counts
    }

    /// When the last cut happened.
    pub fn last_cut(&self) -> Option<Instant> {
        self.inner
            .injected()
            .iter()
            .rev()
            .find(|i| matches!(i.fault, lib::Fault::Cut { .. }))
            .map(|i| i.at)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Faults waiting for a live frame.
struct Armed {
    queue: VecDeque<Fault>,
    /// Live frames passed since the last fault.
    untouched: u64,
    /// Where cuts tear their frame.
    rng: Rng,
}

/// The demo's plan: the armed faults, on live `message` frames.
struct ArmedPlan(Arc<Mutex<Armed>>);

impl Plan for ArmedPlan {
    fn fault_for(&mut self, event: &EventInfo) -> Option<lib::Fault> {
        if event.kind != "message" {
            return None; // replays and responses pass
        }
        let mut armed = lock(&self.0);
        if armed.untouched < FAULT_SPACING {
            armed.untouched += 1;
            return None;
        }
        let fault = armed.queue.pop_front();
        armed.untouched = if fault.is_some() { 0 } else { FAULT_SPACING };
        Some(match fault? {
            Fault::Cut => lib::Fault::Cut {
                kept_permille: 1 + (armed.rng.next_u64() % 999) as u16,
            },
            Fault::Drop => lib::Fault::Drop,
            Fault::Duplicate => lib::Fault::Duplicate,
        })
    }
}

/// Options of `tether proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to listen on, e.g. 127.0.0.1:9000 (port 0 picks a free one).
    pub listen: String,
    /// The gateway to forward to, HOST:PORT (e.g. 127.0.0.1:8765).
    pub upstream: String,
    /// Seed of the fault positions and tear points: the same seed, the same faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cut the connection mid-frame once in every N events.
    #[arg(long, value_name = "N")]
    pub cut_every: Option<u64>,
    /// Swallow one event frame in every N.
    #[arg(long, value_name = "N")]
    pub drop: Option<u64>,
    /// Send one event frame in every N twice.
    #[arg(long, value_name = "N")]
    pub duplicate: Option<u64>,
    /// Hold one event frame in every N for DURATION, e.g. 100:250ms.
    #[arg(long, value_name = "N:DURATION", value_parser = parse_delay)]
    pub delay: Option<(u64, Duration)>,
    /// Once in every N events, stop carrying bytes one way (down: server → client, the
    /// default; up: client → server) until an end closes the connection, e.g. 500:up.
    #[arg(long, value_name = "N[:down|up]", value_parser = parse_half_open)]
    pub half_open: Option<(u64, Direction)>,
    /// More faults from a JSON file: a list of {"fault": "cut"|"drop"|"duplicate"|"delay"|
    /// "half_open", "seq": N or "every": N, "ms": M (delay), "direction": "down"|"up"}.
    #[arg(long, value_name = "FILE")]
    pub schedule: Option<PathBuf>,
    /// Print each fault as a JSON line (the replayable log: same seed, same lines).
    #[arg(long)]
    pub json: bool,
}

fn parse_delay(text: &str) -> Result<(u64, Duration), String> {
    let (n, d) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected N:DURATION, e.g. 100:250ms"))?;
    Ok((parse_period(n)?, parse_duration(d)?))
}

fn parse_half_open(text: &str) -> Result<(u64, Direction), String> {
    let (n, dir) = text.split_once(':').unwrap_or((text, "down"));
    let dir = match dir {
        "down" => Direction::Down,
        "up" => Direction::Up,
        other => return Err(format!("{other:?}: the direction is down or up")),
    };
    Ok((parse_period(n)?, dir))
}

fn parse_period(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?}: expected a number of events, 1 or more")),
    }
}

impl ProxyArgs {
    /// The schedule the flags and the file describe.
    fn schedule(&self) -> Result<Schedule, Failure> {
        let usage = |e: lib::ScheduleError| Failure::Usage(e.to_string());
        let mut s = Schedule::new(self.seed);
        let rules = [
            self.half_open.map(|(n, d)| (n, FaultKind::HalfOpen(d))),
            self.cut_every.map(|n| (n, FaultKind::Cut)),
            self.drop.map(|n| (n, FaultKind::Drop)),
            self.duplicate.map(|n| (n, FaultKind::Duplicate)),
            self.delay.map(|(n, d)| (n, FaultKind::Delay(d))),
        ];
        for (n, kind) in rules.into_iter().flatten() {
            s = s.every(n, kind).map_err(usage)?;
        }
        if let Some(path) = &self.schedule {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!("cannot read the schedule {}: {e}", path.display()))
            })?;
            s = s
                .with_entries(&text)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        }
        Ok(s)
    }
}

/// Runs the proxy until SIGINT/SIGTERM, printing each fault as it is injected.
pub async fn run(args: ProxyArgs) -> Result<(), Failure> {
    let resolve = |what: &str, addr: &str| {
        std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| Failure::Usage(format!("{what} {addr:?} is not HOST:PORT")))
    };
    let listen = resolve("listen address", &args.listen)?;
    let upstream = resolve("upstream", &args.upstream)?;
    let schedule = args.schedule()?;
    if schedule.is_empty() {
        eprintln!("no faults asked for (see --cut-every, --drop, ...): forwarding only");
    }
    let proxy = FaultProxy::start(listen, upstream, schedule)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {listen}: {e}")))?;
    let mut faults = proxy.watch();
    if args.json {
        let banner = serde_json::json!({
            "proxy": proxy.url(), "upstream": upstream.to_string(), "seed": args.seed,
        });
        println!("{banner}");
    } else {
        println!(
            "proxying {} -> {upstream} (seed {}); clients connect to {}",
            proxy.local_addr(),
            args.seed,
            proxy.url()
        );
    }
    let print = |fault: &tether_testkit::proxy::Injected| {
        if args.json {
            println!("{}", fault.to_json());
        } else {
            println!("{fault} (connection {})", fault.connection);
        }
    };
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            Some(fault) = faults.recv() => print(&fault),
            () = &mut stop => break,
        }
    }
    // Faults injected just before the signal are still printed.
    while let Ok(fault) = faults.try_recv() {
        print(&fault);
    }
    Ok(())
}
