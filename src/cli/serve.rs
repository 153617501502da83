//! `tether serve`: a gateway server on tether-tokio, with an echo agent, an optional synthetic
//! event stream and an optional state file so sessions survive a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tether_core::server::Authenticator;
use tether_tokio::{
    load_snapshot, save_snapshot, serve, Audience, Bound, Outcome, Server, ServerConfig,
    ServerEvent, ServerEvents, ServerOptions, ServerSnapshot, TokioRuntime,
};
use tokio::sync::watch;

use super::auth::Tokens;
use super::{parse_duration, parse_rate, parse_size, Failure, Pacer};

/// A recovery window: a duration of at least a millisecond (events must outlive their send).
fn parse_window(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d >= Duration::from_millis(1) => Ok(d),
        _ => Err(format!("{text:?}: the recovery window must be positive")),
    }
}

/// Options of `tether serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (clients connect to ws://ADDR/ws).
    #[arg(long, default_value = "127.0.0.1:8765", value_name = "ADDR")]
    pub listen: String,
    /// Shared token clients must present (?token=). Without it one is generated and printed;
    /// with --state-file it is kept in PATH.token so a restart accepts the same clients.
    /// Repeat it to admit several principals: a session created with one token cannot be
    /// resumed with another.
    #[arg(long = "token", value_name = "T")]
    pub tokens: Vec<String>,
    /// Publish a synthetic `message` event to every session at this rate (e.g. 100/s, 600/min),
    /// each event stored once for all sessions.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub emit_rate: Option<f64>,
    /// How long events stay available to a reconnecting client (the recovery window), within
    /// the two byte bounds below: whichever is reached first evicts the oldest events, and a
    /// client that resumes after them is told exactly what it lost.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_window)]
    pub recovery_window: Duration,
    /// Most bytes of events one session keeps for its resume (an event published to many
    /// sessions counts in full in each).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub recovery_session_bytes: usize,
    /// Most bytes of events all sessions keep together (an event published to many sessions
    /// is stored, and counted, once).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub recovery_total_bytes: usize,
    /// Ping interval in milliseconds (advertised to clients); 0 disables pings and reaping.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub heartbeat_ms: u64,
    /// Keep sessions in this file: restored at start, saved every --save-every and on
    /// SIGINT/SIGTERM. A graceful stop loses nothing; `kill -9` loses what was published since
    /// the last periodic save (clients then report a server reset).
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// How often the state file is saved while running.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub save_every: Duration,
    /// Accept only these agent ids (repeatable). Default: any agent id.
    #[arg(long = "agent", value_name = "ID")]
    pub agents: Vec<String>,
    /// Run as one node of a multi-node gateway: sessions, replay logs, request ids and presence
    /// live in this Redis, shared by every node started with the same URL, prefix and --token.
    #[arg(long, value_name = "redis://HOST:PORT", conflicts_with = "state_file")]
    pub redis: Option<String>,
    /// Prefix of the Redis keys (several gateways can share one Redis).
    #[arg(long, value_name = "P", default_value = "tether", requires = "redis")]
    pub redis_prefix: String,
    /// Serve the control hook on this address (e.g. 127.0.0.1:0): line-JSON `publish`
    /// commands, carrying a token, that publish events into a session. For `tether check
    /// --control` and tests; see docs/PROTOCOL-v2.md.
    #[arg(long, value_name = "ADDR", conflicts_with = "redis")]
    pub control: Option<String>,
    /// --redis names seed nodes of a Redis Cluster, comma-separated
    /// (redis://HOST:PORT,redis://HOST:PORT,...).
    #[arg(long, requires = "redis")]
    pub redis_cluster: bool,
}

