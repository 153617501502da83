//! Reconnect latency (tokio): from a cut to the first replayed event delivered, with zero
//! backoff, against a bare TCP connect + WebSocket handshake to a bare tokio-tungstenite server.
//!
//! The cut is a real one: `shutdown(SHUT_RDWR)` on the client's socket, so the client learns
//! of it from the kernel (end of stream) like a reset link, and the server sees the socket
//! close. An event published right after the cut is in the server's recovery window, not in the
//! client: the resume replays it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{ClientConfig, Event};
use tether_driver::tungstenite::Error as WsError;
use tether_driver::{websocket_config, BoxFuture, Client, ConnectOptions, Connector};
use tether_tokio::{TokioConnector, TokioRuntime};
use tokio_tungstenite::MaybeTlsStream;

use super::stream::{self, fields, Adapter, Pair};
use super::{before, percentile, Row, Sizes, Target, Unit};

/// The descriptor of the client's live socket.
#[derive(Default)]
struct Switch {
    fd: Mutex<Option<i32>>,
}

impl Switch {
    /// Shuts the live socket down both ways (the descriptor stays open: its owner closes it).
    fn cut(&self) -> bool {
        let fd = *self.fd.lock().unwrap_or_else(|p| p.into_inner());
        match fd {
            #[cfg(unix)]
            // SAFETY: `fd` belongs to the client's live socket, which the caller knows to be
            // open (the client has just delivered an event read from it); shutdown(2) does
            // not close or invalidate it.
            Some(fd) => unsafe { libc::shutdown(fd, libc::SHUT_RDWR) == 0 },
            _ => false,
        }
    }
}

/// tokio-tungstenite sockets whose descriptor the switch knows.
struct CutConnector {
    switch: Arc<Switch>,
}

impl Connector for CutConnector {
    type Socket = <TokioConnector as Connector>::Socket;
    fn connect(&self, url: &str) -> BoxFuture<Result<Self::Socket, WsError>> {
        let switch = self.switch.clone();
        let connecting = TokioConnector.connect(url);
        Box::pin(async move {
            let socket = connecting.await?;
            #[cfg(unix)]
            if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
                use std::os::fd::AsRawFd;
                *switch.fd.lock().unwrap_or_else(|p| p.into_inner()) = Some(tcp.as_raw_fd());
            }
            Ok(socket)
        })
    }
}

/// The tokio adapter with the cuttable connector.
#[derive(Clone)]
struct CutTokio {
    switch: Arc<Switch>,
}

impl Adapter for CutTokio {
    type Rt = TokioRuntime;
    fn rt(&self) -> TokioRuntime {
        TokioRuntime
    }
    fn serve(
        &self,
        config: tether_core::server::ServerConfig,
        options: tether_driver::ServerOptions,
    ) -> BoxFuture<Result<tether_driver::Bound, tether_driver::ServeError>> {
        stream::Tokio.serve(config, options)
    }
    fn connect(
        &self,
        url: &str,
        config: ClientConfig,
    ) -> Result<(Client, tether_driver::ClientEvents), tether_driver::ClientError> {
        let connector = CutConnector {
            switch: self.switch.clone(),
        };
        Client::start(
            TokioRuntime,
            connector,
            url,
            config,
            ConnectOptions::default(),
        )
    }
    fn bare_stream(&self, _n: u64) -> BoxFuture<Result<f64, String>> {
        Box::pin(async { Err("not used".to_owned()) })
    }
}

/// Reconnect at once, every time.
fn zero_backoff() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            jitter: Jitter::None,
            ..BackoffConfig::default()
        },
        ..ClientConfig::new("bench")
    }
}

/// One cut-to-first-replayed-event sample: `None` if the new connection won the race and got
/// the event live (the sample is not counted).
async fn tether_sample(
    pair: &mut Pair,
    switch: &Switch,
    n: &mut u64,
) -> Result<Option<Duration>, String> {
    let publish = |n: u64| {
        let (server, session) = (pair.server.clone(), pair.session.clone());
        async move {
            server
                .publish_many(&session, "message", vec![fields(n)])
                .await
                .map_err(|e| format!("publish: {e}"))
        }
    };
    // A live event first: the client is connected and its cursor is known.
    *n += 1;
    publish(*n).await?;
    wait_for(&mut pair.events, *n).await?;
    let cut = Instant::now();
    if !switch.cut() {
        return Err("cannot cut the client's socket".into());
    }
    *n += 1;
    publish(*n).await?;
    let (at, replayed) = wait_for(&mut pair.events, *n).await?;
    Ok(replayed.then(|| at.saturating_duration_since(cut)))
}

/// Waits for event `seq`: when it arrived and whether it was replayed.
async fn wait_for(
    events: &mut tether_driver::ClientEvents,
    seq: u64,
) -> Result<(Instant, bool), String> {
    let found = before(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            match e {
                Event::Delivered(d) if d.seq >= seq => return Ok((Instant::now(), d.replayed)),
                Event::Lost { from, to } => return Err(format!("lost {from}..={to}")),
                Event::Closed(r) => return Err(format!("client closed: {r:?}")),
                _ => {}
            }
        }
        Err("client events ended".to_owned())
    })
    .await;
    found.unwrap_or_else(|| Err(format!("event {seq} not delivered within 10 s")))
}

/// A bare tokio-tungstenite server that accepts WebSocket connections until aborted.
async fn bare_server() -> Result<(String, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                if let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(tcp, Some(websocket_config())).await
                {
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    Ok((format!("ws://{addr}/ws"), server))
}

/// One bare TCP connect + WebSocket handshake.
async fn bare_sample(url: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(websocket_config()), true)
            .await
            .map_err(|e| format!("bare handshake: {e}"))?;
    let took = started.elapsed();
    let _ = ws.close(None).await;
    Ok(took)
}

/// Interleaved samples, one of each at a time, so both sides see the same noise.
async fn samples(count: usize) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let switch = Arc::new(Switch::default());
    let adapter = CutTokio {
        switch: switch.clone(),
    };
    let (url, server) = bare_server().await?;
    let mut pair = Pair::start(&adapter, zero_backoff()).await?;
    let (mut ours, mut bare) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let mut n = 0;
    let mut attempts = 0;
    let result = async {
        while ours.len() < count {
            attempts += 1;
            if attempts > count * 3 + 10 {
                return Err(format!(
                    "only {} of {count} reconnects replayed the event",
                    ours.len()
                ));
            }
            if let Some(sample) = tether_sample(&mut pair, &switch, &mut n).await? {
                ours.push(sample);
                bare.push(bare_sample(&url).await?);
            }
        }
        Ok(())
    }
    .await;
    pair.stop().await;
    server.abort();
    result.map(|()| (ours, bare))
}

/// The p50 and p99 rows.
pub async fn rows(sizes: Sizes) -> Vec<Row> {
    let (mut ours, mut bare) = match samples(sizes.reconnects).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    ours.sort();
    bare.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let note = format!(
        "bare TCP connect + WS handshake (tokio-tungstenite); {} of each, interleaved",
        ours.len()
    );
    [50, 99]
        .into_iter()
        .map(|p| {
            Row::measured(
                format!("reconnect → replay p{p}, tokio"),
                micros(percentile(&ours, p)),
                micros(percentile(&bare, p)),
                Unit::Micros,
                Target::AtMost(3.0),
                note.clone(),
            )
        })
        .collect()
}

fn failed(e: String) -> Vec<Row> {
    vec![
        Row::failed("reconnect → replay p50, tokio", e.clone()),
        Row::failed("reconnect → replay p99, tokio", e),
    ]
}
