//! `tether bench`: end-to-end figures, each printed as a ratio against a baseline measured in the
//! same run (these machines are noisy; absolute numbers from another run mean little).
//!
//! Rows: streaming throughput (tokio, async-std, smol) against bare tungstenite pairs doing the
//! same JSON work, reconnect latency against a bare TCP connect + WebSocket handshake, the RSS of
//! idle sessions against bare tuned tokio-tungstenite connections, the real PraisonAI gateway
//! (its server and tether's, tether's client and a bare one), and a broadcast fan-out against a
//! bare tokio-tungstenite server. `--quick` runs every row at tiny sizes and enforces nothing.

mod bare;
mod fanout;
mod memory;
mod peer;
mod reconnect;
mod redis;
mod stream;

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Args;

use super::Failure;

/// Options of `tether bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Every row at tiny sizes; targets are not enforced (checks that the bench runs).
    #[arg(long)]
    pub quick: bool,
    /// Only the rows of these groups (comma-separated): stream, reconnect, memory, praisonai,
    /// fanout, redis.
    #[arg(long, value_delimiter = ',', value_name = "GROUPS")]
    pub only: Vec<String>,
    /// Idle sessions of the memory row.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub idle_sessions: u64,
    /// Internal: run the server side of the memory row in this process (tether | bare).
    #[arg(long, hide = true, value_name = "KIND")]
    pub memory_server: Option<String>,
    /// Internal, for profilers: only streaming runs of one side on one runtime, printed one a
    /// line (`tether|bare`-`tokio|async-std|smol`, e.g. `tether-smol`), for `--rounds` runs;
    /// `pair-RUNTIME` runs the table's paired rounds and prints each (to compare two builds).
    #[arg(long, hide = true, value_name = "SIDE-RUNTIME")]
    pub profile_stream: Option<String>,
    /// Internal, for profilers: only the fan-out runs of one side (`tether` or `bare`), or
    /// `pair` for alternating runs of both, printed one a line, for `--rounds` runs.
    #[arg(long, hide = true, value_name = "SIDE")]
    pub profile_fanout: Option<String>,
    /// Internal: runs of `--profile-stream` and `--profile-fanout`.
    #[arg(long, hide = true, value_name = "N", default_value_t = 20)]
    pub rounds: usize,
}

/// How big each measurement is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Events per streaming run.
    stream_events: u64,
    /// Events of the longer single streaming runs of the PraisonAI and Redis rows.
    long_stream_events: u64,
    /// Alternating tether/baseline rounds of the PraisonAI and Redis rows.
    rounds: usize,
    /// Alternating tether/baseline rounds per streaming row (the median per-round ratio is
    /// kept).
    stream_rounds: usize,
    /// Reconnects measured (and as many bare handshakes).
    reconnects: usize,
    /// Idle sessions of the memory row.
    idle: usize,
    /// PraisonAI control-port publish commands, and events per command (≤ 5000).
    peer_commands: u32,
    peer_batch: u32,
    /// Fan-out sessions and broadcasts.
    fanout_clients: usize,
    fanout_broadcasts: usize,
}

impl Sizes {
    fn new(args: &BenchArgs) -> Self {
        if args.quick {
            Sizes {
                stream_events: 2_000,
                long_stream_events: 2_000,
                rounds: 1,
                stream_rounds: 1,
                reconnects: 10,
                idle: 50,
                peer_commands: 1,
                peer_batch: 200,
                fanout_clients: 20,
                fanout_broadcasts: 20,
            }
        } else {
            Sizes {
                stream_events: 100_000,
                long_stream_events: 200_000,
                rounds: 5,
                stream_rounds: 15,
                reconnects: 300,
                idle: args.idle_sessions as usize,
                peer_commands: 4,
                peer_batch: 5_000,
                fanout_clients: 1_000,
                fanout_broadcasts: 500,
            }
        }
    }
}

/// What a row's ratio must satisfy.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// tether / baseline ≥ x (throughput).
    AtLeast(f64),
    /// tether / baseline ≤ x (latency).
    AtMost(f64),
    /// An absolute bound on the tether figure, in the row's unit (memory).
    ValueAtMost(f64, &'static str),
    /// Reported, no target.
    None,
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    name: String,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    Measured {
        tether: f64,
        baseline: f64,
        /// tether / baseline, or the median of paired per-round ratios (`with_paired_ratio`).
        ratio: f64,
        unit: Unit,
        target: Target,
        note: String,
    },
    Skipped(String),
    Failed(String),
}