/// Runs the server until SIGINT/SIGTERM, then shuts down gracefully and saves the state file.
pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let (tokens, generated) = resolve_tokens(&args)?;
    let token = tokens[0].clone();
    let snapshot = match &args.state_file {
        Some(path) => load_snapshot(path).map_err(|e| {
            Failure::Runtime(format!(
                "cannot restore sessions: {e} (move the file away to start empty)"
            ))
        })?,
        None => None,
    };
    // The emitter keeps numbering where the snapshot left off.
    let restored = snapshot.as_ref().map_or(0, |s| s.sessions.len());
    let emitted = snapshot
        .iter()
        .flat_map(|s| &s.sessions)
        .map(|s| s.head)
        .max()
        .unwrap_or(0);

    let config = ServerConfig {
        agents: args.agents.clone(),
        auth_token: Some(token.clone()),
        heartbeat_interval: (args.heartbeat_ms > 0)
            .then(|| Duration::from_millis(args.heartbeat_ms)),
        recovery_window: args.recovery_window,
        recovery_session_bytes: args.recovery_session_bytes,
        recovery_total_bytes: args.recovery_total_bytes,
        ..ServerConfig::default()
    };
    let cannot = |e: &dyn std::fmt::Display| {
        Failure::Runtime(format!("cannot serve on {}: {e}", args.listen))
    };
    let (bound, node) = match &args.redis {
        Some(url) => {
            let base = if args.redis_cluster {
                tether_redis::RedisConfig::cluster(url.split(',').map(str::trim))
            } else {
                tether_redis::RedisConfig::new(url.clone())
            };
            let store = tether_redis::RedisConfig {
                prefix: args.redis_prefix.clone(),
                ..base
            };
            let (bound, node) = tether_redis::serve(TokioRuntime, config, store, |config| {
                serve(TokioRuntime, &args.listen, config, ServerOptions::default())
            })
            .await
            .map_err(|e| cannot(&e))?;
            eprintln!(
                "node {} of the gateway in {url} (prefix {})",
                node.node_id(),
                args.redis_prefix
            );
            (bound, Some(node))
        }
        None => (
            serve(
                TokioRuntime,
                &args.listen,
                config,
                ServerOptions::default().snapshot(snapshot),
            )
            .await
            .map_err(|e| cannot(&e))?,
            None,
        ),
    };
    let Bound {
        server,
        events,
        local_addr,
        accepting,
    } = bound;
    if tokens.len() > 1 {
        // Set before the address is printed: a client that read it is never refused.
        let several = Tokens::new(&tokens);
        server
            .apply(move |machine, _| machine.set_authenticator(Box::new(several)))
            .await
            .map_err(|e| cannot(&e))?;
    }
    let control = match &args.control {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::Runtime(format!("cannot serve the control hook on {addr}: {e}"))
            })?;
            let at = listener.local_addr().map_err(|e| cannot(&e))?;
            let auth: Arc<dyn Authenticator + Send + Sync> = Arc::new(Tokens::new(&tokens));
            let hook = tokio::spawn(super::control::serve(listener, server.clone(), auth));
            Some((at, hook))
        }
        None => None,
    };

    let url = format!("ws://{local_addr}/ws");
    println!("listening on {url}");
    if generated {
        println!("token: {token} (generated; pass --token to choose one)");
    } else {
        for token in &tokens {
            println!("token: {token}");
        }
    }
    if let Some((at, _)) = &control {
        println!("control hook on {at}");
    }
    let agent = args.agents.first().map_or("echo", String::as_str);
    println!("try: tether connect {url} --agent-id {agent} --token {token}");
    if let Some(path) = &args.state_file {
        eprintln!(
            "state file {}: {restored} session(s) restored; saved every {:?} and on SIGINT/SIGTERM",
            path.display(),
            args.save_every
        );
    }

    let (stop_tx, stop) = watch::channel(false);
    let handler = tokio::spawn(handle_events(server.clone(), events));
    let emitter = args
        .emit_rate
        .map(|rate| tokio::spawn(emit(server.clone(), emitted, rate, stop.clone())));
    let saver = args.state_file.clone().map(|path| {
        tokio::spawn(save_periodically(
            server.clone(),
            path,
            args.save_every,
            stop.clone(),
        ))
    });

    super::shutdown_signal().await;
    eprintln!("shutting down (a second signal exits at once)");
    tokio::spawn(async {
        super::shutdown_signal().await;
        std::process::exit(130);
    });
    // Stop the writers first so no periodic save can land after the final one.
    let _ = stop_tx.send(true);
    if let Some(emitter) = emitter {
        let _ = emitter.await;
    }
    if let Some(saver) = saver {
        let _ = saver.await;
    }
    let snapshot = match &node {
        // The store's queued writes and presence are settled before the process exits.
        Some(node) => node.shutdown().await.map_err(|e| e.to_string()),
        None => server.shutdown().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| Failure::Runtime(format!("shutdown failed: {e}")))?;
    let _ = accepting.await;
    handler.abort();
    if let Some((_, hook)) = control {
        hook.abort();
    }
    if let Some(path) = &args.state_file {
        save(path.clone(), snapshot.clone()).await?;
        eprintln!(
            "saved {} session(s) to {}",
            snapshot.sessions.len(),
            path.display()
        );
    }
    Ok(())
}

