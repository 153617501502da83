//! A fault-injecting WebSocket proxy that understands just enough of the protocol to hurt it
//! where it matters: it forwards bytes both ways and, server → client, splits the stream into
//! WebSocket frames and asks a [`Plan`] what to do to each frame that carries an event's
//! sequence number (a live tracked frame or a replay):
//!
//! - cut the connection in the middle of that frame ([`Fault::Cut`]): the client must resume;
//! - swallow it ([`Fault::Drop`]): the client sees a sequence gap and must repair it;
//! - send it twice ([`Fault::Duplicate`]): the client must drop the copy;
//! - hold it ([`Fault::Delay`]);
//! - stop carrying bytes one way while the connection stays open ([`Fault::HalfOpen`]): the
//!   client (server → client silent) or the server (client → server silent) must notice the
//!   silence.
//!
//! A [`Schedule`] keys faults by sequence number and draws their positions from a seed, so the
//! same seed injects the same faults on every run, whatever the timing (see its docs). Frames
//! it cannot read (fragmented, compressed, binary, over 16 MiB) pass untouched. Every
//! injected fault is logged ([`FaultProxy::injected`]) and reported to watchers as it happens
//! ([`FaultProxy::watch`]).
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use tether_testkit::proxy::{FaultKind, FaultProxy, Schedule};
//!
//! let schedule = Schedule::new(7)
//!     .every(100, FaultKind::Cut)
//!     .and_then(|s| s.every(250, FaultKind::Drop))
//!     .expect("valid periods");
//! let upstream = "127.0.0.1:8765".parse().unwrap();
//! let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), upstream, schedule).await?;
//! println!("point your client at {}", proxy.url());
//! # Ok(()) }
//! ```

mod frames;
mod schedule;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use frames::{Piece, Splitter};

pub use frames::EventInfo;
pub use schedule::{Direction, EntryProblem, Fault, FaultKind, Plan, Schedule, ScheduleError};

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Its rank among the proxy's faults (from 1).
    pub n: u64,
    /// The sequence number of the frame it hit.
    pub seq: u64,
    /// That frame's `type` (`message`, `replay`, ...): whether a given number is first seen
    /// live or as a replay depends on timing, so this is not part of the replayable log.
    pub frame_type: String,
    /// What was done.
    pub fault: Fault,
    /// The proxied connection it hit (from 1, in accept order).
    pub connection: u64,
    /// When.
    pub at: Instant,
}

impl Injected {
    /// The replayable part as a JSON object: `n`, `seq`, `fault` and the fault's parameters
    /// (the same seed gives the same lines).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({"n": self.n, "seq": self.seq});
        if let (Some(obj), Value::Object(fault)) = (v.as_object_mut(), self.fault.to_json()) {
            obj.extend(fault);
        }
        v
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault {} at seq {}: {}", self.n, self.seq, self.fault)
    }
}

/// A running proxy. Dropping it stops it: the listener and every proxied connection close.
pub struct FaultProxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

