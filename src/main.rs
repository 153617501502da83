//! The `tether` binary: `serve`, `connect`, `demo`, `check`, `proxy` and `bench` (see
//! `tether --help`).
//!
//! Every failure ends as one line on stderr and a documented exit code ([`cli::EXIT_CODES`]):
//! usage errors are caught here, runtime errors come back from the subcommands as
//! [`cli::Failure`], and a panic hook turns a bug into one line instead of a backtrace.

mod cli;

use std::time::Duration;

use clap::error::ErrorKind;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("tether: internal error (please report it): {message}{location}");
    }));

    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(usage_error(e)),
    };
    init_logging();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // Background tasks (closing handshakes, accept loops) get a moment, never a hang.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => std::process::exit(0),
        Err(failure) => {
            if let Some(message) = failure.message() {
                eprintln!("tether: {message}");
            }
            std::process::exit(failure.exit_code());
        }
    }
}

/// Logs go to stderr through `tracing`, filtered by `RUST_LOG`; only warnings by default.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Help and version go out as clap renders them; every other parse error becomes one line.
fn usage_error(e: clap::Error) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            2
        }
        _ => {
            eprintln!("tether: {}", one_line(&e));
            2
        }
    }
}

/// clap's multi-line error (message, indented details, usage, tip) folded into one line that
/// points at the right `--help`.
fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() || line.starts_with("tip:") {
            continue;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line));
    }
    let subcommand = std::env::args().nth(1).filter(|a| {
        matches!(
            a.as_str(),
            "serve" | "connect" | "demo" | "check" | "proxy" | "bench"
        )
    });
    let help = match subcommand {
        Some(s) => format!("tether {s} --help"),
        None => "tether --help".into(),
    };
    format!("{} (see '{help}')", parts.join(" "))
}