/// How a figure prints.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// Events (or frames) per second.
    PerSecond,
    /// Microseconds.
    Micros,
    /// Kilobytes per session.
    KiloBytes,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::PerSecond if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
            Unit::PerSecond if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
            Unit::PerSecond => format!("{v:.0} /s"),
            Unit::Micros if v >= 10_000.0 => format!("{:.1} ms", v / 1000.0),
            Unit::Micros => format!("{v:.0} µs"),
            Unit::KiloBytes => format!("{v:.1} KB"),
        }
    }
}

impl Row {
    fn measured(
        name: impl Into<String>,
        tether: f64,
        baseline: f64,
        unit: Unit,
        target: Target,
        note: impl Into<String>,
    ) -> Self {
        Row {
            name: name.into(),
            outcome: Outcome::Measured {
                tether,
                baseline,
                ratio: tether / baseline,
                unit,
                target,
                note: note.into(),
            },
        }
    }

    /// The ratio is the median of the per-round ratios of interleaved runs (each run of
    /// tether next to a run of the baseline), which cancels the machine's slow drift better
    /// than the ratio of the two medians.
    fn with_paired_ratio(mut self, paired: f64) -> Self {
        if let Outcome::Measured { ratio, .. } = &mut self.outcome {
            *ratio = paired;
        }
        self
    }

    fn skipped(name: impl Into<String>, why: impl Into<String>) -> Self {
        Row {
            name: name.into(),
            outcome: Outcome::Skipped(why.into()),
        }
    }

    fn failed(name: impl Into<String>, why: impl Into<String>) -> Self {
        Row {
            name: name.into(),
            outcome: Outcome::Failed(why.into()),
        }
    }

    /// None = no target (or skipped); Some(false) = missed.
    fn verdict(&self) -> Option<bool> {
        match &self.outcome {
            Outcome::Measured {
                tether,
                ratio,
                target,
                ..
            } => {
                let ratio = *ratio;
                match *target {
                    Target::AtLeast(x) => Some(ratio >= x),
                    Target::AtMost(x) => Some(ratio <= x),
                    Target::ValueAtMost(x, _) => Some(*tether <= x),
                    Target::None => None,
                }
            }
            Outcome::Skipped(_) => None,
            Outcome::Failed(_) => Some(false),
        }
    }

    fn cells(&self, enforce: bool) -> [String; 7] {
        match &self.outcome {
            Outcome::Measured {
                tether,
                baseline,
                ratio,
                unit,
                target,
                note,
            } => {
                let target_text = match *target {
                    Target::AtLeast(x) => format!("≥ {x:.2}×"),
                    Target::AtMost(x) => format!("≤ {x:.2}×"),
                    Target::ValueAtMost(x, u) => format!("≤ {x} {u}"),
                    Target::None => "—".into(),
                };
                let verdict = match (self.verdict(), enforce) {
                    (None, _) => "info",
                    (Some(true), _) => "ok",
                    (Some(false), true) => "MISS",
                    (Some(false), false) => "(miss)",
                };
                [
                    self.name.clone(),
                    unit.show(*tether),
                    unit.show(*baseline),
                    format!("{ratio:.2}×"),
                    target_text,
                    verdict.into(),
                    note.clone(),
                ]
            }
            Outcome::Skipped(why) => [
                self.name.clone(),
                "SKIPPED".into(),
                String::new(),
                String::new(),
                String::new(),
                "skip".into(),
                why.clone(),
            ],
            Outcome::Failed(why) => [
                self.name.clone(),
                "FAILED".into(),
                String::new(),
                String::new(),
                String::new(),
                "FAIL".into(),
                why.clone(),
            ],
        }
    }
}

fn print_table(rows: &[Row], enforce: bool) {
    let header = [
        "figure",
        "tether",
        "baseline",
        "ratio",
        "target",
        "",
        "baseline / notes",
    ];
    let cells: Vec<[String; 7]> = rows.iter().map(|r| r.cells(enforce)).collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    width[6] = header[6].len();
    let line = |cols: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            // Names and notes left-aligned, figures right-aligned.
            if i == 0 || i >= 5 {
                s.push_str(c);
                if i < 6 {
                    s.push_str(&" ".repeat(pad));
                }
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
            if i < 6 {
                s.push_str("  ");
            }
        }
        println!("{}", s.trim_end());
    };
    let total: usize = width.iter().sum::<usize>() + 12 + 20;
    println!("{:-<1$}", "", total);
    line(header);
    println!("{:-<1$}", "", total);
    for row in &cells {
        line([
            &row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6],
        ]);
    }
    println!("{:-<1$}", "", total);
}

