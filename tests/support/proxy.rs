//! A small TCP proxy for fault injection: cuts each connection after a random number of bytes,
//! resets the connections open at a given moment (TCP RST both ways), or turns into a black
//! hole (keeps the sockets open, forwards nothing: a half-open link).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_core::rng::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    target: SocketAddr,
    rng: Mutex<Rng>,
    /// Cut each connection after a uniform number of bytes in this range (None: never).
    cut_range: Mutex<Option<(u64, u64)>>,
    /// Connections with a generation below this forward nothing (half-open).
    black_hole_below: AtomicU64,
    /// Open connections by generation, with the signal that resets them.
    live: Mutex<BTreeMap<u64, Arc<Notify>>>,
    cuts: AtomicU64,
    resets: AtomicU64,
    connections: AtomicU64,
}

impl Proxy {
    /// Starts on the fixture runtime; awaitable from any runtime.
    pub async fn start(target: SocketAddr, seed: u64) -> Self {
        super::background(Self::start_here(target, seed)).await
    }

    async fn start_here(target: SocketAddr, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            target,
            rng: Mutex::new(Rng::from_u64(seed)),
            cut_range: Mutex::new(None),
            black_hole_below: AtomicU64::new(0),
            live: Mutex::new(BTreeMap::new()),
            cuts: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.serve(inbound).await });
            }
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn cut_randomly(&self, min_bytes: u64, max_bytes: u64) {
        *self.state.cut_range.lock().unwrap() = Some((min_bytes, max_bytes));
    }

    pub fn stop_cutting(&self) {
        *self.state.cut_range.lock().unwrap() = None;
    }

    /// Every connection open now goes silent both ways (sockets stay open); new connections
    /// forward normally, so a reconnect goes through.
    pub fn black_hole_current(&self) {
        let next = self.state.connections.load(Ordering::SeqCst) + 1;
        self.state.black_hole_below.store(next, Ordering::SeqCst);
    }

    /// Resets every connection open now: both sockets are closed with an RST (a crashed
    /// middlebox, a NAT that forgot the flow). New connections forward normally. Returns how
    /// many were open.
    pub fn reset_current(&self) -> usize {
        let live: Vec<Arc<Notify>> = self.state.live.lock().unwrap().values().cloned().collect();
        for kill in &live {
            kill.notify_one();
        }
        live.len()
    }

    /// Every connection open now goes silent both ways for `silence` (a half-open link), then
    /// is reset if still open. New connections forward normally. Returns how many were open.
    pub fn half_open_current(&self, silence: Duration) -> usize {
        let live: Vec<Arc<Notify>> = self.state.live.lock().unwrap().values().cloned().collect();
        self.black_hole_current();
        let kills = live.clone();
        tokio::spawn(async move {
            tokio::time::sleep(silence).await;
            for kill in &kills {
                kill.notify_one();
            }
        });
        live.len()
    }

    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// Connections reset so far (by `reset_current` or at the end of a half-open spell).
    pub fn resets(&self) -> u64 {
        self.state.resets.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl State {
    async fn serve(self: Arc<Self>, mut inbound: TcpStream) {
        let Ok(mut outbound) = TcpStream::connect(self.target).await else {
            return;
        };
        let generation = self.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let budget = match *self.cut_range.lock().unwrap() {
            Some((lo, hi)) => {
                let r = self.rng.lock().unwrap().next_u64();
                (lo + r % (hi - lo).max(1)) as i64
            }
            None => i64::MAX,
        };
        let budget = Arc::new(AtomicI64::new(budget));
        let kill = Arc::new(Notify::new());
        self.live.lock().unwrap().insert(generation, kill.clone());
        // When either direction ends, both sockets close (the other pump is dropped).
        let end = {
            let (ri, wi) = inbound.split();
            let (ro, wo) = outbound.split();
            tokio::select! {
                cut = pump(ri, wo, budget.clone(), &self, generation) => Some(cut),
                cut = pump(ro, wi, budget, &self, generation) => Some(cut),
                () = kill.notified() => None,
            }
        };
        self.live.lock().unwrap().remove(&generation);
        match end {
            Some(true) => {
                self.cuts.fetch_add(1, Ordering::SeqCst);
            }
            Some(false) => {}
            None => {
                // Closed with an RST on both sides.
                let _ = inbound.set_zero_linger();
                let _ = outbound.set_zero_linger();
                self.resets.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Copies until EOF, error or the shared byte budget runs out; true if it was a cut.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    budget: Arc<AtomicI64>,
    state: &State,
    generation: u64,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if generation < state.black_hole_below.load(Ordering::SeqCst) {
            continue; // swallowed: the peer never hears of it
        }
        let left = budget.fetch_sub(n as i64, Ordering::SeqCst);
        if left <= 0 {
            return true;
        }
        let take = (left as usize).min(n);
        if to.write_all(&buf[..take]).await.is_err() {
            return false;
        }
        if take < n {
            // The cut lands mid-frame: both directions die here.
            let _ = to.shutdown().await;
            return true;
        }
    }
}
