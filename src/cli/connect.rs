//! `tether connect`: follow a gateway. Delivered events go to stdout (one line each, JSON with
//! `--json`); state changes, gaps, losses and reconnects go to stderr. The client reconnects and
//! resumes by itself; terminal rejections end the process with the server's code and next step.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use tether_core::backoff::{BackoffConfig, GiveUp};
use tether_core::client::{ClosedReason, Delivered, DisconnectCause, Rejection, State};
use tether_tokio::{
    Client, ClientConfig, ClientError, ClientEvents, ConnectOptions, Event, RequestOutcome,
    ResumeState,
};

use super::{parse_duration, Failure};

/// The state file is rewritten at most this often while events flow (and always on exit): a
/// crash replays at most this much, never skips.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// Options of `tether connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Gateway URL, e.g. ws://127.0.0.1:8765/ws (the PraisonAI gateway serves /ws too).
    pub url: String,
    /// More nodes of the same multi-node gateway (repeatable): each reconnect tries the next
    /// URL, so the client fails over when a node dies.
    #[arg(long = "also", value_name = "URL")]
    pub also: Vec<String>,
    /// The agent to talk to.
    #[arg(long, value_name = "ID")]
    pub agent_id: String,
    /// The gateway's token (sent as ?token=).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Exit 0 after this many delivered events. Default: run until interrupted.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print each event as a JSON line: the delivered frame's payload plus its `seq`.
    #[arg(long)]
    pub json: bool,
    /// Persist the resume position here (after each printed batch and on exit), and resume
    /// from it when the file exists: a restarted `connect` continues where it stopped.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Give up after N consecutive failed connection attempts. Default: no cap (--timeout
    /// still applies).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Give up when no connection has succeeded for this long (from the first failure of an
    /// outage); 0 = retry forever.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Send this message once connected (repeatable); the outcome is printed on stderr.
    #[arg(long = "send", value_name = "TEXT")]
    pub send: Vec<String>,
    /// Serve the client's Prometheus metrics at http://ADDR/metrics (reconnects by cause, time
    /// disconnected, gaps, losses, duplicates, request outcomes). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Runs the client until `--count` events, a terminal error or a signal.
pub async fn run(args: ConnectArgs) -> Result<(), Failure> {
    // Bad URLs are usage errors, caught before anything starts.
    let mut urls = vec![args.url.clone()];
    urls.extend(args.also.iter().cloned());
    let urls = tether_driver::Endpoints::from(urls);
    let checked = urls
        .with_token(None)
        .map_err(|e| Failure::Usage(format!("{e} (expected e.g. ws://127.0.0.1:8765/ws)")))?;
    if checked.iter().any(|u| u.starts_with("wss:")) {
        // tether-tokio's `rustls` feature is off in this build: every attempt would fail the
        // same way, so say it once instead of retrying until the timeout.
        return Err(Failure::Usage(
            "wss:// (TLS) is not built into this tether; use ws:// or a TLS-terminating proxy"
                .into(),
        ));
    }
    if args.agent_id.is_empty() {
        return Err(Failure::Usage("--agent-id must not be empty".into()));
    }
    let saved = match &args.state_file {
        Some(path) => load_state(path, &args.agent_id)?,
        None => None,
    };
    let config = ClientConfig {
        backoff: BackoffConfig {
            // The default schedule (first retry within 250 ms of a cut), but a CLI user watches
            // the terminal: never more than 5 s between attempts.
            max: Duration::from_secs(5),
            max_attempts: args.max_attempts,
            max_elapsed: (!args.timeout.is_zero()).then_some(args.timeout),
            ..BackoffConfig::default()
        },
        ..ClientConfig::new(args.agent_id.clone())
    };
    let token = args.token.as_deref();
    let metrics = match args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };
    let mut options = ConnectOptions::default();
    options.token = token.map(str::to_owned);
    options.metrics = metrics;
    if let Some(state) = saved.clone() {
        eprintln!(
            "resuming session {} after cursor {}",
            state.session_id.as_deref().unwrap_or("?"),
            state.cursor.map_or("-".into(), |c| c.to_string())
        );
        options.resume = Some(state);
    }
    let started = Client::start(
        tether_tokio::TokioRuntime,
        tether_tokio::TokioConnector,
        urls,
        config,
        options,
    );
    let (client, events) = started.map_err(|e| match e {
        ClientError::Url(e) => Failure::Usage(e.to_string()),
        other => Failure::Runtime(other.to_string()),
    })?;
    let mut follower = Follower {
        client: client.clone(),
        json: args.json,
        count: args.count,
        printed: 0,
        out: std::io::BufWriter::new(std::io::stdout()),
        state_file: args.state_file.clone(),
        agent_id: args.agent_id.clone(),
        position: saved.map(Position::from_state).unwrap_or_default(),
        session: None,
        sends: args.send.clone(),
        last_save: Instant::now(),
    };
    follower.follow(events).await
}

