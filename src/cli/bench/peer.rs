//! Against the real PraisonAI gateway (the peer harness in `tests/peer`, a Python venv from
//! PyPI): events per second each server delivers to one client, each publishing the fastest
//! way it offers (pipelined control-port `publish` commands for Python, `Server::publish_batch` for
//! tether), and tether's client against a bare client on each server.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tether_core::client::{ClientConfig, Event, State};
use tokio::sync::Notify;

use super::bare::{bare_session, BareClient, SeqCheck};
use super::stream::{self, publish_stream, Tokio};
use super::{before, median, Row, Sizes, Target, Unit};
use tether_tokio::ServerOptions;
use tether_tokio::{ConnectOptions, TokioRuntime};

const SERVERS: &str = "PraisonAI: server → 1 client";
const CLIENT_PY: &str = "PraisonAI: client vs bare, on Python";
const CLIENT_OURS: &str = "PraisonAI: client vs bare, on tether";

/// Where the peer harness lives: `TETHER_PEER_DIR`, else this checkout's `tests/peer`.
fn peer_dir() -> PathBuf {
    std::env::var_os("TETHER_PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer")))
}

/// Runs a harness script with a time limit; its stdout.
fn script(name: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let mut child = Command::new("bash")
        .arg(peer_dir().join(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} did not finish within {limit:?}"));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{name}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim().to_owned();
        return Err(format!("{name} failed: {last}"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The real gateway, stopped (by its pid) on drop.
struct Python {
    vars: std::collections::HashMap<String, String>,
}

impl Python {
    fn start() -> Result<Python, String> {
        script("setup-venv.sh", &[], Duration::from_secs(300))?;
        let out = script(
            "run-python-gateway.sh",
            &["--max-seconds", "120"],
            Duration::from_secs(60),
        )?;
        let vars = out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let p = Python { vars };
        for key in ["WS_URL", "TOKEN", "CONTROL_PORT", "PID", "AGENT_ID"] {
            p.var(key)?;
        }
        Ok(p)
    }

    fn var(&self, key: &str) -> Result<&str, String> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the gateway did not report {key}"))
    }

    fn url(&self) -> String {
        let url = self.vars.get("WS_URL").cloned().unwrap_or_default();
        let token = self.vars.get("TOKEN").cloned().unwrap_or_default();
        format!("{url}?token={token}")
    }

    /// Publishes `commands × batch` message events to `session` through the control port
    /// (pipelined commands), in a blocking thread.
    fn publish(&self, session: &str, commands: u32, batch: u32) -> Result<(), String> {
        let port: u16 = self
            .var("CONTROL_PORT")?
            .parse()
            .map_err(|_| "bad CONTROL_PORT")?;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("control port: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let line = serde_json::json!({
            "cmd": "publish", "count": batch, "type": "message",
            "session_id": session,
            // A burst (no yield between sends) overfills the gateway's own per-client queue
            // after ~1000 frames and it evicts the client as a slow consumer (1013).
            "burst": false,
        })
        .to_string();
        let mut all = String::new();
        for _ in 0..commands {
            all.push_str(&line);
            all.push('\n');
        }
        s.write_all(all.as_bytes())
            .map_err(|e| format!("control port: {e}"))?;
        let mut reader = BufReader::new(s);
        for _ in 0..commands {
            let mut reply = String::new();
            reader
                .read_line(&mut reply)
                .map_err(|e| format!("control port: {e}"))?;
            let v: serde_json::Value = serde_json::from_str(&reply)
                .map_err(|e| format!("control reply {reply:?}: {e}"))?;
            if v["ok"] != true {
                return Err(format!("control port refused: {reply}"));
            }
        }
        Ok(())
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        if let Some(pid) = self.vars.get("PID") {
            let _ = Command::new("kill")
                .arg(pid)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The Python server publishing to a tether client: events per second.
async fn python_to_tether(py: &Python, commands: u32, batch: u32) -> Result<f64, String> {
    let agent = py.var("AGENT_ID")?.to_owned();
    let config = ClientConfig::new(agent);
    let (client, mut events) =
        tether_tokio::connect(TokioRuntime, py.url(), config, ConnectOptions::default())
            .map_err(|e| e.to_string())?;
    let session = before(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            match e {
                Event::StateChanged(State::Connected { session_id, .. }) => return Ok(session_id),
                Event::Closed(r) => return Err(format!("closed: {r:?}")),
                _ => {}
            }
        }
        Err("client events ended".to_owned())
    })
    .await
    .unwrap_or_else(|| Err("not connected to the Python gateway within 10 s".into()))?;
    let n = u64::from(commands) * u64::from(batch);
    let counting = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match events.next().await {
                Some(Event::Delivered(d)) if d.kind == "message" => got += 1,
                Some(Event::Lost { from, to }) => return Err(format!("lost {from}..={to}")),
                Some(Event::Closed(r)) => return Err(format!("closed: {r:?}")),
                Some(_) => {}
                None => return Err("client events ended".into()),
            }
        }
        Ok(Instant::now())
    });
    let started = Instant::now();
    let rate = publish_python(py, &session, commands, batch, counting, started, n).await;
    let _ = before(Duration::from_secs(2), client.disconnect()).await;
    rate
}