/// The tokens to require (at least one), and whether the token was generated.
fn resolve_tokens(args: &ServeArgs) -> Result<(Vec<String>, bool), Failure> {
    if !args.tokens.is_empty() {
        if args.tokens.iter().any(String::is_empty) {
            return Err(Failure::Usage("--token must not be empty".into()));
        }
        return Ok((args.tokens.clone(), false));
    }
    let file = args.state_file.as_ref().map(|p| token_file(p));
    if let Some(file) = &file {
        if let Ok(saved) = std::fs::read_to_string(file) {
            let saved = saved.trim();
            if !saved.is_empty() {
                return Ok((vec![saved.to_owned()], true));
            }
        }
    }
    let token = super::hex(&super::random_bytes()?[..16]);
    if let Some(file) = &file {
        write_private(file, token.as_bytes()).map_err(|e| {
            Failure::Runtime(format!("cannot write token file {}: {e}", file.display()))
        })?;
    }
    Ok((vec![token], true))
}

/// `PATH.token`, next to the state file.
fn token_file(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".token");
    PathBuf::from(name)
}

/// The token is a credential: readable by the owner only.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(contents)
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, contents)
    }
}

/// Consumes server events (the hub waits if nobody does): answers requests like the PraisonAI
/// stub agent, and reports sessions on stderr.
async fn handle_events(server: Server, mut events: ServerEvents) {
    while let Some(event) = events.next().await {
        match event {
            ServerEvent::SessionCreated {
                session, agent_id, ..
            } => {
                eprintln!("session {} created (agent {agent_id})", session.as_str());
            }
            ServerEvent::SessionResumed { session, .. } => {
                eprintln!("session {} resumed", session.as_str());
            }
            ServerEvent::SessionDetached { session } => {
                eprintln!("session {} detached (kept for resume)", session.as_str());
            }
            ServerEvent::SessionExpired { session } => {
                eprintln!("session {} expired", session.as_str());
            }
            ServerEvent::Request {
                session,
                request_id,
                content,
                ..
            } => {
                let server = server.clone();
                tokio::spawn(async move {
                    let answer = Outcome::ok(format!("echo: {content}"));
                    if let Err(e) = server.respond(&session, &request_id, answer).await {
                        tracing::debug!(%e, "request not answered");
                    }
                });
            }
            other => tracing::debug!(?other, "server event"),
        }
    }
}

/// Publishes `{"content":"event n","n":n}` to every session at `rate` per second, each event
/// once for all of them (stored once; each session numbers it with its own `seq`). `n` counts
/// the events that reached a session, after `emitted` (so a session that was there from the
/// start sees `n == seq`).
async fn emit(server: Server, emitted: u64, rate: f64, mut stop: watch::Receiver<bool>) {
    let mut pacer = Pacer::new(rate);
    let mut n = emitted;
    loop {
        let due = tokio::select! {
            due = pacer.next_batch() => due,
            _ = stop.changed() => return,
        };
        for _ in 0..due {
            let fields = vec![
                ("content".to_owned(), json!(format!("event {}", n + 1))),
                ("n".to_owned(), json!(n + 1)),
            ];
            match server.publish_to(Audience::All, "message", fields).await {
                Ok(0) => break, // nobody to publish to yet
                Ok(_) => n += 1,
                Err(_) => return, // the server is stopping
            }
        }
    }
}

/// Saves a snapshot every `every` until told to stop; a failed save is reported once per
/// streak, not every second.
async fn save_periodically(
    server: Server,
    path: PathBuf,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate: the restored state is already on disk
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let Ok(snapshot) = server.snapshot().await else {
            return;
        };
        match save(path.clone(), snapshot).await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    eprintln!("tether: warning: {}", e.message().unwrap_or_default());
                }
                failing = true;
            }
        }
    }
}

/// Writes the snapshot off the async threads.
async fn save(path: PathBuf, snapshot: ServerSnapshot) -> Result<(), Failure> {
    tokio::task::spawn_blocking(move || save_snapshot(&path, &snapshot))
        .await
        .map_err(|e| Failure::Runtime(format!("saving the state file failed: {e}")))?
        .map_err(|e| Failure::Runtime(format!("cannot save the state file: {e}")))
}