/// Listens on `addr` and answers every request with the client's metrics (Prometheus text).
async fn serve_metrics(
    addr: std::net::SocketAddr,
) -> Result<tether_driver::metrics::ClientMetrics, Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Runtime(format!("--metrics-addr {addr}: {e}")))?;
    let metrics = tether_driver::metrics::ClientMetrics::new();
    let exposed = metrics.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let body = exposed.encode();
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                let _ = tcp.read(&mut head).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    Ok(metrics)
}

/// The last event printed: what a restarted `connect` must resume after. The core's own
/// cursor may be ahead (events queued for us but not printed), so the file records this one.
#[derive(Debug, Clone, Default)]
struct Position {
    session_id: Option<String>,
    cursor: Option<u64>,
    sequence: Option<u64>,
}

impl Position {
    fn from_state(state: ResumeState) -> Self {
        Self {
            session_id: state.session_id,
            cursor: state.cursor,
            sequence: state.sequence,
        }
    }
}

struct Follower {
    client: Client,
    json: bool,
    count: Option<u64>,
    printed: u64,
    out: std::io::BufWriter<std::io::Stdout>,
    state_file: Option<PathBuf>,
    agent_id: String,
    position: Position,
    /// The session of the events now arriving (from the last `Connected` in the stream).
    session: Option<String>,
    /// Messages still to send after the first connection.
    sends: Vec<String>,
    last_save: Instant,
}

enum Step {
    Continue,
    Done(Result<(), Failure>),
}

impl Follower {
    async fn follow(&mut self, mut events: ClientEvents) -> Result<(), Failure> {
        if self.count == Some(0) {
            return self.finish(events, Ok(())).await;
        }
        let stop = super::shutdown_signal();
        tokio::pin!(stop);
        loop {
            let first = tokio::select! {
                event = events.next() => event,
                () = &mut stop => return self.finish(events, Err(Failure::Interrupted)).await,
            };
            let Some(first) = first else {
                // The loop always ends with `Closed`; if it did not, say so rather than hang.
                return Err(Failure::Runtime(
                    "the connection loop ended without a reason".into(),
                ));
            };
            // Handle everything already queued before one flush and one state save.
            let mut next = Some(first);
            let mut step = Step::Continue;
            while let Some(event) = next.take() {
                step = self.on_event(event);
                if matches!(step, Step::Done(_)) {
                    break;
                }
                next = events.next().now_or_never().flatten();
            }
            if let Err(e) = self.out.flush() {
                return self.finish(events, stdout_closed(e)).await;
            }
            if self.last_save.elapsed() >= SAVE_EVERY {
                self.save_state().await;
            }
            if let Step::Done(result) = step {
                return self.finish(events, result).await;
            }
        }
    }