struct Shared {
    upstream: SocketAddr,
    plan: Mutex<Box<dyn Plan>>,
    log: Mutex<Vec<Injected>>,
    watchers: Mutex<Vec<mpsc::UnboundedSender<Injected>>>,
    connections: AtomicU64,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 picks a free one) and forwards every connection to
    /// `upstream`, with the faults `plan` decides.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        plan: impl Plan,
    ) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new(Box::new(plan)),
            log: Mutex::new(Vec::new()),
            watchers: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let s = shared.clone();
        let mut accept_stop = stopped.clone();
        tokio::spawn(async move {
            loop {
                let inbound = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => continue, // e.g. out of file descriptors: keep serving
                    },
                    _ = accept_stop.changed() => return,
                };
                let connection = s.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (s, mut stop) = (s.clone(), stopped.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = s.relay(inbound, connection) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        Ok(FaultProxy {
            local_addr,
            shared,
            stop,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://ADDR/ws`: the gateway URL through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.local_addr)
    }

    /// Every fault injected so far, in order.
    pub fn injected(&self) -> Vec<Injected> {
        lock(&self.shared.log).clone()
    }

    /// Faults as they are injected, from now on.
    pub fn watch(&self) -> mpsc::UnboundedReceiver<Injected> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.watchers).push(tx);
        rx
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update; the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    async fn relay(&self, inbound: TcpStream, connection: u64) {
        let Ok(outbound) = TcpStream::connect(self.upstream).await else {
            return; // the client sees a closed socket and retries
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (client_read, client_write) = inbound.into_split();
        let (server_read, server_write) = outbound.into_split();
        let up_silent = AtomicBool::new(false);
        // When either direction ends, both sockets close (the other copy is dropped).
        tokio::select! {
            _ = upstream(client_read, server_write, &up_silent) => {}
            _ = self.downstream(server_read, client_write, &up_silent, connection) => {}
        }
    }

    /// Server → client, frame by frame.
    async fn downstream(
        &self,
        mut from: impl AsyncRead + Unpin,
        mut to: impl AsyncWrite + Unpin,
        up_silent: &AtomicBool,
        connection: u64,
    ) -> std::io::Result<()> {
        let mut splitter = Splitter::default();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut pieces = Vec::new();
        let mut out = Vec::with_capacity(32 * 1024);
        let mut down_silent = false;
        loop {
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            if down_silent {
                continue; // half-open: what the server sends vanishes
            }
            splitter.feed(&chunk[..n], &mut pieces);
            out.clear();
            for piece in pieces.drain(..) {
                let (bytes, payload_at) = match piece {
                    Piece::Opaque(bytes) => {
                        out.extend_from_slice(&bytes);
                        continue;
                    }
                    Piece::Text { bytes, payload_at } => (bytes, payload_at),
                };
                let fault = EventInfo::of(&bytes[payload_at..])
                    .and_then(|event| self.decide(&event, connection));
                match fault {
                    None => out.extend_from_slice(&bytes),
                    Some(Fault::Drop) => {}
                    Some(Fault::Duplicate) => {
                        out.extend_from_slice(&bytes);
                        out.extend_from_slice(&bytes);
                    }
                    Some(Fault::Delay(d)) => {
                        to.write_all(&out).await?;
                        out.clear();
                        tokio::time::sleep(d).await;
                        out.extend_from_slice(&bytes);
                    }
                    Some(Fault::Cut { kept_permille }) => {
                        let keep = (bytes.len() * usize::from(kept_permille) / 1000)
                            .clamp(1, bytes.len() - 1);
                        out.extend_from_slice(&bytes[..keep]);
                        to.write_all(&out).await?;
                        let _ = to.shutdown().await;
                        return Ok(());
                    }
                    Some(Fault::HalfOpen(Direction::Down)) => {
                        down_silent = true;
                        break;
                    }
                    Some(Fault::HalfOpen(Direction::Up)) => {
                        up_silent.store(true, Ordering::SeqCst);
                        out.extend_from_slice(&bytes);
                    }
                }
            }
            pieces.clear();
            to.write_all(&out).await?;
        }
    }

    /// Asks the plan about one event frame; logs and reports the fault it picks.
    fn decide(&self, event: &EventInfo, connection: u64) -> Option<Fault> {
        let fault = lock(&self.plan).fault_for(event)?;
        let mut log = lock(&self.log);
        let injected = Injected {
            n: log.len() as u64 + 1,
            seq: event.seq,
            frame_type: event.kind.clone(),
            fault,
            connection,
            at: Instant::now(),
        };
        lock(&self.watchers).retain(|w| w.send(injected.clone()).is_ok());
        log.push(injected);
        Some(fault)
    }
}

/// Client → server: a plain copy, or nothing once the link is half-open that way.
async fn upstream(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    silent: &AtomicBool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !silent.load(Ordering::SeqCst) {
            to.write_all(&buf[..n]).await?;
        }
    }
}
