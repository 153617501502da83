//! The `tether` command line: argument definitions, the exit-code contract and helpers shared
//! by the subcommands (`serve`, `connect`, `demo`, `bench`).

pub mod bench;
pub mod connect;
pub mod demo;
pub mod proxy;
pub mod serve;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// Exit codes, shown in `--help` and the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success (connect: --count events received; demo: every event exactly once, in order)
  1    runtime failure (cannot listen, host unreachable after the retry limit, demo saw loss)
  2    usage error (bad flag, bad URL, bad value)
  3    the server rejected the client for good (bad token, no common version, unknown agent)
  130  interrupted (connect stopped by Ctrl-C or SIGTERM)

Logs: RUST_LOG=debug (or e.g. RUST_LOG=tether_driver=trace); quiet by default.";

/// tether: keep real-time gateway connections alive and lossless.
#[derive(Debug, Parser)]
#[command(name = "tether", version, after_help = EXIT_CODES, arg_required_else_help = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a gateway server (PraisonAI-compatible, v1 and v2) that can emit a synthetic stream.
    #[command(after_help = EXIT_CODES)]
    Serve(serve::ServeArgs),
    /// Follow a gateway: print delivered events, reconnect and resume by itself.
    #[command(after_help = EXIT_CODES)]
    Connect(connect::ConnectArgs),
    /// Server, client and a fault-injecting proxy in one process; prints a summary table.
    #[command(after_help = EXIT_CODES)]
    Demo(demo::DemoArgs),
    /// End-to-end benchmark: one table of figures, each a ratio against a baseline measured in
    /// the same run; exit 1 if a ratio misses its target.
    #[command(after_help = EXIT_CODES)]
    Bench(bench::BenchArgs),
}

/// Why a subcommand failed; each maps to one line on stderr and an exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad input from the user (exit 2).
    Usage(String),
    /// Something failed at run time (exit 1).
    Runtime(String),
    /// The server refused the client for good (exit 3).
    Rejected(String),
    /// Stopped by a signal (exit 130).
    Interrupted,
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 1,
            Failure::Rejected(_) => 3,
            Failure::Interrupted => 130,
        }
    }

    /// The one line printed on stderr (None for an interruption, which the user caused).
    pub fn message(&self) -> Option<&str> {
        match self {
            Failure::Usage(m) | Failure::Runtime(m) | Failure::Rejected(m) => Some(m),
            Failure::Interrupted => None,
        }
    }
}

/// Runs the chosen subcommand.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Connect(args) => connect::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// Parses `30`, `30s`, `250ms`, `2m`, `1.5s` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "sec" | "secs" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a duration (negative or too large)"))
}

/// Parses a size in bytes: `65536`, `64KiB`, `64MiB`, `1GiB` (powers of 1024), `500KB`, `64MB`,
/// `1GB` (powers of 1000); the unit may be lowercase and follow a space.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (try 64MiB, 1GiB, 65536)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let bytes = value * scale;
    if bytes.is_finite() && bytes >= 1.0 && bytes <= usize::MAX as f64 {
        Ok(bytes as usize)
    } else {
        Err(format!("{text:?}: the size must be at least 1 byte"))
    }
}

/// Parses a rate: `100`, `100/s`, `6000/min`, `0.5/s` (events per second, > 0).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, per) = t.split_once('/').unwrap_or((t, "s"));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (try 100/s)"))?;
    let per_second = match per.trim() {
        "s" | "sec" => value,
        "m" | "min" => value / 60.0,
        other => {
            return Err(format!(
                "unknown unit /{other} in {text:?} (use /s or /min)"
            ))
        }
    };
    if per_second.is_finite() && per_second > 0.0 {
        Ok(per_second)
    } else {
        Err(format!("{text:?}: the rate must be positive"))
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // If a handler cannot be installed the process still dies by the default action, so
        // waiting forever on that branch is the right fallback.
        let wait = |kind| async move {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(SignalKind::interrupt()) => {}
            () = wait(SignalKind::terminate()) => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Paces a synthetic stream at `rate` events per second: each call waits for the next tick
/// and says how many events are due. Batching per 10 ms tick lets high rates work without a
/// timer per event; after a stall it skips ahead rather than bursting to catch up.
pub struct Pacer {
    rate: f64,
    start: Instant,
    issued: u64,
    ticker: tokio::time::Interval,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(rate: f64) -> Self {
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            rate,
            start: Instant::now(),
            issued: 0,
            ticker,
        }
    }

    /// Waits for the next tick; returns the number of events due now.
    pub async fn next_batch(&mut self) -> u64 {
        loop {
            self.ticker.tick().await;
            let target = (self.rate * self.start.elapsed().as_secs_f64()) as u64;
            let cap = ((self.rate / 10.0).ceil() as u64).max(1);
            let due = target.saturating_sub(self.issued);
            let due = if due > cap {
                // Fell behind by more than 100 ms of events: drop the backlog of the schedule.
                self.issued = target - cap;
                cap
            } else {
                due
            };
            if due > 0 {
                self.issued += due;
                return due;
            }
        }
    }
}

/// 32 random bytes from the OS, as lowercase hex (tokens) or a seed.
pub fn random_bytes() -> Result<[u8; 32], Failure> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Failure::Runtime(format!("no OS randomness available: {e}")))?;
    Ok(bytes)
}

/// Hex spelling of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `contents` to `path` atomically: a temporary file next to it, then a rename, so a
/// crash mid-write never leaves a torn file.
pub fn write_atomically(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse_and_reject_garbage() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("120/min"), Ok(2.0));
        assert_eq!(parse_rate("7"), Ok(7.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("NaN").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 mib"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1MiB").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