    fn on_event(&mut self, event: Event) -> Step {
        match event {
            Event::Delivered(d) => {
                if let Err(e) = self.print(&d) {
                    return Step::Done(stdout_closed(e));
                }
                self.printed += 1;
                self.position = Position {
                    session_id: self.session.clone(),
                    cursor: Some(d.cursor),
                    sequence: Some(d.seq),
                };
                if self.count.is_some_and(|c| self.printed >= c) {
                    return Step::Done(Ok(()));
                }
            }
            Event::StateChanged(state) => self.on_state(state),
            Event::Gap { expected, received } => {
                eprintln!("gap: expected #{expected}, received #{received}; repairing")
            }
            Event::Lost { from, to } => {
                eprintln!("lost: events #{from}..=#{to} are gone from the server's replay buffer")
            }
            Event::ServerReset { cursor, head } => eprintln!(
                "server reset: it is at #{head} but we had #{cursor} (it lost its state); \
                 numbering restarts"
            ),
            Event::SessionReplaced { previous, current } => eprintln!(
                "session {previous} could not be resumed; new session {current} \
                 (undelivered events of the old one are lost)"
            ),
            Event::Notice(frame) => eprintln!("notice: {}", frame.text),
            Event::ServerError(frame) => eprintln!("server error: {}", compact(&frame)),
            Event::Snapshot(_) => eprintln!("the server sent a state snapshot instead of replays"),
            Event::BadFrame(e) => eprintln!("dropped an undecodable frame: {e}"),
            Event::Closed(reason) => return Step::Done(closed(reason)),
            _ => {}
        }
        Step::Continue
    }

    fn on_state(&mut self, state: State) {
        match state {
            State::Connecting { attempt: 0 } => eprintln!("connecting"),
            State::Connecting { .. } => {}
            State::Connected {
                version,
                session_id,
                resumed,
                legacy,
            } => {
                let how = if resumed { "resumed" } else { "new" };
                let join = if legacy { ", legacy join" } else { "" };
                eprintln!("connected: protocol v{version}, session {session_id} ({how}{join})");
                if self.session.is_some() && self.session.as_ref() != Some(&session_id) {
                    // Events of a new session: nothing of it printed yet.
                    self.position = Position::default();
                }
                self.session = Some(session_id);
                self.start_sends();
            }
            State::Disconnected { cause } => eprintln!("disconnected: {}", describe(&cause)),
            State::Reconnecting { attempt, delay } => {
                eprintln!("reconnecting in {delay:.1?} (attempt {attempt})")
            }
            State::AwaitingCredentials => {
                eprintln!("the server rotated credentials; waiting for new ones")
            }
            _ => {}
        }
    }

    /// Sends the `--send` messages once, after the first handshake; outcomes go to stderr.
    fn start_sends(&mut self) {
        for text in std::mem::take(&mut self.sends) {
            let client = self.client.clone();
            tokio::spawn(async move {
                match client.send(text.clone()).await {
                    Ok(RequestOutcome::Final { content, outcome }) => eprintln!(
                        "reply to {text:?}: {} ({})",
                        content.map_or("-".into(), |c| c.to_string()),
                        outcome.map_or("-".into(), |o| o.to_string())
                    ),
                    Ok(other) => eprintln!("reply to {text:?}: {other:?}"),
                    Err(e) => eprintln!("sending {text:?} failed: {e}"),
                }
            });
        }
    }

    fn print(&mut self, d: &Delivered) -> std::io::Result<()> {
        let payload: Option<Map<String, Value>> = serde_json::from_str(&d.payload).ok();
        if self.json {
            let mut object = payload.unwrap_or_else(|| {
                let mut m = Map::new();
                m.insert("payload".into(), Value::String(d.payload.to_string()));
                m
            });
            object.insert("seq".into(), Value::from(d.seq));
            serde_json::to_writer(&mut self.out, &object)?;
            writeln!(self.out)
        } else {
            let summary = match payload {
                Some(mut m) => match m.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    _ => {
                        for key in ["type", "seq", "cursor"] {
                            m.remove(key);
                        }
                        Value::Object(m).to_string()
                    }
                },
                None => d.payload.to_string(),
            };
            let replayed = if d.replayed { " (replayed)" } else { "" };
            writeln!(self.out, "#{} {}: {summary}{replayed}", d.seq, d.kind)
        }
    }

    /// Writes the position of the last printed event (with the core's session and outbox).
    async fn save_state(&mut self) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        self.last_save = Instant::now();
        let Ok(mut state) = self.client.resume_state().await else {
            return;
        };
        if self.position.session_id.is_some() && self.position.session_id == state.session_id {
            state.cursor = self.position.cursor;
            state.sequence = self.position.sequence;
        }
        let file = serde_json::json!({ "agent_id": self.agent_id, "resume": state });
        if let Err(e) = super::write_atomically(&path, file.to_string().as_bytes()) {
            tracing::warn!(%e, path = %path.display(), "cannot save the state file");
        }
    }

    /// Saves the position, disconnects cleanly (bounded) and returns `result`.
    async fn finish(
        &mut self,
        mut events: ClientEvents,
        result: Result<(), Failure>,
    ) -> Result<(), Failure> {
        let _ = self.out.flush();
        self.save_state().await;
        self.client.disconnect().await;
        // Let the closing handshake go out; the stream ends with Closed(Requested).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(event) = events.next().await {
                if matches!(event, Event::Closed(_)) {
                    break;
                }
            }
        })
        .await;
        result
    }
}