/// Publishes through the control port while `counting` waits for the `n`th event.
async fn publish_python(
    py: &Python,
    session: &str,
    commands: u32,
    batch: u32,
    counting: tokio::task::JoinHandle<Result<Instant, String>>,
    started: Instant,
    n: u64,
) -> Result<f64, String> {
    let published = tokio::task::block_in_place(|| py.publish(session, commands, batch));
    if let Err(e) = published {
        counting.abort();
        return Err(e);
    }
    let done = before(Duration::from_secs(60), counting)
        .await
        .ok_or("the events did not all arrive within 60 s")?
        .map_err(|e| e.to_string())??;
    Ok(n as f64 / done.saturating_duration_since(started).as_secs_f64())
}

/// Reads `n` consecutive `message` frames from a bare client; when the last came.
async fn bare_count(mut ws: BareClient, n: u64) -> Result<Instant, String> {
    let mut check: Option<SeqCheck> = None;
    let mut got = 0;
    while got < n {
        match ws.next().await {
            Some(Ok(tether_driver::Message::Text(text))) => {
                let check = check.get_or_insert_with(|| SeqCheck {
                    next: first_seq(text.as_str()).unwrap_or(1),
                    content_bytes: 0,
                });
                if check.accept(text.as_str())? {
                    got += 1;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("bare client: {e}")),
            None => return Err(format!("bare client: closed after {got} of {n}")),
        }
    }
    Ok(Instant::now())
}

/// The `seq` of a frame, if it has one.
fn first_seq(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text).ok()?["seq"].as_u64()
}

/// The Python server publishing to a bare client: events per second.
async fn python_to_bare(py: &Python, commands: u32, batch: u32) -> Result<f64, String> {
    let (ws, session) = bare_session(&py.url(), py.var("AGENT_ID")?).await?;
    let n = u64::from(commands) * u64::from(batch);
    let counting = tokio::spawn(bare_count(ws, n));
    let started = Instant::now();
    publish_python(py, &session, commands, batch, counting, started, n).await
}

