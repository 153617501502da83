//! `tether check`: the conformance suite ([`tether_testkit::check`]) against any gateway, one row per
//! check on stdout (or one JSON object with `--json`), JUnit XML with `--junit FILE`; exit 0
//! iff every applicable check passed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tether_testkit::check::{check, CheckError, Control, Options, Status};

use super::{parse_duration, Failure};

/// Options of `tether check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The gateway's URL, e.g. ws://127.0.0.1:8765/ws.
    pub url: String,
    /// The gateway's token (sent as ?token=).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// The agent to talk to.
    #[arg(long, value_name = "ID", default_value = "echo")]
    pub agent_id: String,
    /// Another agent the gateway knows (for ownership.other-agent).
    #[arg(long, value_name = "ID")]
    pub other_agent: Option<String>,
    /// A token of another principal (for ownership.other-principal; n/a without).
    #[arg(long, value_name = "T")]
    pub other_token: Option<String>,
    /// The gateway's control hook (`tether serve --control`), to make it publish events.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "praisonai_control")]
    pub control: Option<String>,
    /// The PraisonAI peer harness's control port (tests/peer), to make it publish events.
    #[arg(long, value_name = "HOST:PORT")]
    pub praisonai_control: Option<String>,
    /// Speak only this protocol version (1 checks a v2 gateway's v1 behaviour). Default:
    /// offer 1..=2.
    #[arg(long, value_name = "V", value_parser = clap::value_parser!(u32).range(1..=2))]
    pub protocol: Option<u32>,
    /// Longest wait for a server timer (pings, reaping); checks needing longer are n/a.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Run only the checks whose id starts with PREFIX (repeatable), e.g. resume.
    #[arg(long = "only", value_name = "PREFIX")]
    pub only: Vec<String>,
    /// Most events published looking for the end of the replay window.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub window_budget: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JUnit XML to FILE (for CI).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Runs the suite and prints the report.
pub async fn run(args: CheckArgs) -> Result<(), Failure> {
    let control = match (&args.control, &args.praisonai_control) {
        (Some(addr), _) => Some(Control::Tether(addr.clone())),
        (None, Some(addr)) => Some(Control::PraisonAi(addr.clone())),
        (None, None) => None,
    };
    let options = Options {
        token: args.token.clone(),
        agent_id: args.agent_id.clone(),
        other_agent: args.other_agent.clone(),
        other_token: args.other_token.clone(),
        control,
        protocol: args.protocol,
        wait: args.wait,
        only: args.only.clone(),
        window_budget: args.window_budget,
    };
    let report = check(&args.url, &options).await.map_err(|e| match e {
        CheckError::Url(_) | CheckError::Protocol(_) => Failure::Usage(e.to_string()),
        CheckError::Rejected { .. } => Failure::Rejected(e.to_string()),
        CheckError::Unreachable { .. } | CheckError::Control { .. } => {
            Failure::Runtime(e.to_string())
        }
    })?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, report.to_junit())
            .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))?;
    }
    if report.passed() {
        return Ok(());
    }
    let failed = report.ids(Status::Fail);
    Err(Failure::Runtime(format!(
        "{} of {} applicable checks failed: {}",
        failed.len(),
        report.results.len() - report.count(Status::NotApplicable),
        failed.join(", ")
    )))
}
