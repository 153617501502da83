//! Memory: idle connected sessions on one server. The server runs in a child process (this
//! binary with the hidden `--memory-server`), so its RSS growth is the servers' alone; the
//! clients live in the bench process. Baseline: the same number of bare tokio-tungstenite
//! connections (4 KiB read buffer) on a bare server, each task awaiting its next message.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use tether_core::client::{ClientConfig, Event, State};
use tether_driver::websocket_config;

use super::stream::server_config;
use super::{before, fd_limit, Row, Sizes, Target, Unit};
use crate::cli::Failure;
use tether_tokio::ServerOptions;
use tether_tokio::{ConnectOptions, TokioRuntime};

/// Connections opened at once (the listen backlog is 1024).
const WAVE: usize = 200;
/// Descriptors kept free for everything else in a process.
const FD_HEADROOM: u64 = 512;

/// The child's side: serve, report the address, answer `rss` lines with `RSS <kB>`.
pub async fn serve_child(kind: &str) -> Result<(), Failure> {
    let addr = match kind {
        "tether" => {
            let bound = tether_tokio::serve(
                TokioRuntime,
                "127.0.0.1:0",
                server_config(),
                ServerOptions::default(),
            )
            .await
            .map_err(|e| Failure::Runtime(format!("memory server: {e}")))?;
            let addr = bound.local_addr;
            let mut events = bound.events;
            tokio::spawn(async move { while events.next().await.is_some() {} });
            // The server lives until the process ends.
            std::mem::forget(bound.server);
            addr
        }
        "bare" => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Failure::Runtime(format!("memory server: {e}")))?;
            let addr = listener
                .local_addr()
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(async move {
                        if let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(
                            tcp,
                            Some(websocket_config()),
                        )
                        .await
                        {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    });
                }
            });
            addr
        }
        other => return Err(Failure::Usage(format!("unknown memory server {other:?}"))),
    };
    println!("ADDR {addr}");
    // Commands come on stdin; EOF (the parent is done or gone) ends the process.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        if line.trim() == "rss" {
            println!("RSS {}", rss_kb().unwrap_or(0));
        }
    }
    Ok(())
}

/// This process's resident set, in kB.
fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A memory-server child, killed on drop.
struct ChildServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ChildServer {
    fn start(kind: &str) -> Result<(ChildServer, String), String> {
        let exe = std::env::current_exe().map_err(|e| format!("own binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(["bench", "--memory-server", kind])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start the {kind} memory server: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ChildServer {
            child,
            stdin,
            lines,
        };
        let addr = server.expect("ADDR")?;
        Ok((server, addr))
    }

    fn expect(&mut self, key: &str) -> Result<String, String> {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| format!("the memory server did not report {key}"))?;
            if let Some(v) = line.strip_prefix(key) {
                return Ok(v.trim().to_owned());
            }
        }
    }

    fn rss_kb(&mut self) -> Result<u64, String> {
        let stdin = self.stdin.as_mut().ok_or("child stdin closed")?;
        writeln!(stdin, "rss").map_err(|e| format!("memory server: {e}"))?;
        self.expect("RSS")?
            .parse()
            .map_err(|e| format!("memory server RSS: {e}"))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stdin.take();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects `n` tether clients (each to its own new session); they stay connected until the
/// returned handles are dropped. With `shared_agent` they all talk to one agent id, else each to
/// its own: a v2 `hello_ok` lists up to `handshake_presence_limit` (32) of the agent's connected
/// sessions, and tungstenite keeps its write buffer at the capacity of the largest frame it
/// wrote for the connection's life.
pub async fn tether_clients(
    url: &str,
    n: usize,
    shared_agent: bool,
) -> Result<Vec<tether_driver::Client>, String> {
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let wave = WAVE.min(n - clients.len());
        let first = clients.len();
        let connected = join_all((first..first + wave).map(|i| async move {
            let agent = if shared_agent {
                "bench".to_owned()
            } else {
                format!("bench-{i}")
            };
            let config = ClientConfig::new(agent);
            let (client, mut events) =
                tether_tokio::connect(TokioRuntime, url, config, ConnectOptions::default())
                    .map_err(|e| e.to_string())?;
            let up = before(Duration::from_secs(20), async {
                while let Some(e) = events.next().await {
                    match e {
                        Event::StateChanged(State::Connected { .. }) => return Ok(()),
                        Event::Closed(r) => return Err(format!("closed: {r:?}")),
                        _ => {}
                    }
                }
                Err("events ended".to_owned())
            })
            .await
            .unwrap_or_else(|| Err("not connected within 20 s".into()));
            up.map(|()| client)
        }))
        .await;
        for c in connected {
            clients.push(c?);
        }
    }
    Ok(clients)
}