fn stdout_closed(e: std::io::Error) -> Result<(), Failure> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(()) // `tether connect ... | head`: the reader has what it wanted
    } else {
        Err(Failure::Runtime(format!("cannot write to stdout: {e}")))
    }
}

/// The exit for a terminal event.
fn closed(reason: ClosedReason) -> Result<(), Failure> {
    match reason {
        ClosedReason::Requested => Ok(()),
        ClosedReason::Rejected(r) => Err(Failure::Rejected(rejection(&r))),
        ClosedReason::GaveUp { limit, last } => {
            let limit = match limit {
                GiveUp::AttemptsExhausted { attempts } => {
                    format!("gave up after {attempts} failed attempts")
                }
                GiveUp::DeadlineExceeded { elapsed } => format!(
                    "gave up after {:.1} s without a connection",
                    elapsed.as_secs_f64()
                ),
            };
            Err(Failure::Runtime(format!(
                "{limit} (last: {}; see --max-attempts, --timeout)",
                describe(&last)
            )))
        }
        ClosedReason::ProtocolViolation(what) => Err(Failure::Runtime(format!(
            "the server broke the protocol: {what}"
        ))),
        other => Err(Failure::Runtime(format!("stopped: {other:?}"))),
    }
}

/// `rejected by the server: auth_required: <text> (next step: reauthenticate)`.
fn rejection(r: &Rejection) -> String {
    let mut line = format!("rejected by the server: {}", r.code);
    if !r.message.is_empty() {
        line.push_str(&format!(": {}", r.message));
    }
    match &r.next_step {
        Some(step) => line.push_str(&format!(" (next step: {step})")),
        None => line.push_str(" (no next step given)"),
    }
    line
}

/// A disconnect cause in words.
fn describe(cause: &DisconnectCause) -> String {
    match cause {
        DisconnectCause::ConnectFailed(e) => format!("cannot connect: {e}"),
        DisconnectCause::Closed { code, reason } => match (code, reason.is_empty()) {
            (Some(c), true) => format!("closed by the peer (code {c})"),
            (Some(c), false) => format!("closed by the peer (code {c}, {reason})"),
            (None, true) => "connection dropped".into(),
            (None, false) => format!("connection dropped ({reason})"),
        },
        DisconnectCause::HandshakeTimeout => "no handshake reply in time".into(),
        DisconnectCause::HeartbeatTimeout => "the server went silent (half-open link)".into(),
        DisconnectCause::Rejected(r) => rejection(r),
        DisconnectCause::GapRepair => "reconnecting to repair a gap".into(),
        other => format!("{other:?}"),
    }
}

/// A JSON value as one line.
fn compact(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "?".into())
}

/// Strings without quotes, anything else as JSON.
/// Reads a state file written by a previous run; `None` if there is none yet.
fn load_state(path: &PathBuf, agent_id: &str) -> Result<Option<ResumeState>, Failure> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure::Runtime(format!(
                "cannot read state file {}: {e}",
                path.display()
            )))
        }
    };
    let bad = |why: String| {
        Failure::Usage(format!(
            "state file {} {why}; delete it or pass another --state-file",
            path.display()
        ))
    };
    let file: Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("is not a state file ({e})")))?;
    let owner = file.get("agent_id").and_then(Value::as_str).unwrap_or("");
    if owner != agent_id {
        return Err(bad(format!("belongs to agent {owner:?}, not {agent_id:?}")));
    }
    let state: ResumeState =
        serde_json::from_value(file.get("resume").cloned().unwrap_or_default())
            .map_err(|e| bad(format!("is not a state file ({e})")))?;
    Ok(Some(state))
}