/// tether's server publishing to a bare client: events per second.
async fn tether_to_bare(n: u64) -> Result<f64, String> {
    let bound = tether_tokio::serve(
        TokioRuntime,
        "127.0.0.1:0",
        stream::server_config(),
        ServerOptions::default(),
    )
    .await
    .map_err(|e| format!("serve: {e}"))?;
    let url = format!("ws://{}/ws", bound.local_addr);
    let server = bound.server.clone();
    let mut server_events = bound.events;
    tokio::spawn(async move { while server_events.next().await.is_some() {} });
    let result = async {
        let (mut ws, session) = bare_session(&url, "bench").await?;
        let session = tether_core::server::SessionId(session);
        let delivered = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(Notify::new());
        let (d, p) = (delivered.clone(), progress.clone());
        let counting = tokio::spawn(async move {
            // Like `bare_count`, reporting progress to the publisher's window.
            let mut check = SeqCheck {
                next: 1,
                content_bytes: 0,
            };
            while check.next <= n {
                match ws.next().await {
                    Some(Ok(tether_driver::Message::Text(text))) => {
                        if check.accept(text.as_str())? && check.next % 1024 == 0 {
                            d.store(check.next - 1, std::sync::atomic::Ordering::Release);
                            p.notify_one();
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("bare client: {e}")),
                    None => return Err("bare client: closed".to_owned()),
                }
            }
            Ok(Instant::now())
        });
        let started = Instant::now();
        publish_stream(&server, &session, n, &delivered, &progress).await?;
        let done = before(Duration::from_secs(60), counting)
            .await
            .ok_or("timed out")?
            .map_err(|e| e.to_string())??;
        Ok(n as f64 / done.saturating_duration_since(started).as_secs_f64())
    }
    .await;
    let _ = before(Duration::from_secs(5), bound.server.shutdown()).await;
    result
}

fn skipped(why: &str) -> Vec<Row> {
    [SERVERS, CLIENT_PY, CLIENT_OURS]
        .into_iter()
        .map(|name| Row::skipped(name, why))
        .collect()
}

/// The three PraisonAI rows.
pub async fn rows(sizes: Sizes) -> Vec<Row> {
    if std::env::var("TETHER_INTEROP").as_deref() == Ok("skip") {
        return skipped("TETHER_INTEROP=skip: the PraisonAI peer is not used");
    }
    if !peer_dir().join("run-python-gateway.sh").exists() {
        return skipped(&format!(
            "no peer harness at {} (set TETHER_PEER_DIR)",
            peer_dir().display()
        ));
    }
    let py = match tokio::task::spawn_blocking(Python::start).await {
        Ok(Ok(py)) => py,
        Ok(Err(e)) => {
            return skipped(&format!(
                "the PraisonAI peer cannot be installed/started: {e}"
            ))
        }
        Err(e) => return skipped(&format!("the PraisonAI peer: {e}")),
    };
    let (commands, batch) = (sizes.peer_commands, sizes.peer_batch);
    let py_tether = python_to_tether(&py, commands, batch).await;
    let py_bare = python_to_bare(&py, commands, batch).await;
    drop(py);
    let n = sizes.long_stream_events;
    let mut ours = Vec::new();
    let mut ours_bare = Vec::new();
    let mut failure = None;
    for _ in 0..sizes.rounds.max(1) {
        match (
            stream::tether_stream(&Tokio, n).await,
            tether_to_bare(n).await,
        ) {
            (Ok(a), Ok(b)) => {
                ours.push(a);
                ours_bare.push(b);
            }
            (Err(e), _) | (_, Err(e)) => {
                failure = Some(e);
                break;
            }
        }
    }
    let (ours, ours_bare) = (median(ours), median(ours_bare));
    let published = u64::from(commands) * u64::from(batch);
    let mut rows = Vec::new();
    // The servers are compared through the same bare client (it keeps up with both), so the
    // figure is the server's; the tether client has its own rows below.
    rows.push(match (&failure, &py_bare) {
        (None, Ok(py)) => Row::measured(
            SERVERS,
            ours_bare,
            *py,
            Unit::PerSecond,
            Target::AtLeast(50.0),
            format!(
                "Python gateway ({published} events, control-port publish); both to the same \
                 bare client; tether: publish_batch"
            ),
        ),
        (Some(e), _) | (_, Err(e)) => Row::failed(SERVERS, e.clone()),
    });
    rows.push(match (&py_tether, &py_bare) {
        (Ok(t), Ok(b)) => Row::measured(
            CLIENT_PY,
            *t,
            *b,
            Unit::PerSecond,
            Target::None,
            "bare tokio-tungstenite client (decode + seq check) on the Python gateway",
        ),
        (Err(e), _) | (_, Err(e)) => Row::failed(CLIENT_PY, e.clone()),
    });
    rows.push(match &failure {
        None => Row::measured(
            CLIENT_OURS,
            ours,
            ours_bare,
            Unit::PerSecond,
            Target::None,
            "bare tokio-tungstenite client (decode + seq check) on tether's server",
        ),
        Some(e) => Row::failed(CLIENT_OURS, e.clone()),
    });
    rows
}