/// A bare client socket.
type BareSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `n` bare WebSocket connections.
async fn bare_clients(url: &str, n: usize) -> Result<Vec<BareSocket>, String> {
    let mut sockets = Vec::with_capacity(n);
    while sockets.len() < n {
        let wave = WAVE.min(n - sockets.len());
        let opened = join_all((0..wave).map(|_| {
            tokio_tungstenite::connect_async_with_config(url, Some(websocket_config()), true)
        }))
        .await;
        for o in opened {
            let (ws, _) = o.map_err(|e| format!("bare connect: {e}"))?;
            sockets.push(ws);
        }
    }
    Ok(sockets)
}

/// RSS growth per connection of one server kind, in KB.
async fn per_session_kb(kind: &str, n: usize, shared_agent: bool) -> Result<f64, String> {
    let (mut server, addr) = ChildServer::start(kind)?;
    let url = format!("ws://{addr}/ws");
    // Warm up: the first connections allocate the runtime's and the server's fixed parts.
    let warm = WAVE.min(n);
    let result = async {
        let before_kb;
        let after_kb;
        if kind == "tether" {
            let warm_clients = tether_clients(&url, warm, shared_agent).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            before_kb = server.rss_kb()?;
            let clients = tether_clients(&url, n, shared_agent).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            after_kb = server.rss_kb()?;
            drop((clients, warm_clients));
        } else {
            let warm_sockets = bare_clients(&url, warm).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            before_kb = server.rss_kb()?;
            let sockets = bare_clients(&url, n).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            after_kb = server.rss_kb()?;
            drop((sockets, warm_sockets));
        }
        // kB as /proc reports them (KiB), shown as KB.
        Ok(after_kb.saturating_sub(before_kb) as f64 / n as f64)
    }
    .await;
    drop(server);
    result
}

/// Sessions of the shared-agent row (its cost per session is flat: a smaller run will do).
const SHARED_AGENT_SESSIONS: usize = 2_000;

/// The memory rows: one agent per session (the adapters' own cost), and every session on one
/// agent (what a deployment serving one agent sees).
pub async fn rows(sizes: Sizes, fd_note: &str) -> Vec<Row> {
    let name = "idle sessions: RSS per session";
    let shared_name = "idle sessions, one agent: RSS/session";
    let limit = fd_limit();
    let mut n = sizes.idle;
    let mut note = format!("bare tuned tokio-tungstenite connections; {n} sessions, an agent each");
    // Each process (the server child, this one with the clients) holds ~n + WAVE sockets.
    let needed = (n + WAVE) as u64 + FD_HEADROOM;
    if limit < needed {
        let fit = (limit.saturating_sub(FD_HEADROOM + WAVE as u64)) as usize;
        if fit < 100 {
            let why = format!("{fd_note}: too low for even 100 sessions (raise ulimit -n)");
            return vec![
                Row::skipped(name, why.clone()),
                Row::skipped(shared_name, why),
            ];
        }
        note = format!("{note} wanted, but {fd_note} < {needed}: measured {fit} (raise ulimit -n)");
        n = fit;
    }
    // Each side in its own fresh child process.
    let ours = per_session_kb("tether", n, false).await;
    let bare = per_session_kb("bare", n, false).await;
    let m = n.min(SHARED_AGENT_SESSIONS);
    let shared = per_session_kb("tether", m, true).await;
    let mut rows = Vec::new();
    match (&ours, &bare) {
        (Ok(ours), Ok(bare)) => rows.push(Row::measured(
            name,
            *ours,
            *bare,
            Unit::KiloBytes,
            Target::ValueAtMost(12.0, "KB"),
            note,
        )),
        (Err(e), _) | (_, Err(e)) => rows.push(Row::failed(name, e.clone())),
    }
    match (&shared, &bare) {
        (Ok(shared), Ok(bare)) => rows.push(Row::measured(
            shared_name,
            *shared,
            *bare,
            Unit::KiloBytes,
            Target::ValueAtMost(12.0, "KB"),
            format!(
                "{m} sessions of one agent: hello_ok lists up to {} presence entries and \
                 tungstenite keeps its write buffer that large",
                tether_core::server::ServerConfig::default().handshake_presence_limit
            ),
        )),
        (Err(e), _) | (_, Err(e)) => rows.push(Row::failed(shared_name, e.clone())),
    }
    rows
}