/// Runs the benchmark (or, with the hidden `--memory-server`, the server side of the memory
/// row) and prints the table; fails if a ratio misses its target (never with `--quick`).
pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    if let Some(kind) = &args.memory_server {
        return memory::serve_child(kind).await;
    }
    if let Some(which) = &args.profile_stream {
        return stream::profile(which, Sizes::new(&args).stream_events, args.rounds).await;
    }
    if let Some(side) = &args.profile_fanout {
        raise_fd_limit();
        return fanout::profile(side, Sizes::new(&args), args.rounds).await;
    }
    let groups = [
        "stream",
        "reconnect",
        "memory",
        "praisonai",
        "fanout",
        "redis",
    ];
    for g in &args.only {
        if !groups.contains(&g.as_str()) {
            return Err(Failure::Usage(format!(
                "unknown group {g:?} in --only (use {})",
                groups.join(", ")
            )));
        }
    }
    let wanted = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    let sizes = Sizes::new(&args);
    let fd_note = raise_fd_limit();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "tether bench{}: {cores} cores, 127.0.0.1; every ratio is tether / a baseline measured \
         in this run",
        if args.quick {
            " --quick (tiny sizes, targets not enforced)"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    if wanted("stream") {
        rows.extend(stream::rows(sizes).await);
    }
    if wanted("reconnect") {
        rows.extend(reconnect::rows(sizes).await);
    }
    if wanted("memory") {
        rows.extend(memory::rows(sizes, &fd_note).await);
    }
    if wanted("praisonai") {
        rows.extend(peer::rows(sizes).await);
    }
    if wanted("fanout") {
        rows.extend(fanout::rows(sizes).await);
    }
    if wanted("redis") {
        rows.extend(redis::rows(sizes).await);
    }
    let enforce = !args.quick;
    print_table(&rows, enforce);
    let failed = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    let missed = rows.iter().filter(|r| r.verdict() == Some(false)).count() - failed;
    println!(
        "{} figures in {:.1} s: {} failed to run, {} missed the target{}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        failed,
        missed,
        if enforce { "" } else { " (not enforced)" }
    );
    if failed > 0 {
        return Err(Failure::Runtime(format!(
            "{failed} benchmark rows failed to run"
        )));
    }
    if enforce && missed > 0 {
        return Err(Failure::Runtime(format!(
            "{missed} figures missed their target"
        )));
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one (10,000 sessions need ~10,000 descriptors in
/// each process). Returns a note when the limit stays low.
fn raise_fd_limit() -> String {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return "cannot read the open-file limit".into();
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        fd_limit_note(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    String::new()
}

fn fd_limit_note(limit: u64) -> String {
    format!("open-file limit {limit}")
}

/// The current open-file limit.
fn fd_limit() -> u64 {
    #[cfg(unix)]
    // SAFETY: getrlimit only writes the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
            return lim.rlim_cur as u64;
        }
    }
    u64::MAX
}

/// `f`'s output if it finishes within `limit` (runtime-neutral timer).
async fn before<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    let timer = async {
        async_io::Timer::after(limit).await;
    };
    futures::pin_mut!(f);
    futures::pin_mut!(timer);
    match futures::future::select(f, timer).await {
        futures::future::Either::Left((out, _)) => Some(out),
        futures::future::Either::Right(_) => None,
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Median of a non-empty list of ratios (or figures).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The content of every benchmark event: ~140 characters, so a stamped frame is ~200 bytes
/// (the size of DESIGN.md's figures).
const CONTENT: &str = "tether benchmark event: a line of streamed model output, long enough to \
                       make a frame of about two hundred bytes once stamped with its cursor";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_target_direction() {
        let r = |t, b, target| Row::measured("x", t, b, Unit::PerSecond, target, "");
        assert_eq!(r(9.0, 10.0, Target::AtLeast(0.8)).verdict(), Some(true));
        assert_eq!(r(7.0, 10.0, Target::AtLeast(0.8)).verdict(), Some(false));
        assert_eq!(r(29.0, 10.0, Target::AtMost(3.0)).verdict(), Some(true));
        assert_eq!(r(31.0, 10.0, Target::AtMost(3.0)).verdict(), Some(false));
        assert_eq!(
            r(11.0, 7.0, Target::ValueAtMost(12.0, "KB")).verdict(),
            Some(true)
        );
        assert_eq!(r(1.0, 1.0, Target::None).verdict(), None);
        assert_eq!(Row::skipped("x", "no peer").verdict(), None);
        assert_eq!(Row::failed("x", "boom").verdict(), Some(false));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
