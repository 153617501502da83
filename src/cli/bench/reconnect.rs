//! Reconnect latency (tokio): from a cut to the first replayed event delivered, with zero
//! backoff, against a bare TCP connect + WebSocket handshake to a bare tokio-tungstenite server.
//!
//! The cut is made on the client's side of the socket (a switch in the connector's stream
//! makes the next read fail, as a reset link does); the server learns of it only through the
//! resume that takes the session over. An event published right after the cut is in the
//! server's ring, not in the client: the resume replays it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use futures::{Sink, Stream, StreamExt};
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{ClientConfig, Event};
use tether_driver::tungstenite::{Error as WsError, Message};
use tether_driver::{websocket_config, BoxFuture, Client, Connector};
use tether_tokio::{TokioConnector, TokioRuntime};

use super::stream::{self, fields, Adapter, Pair};
use super::{before, percentile, Row, Sizes, Target, Unit};

/// The kill switch shared by the connector and its sockets.
#[derive(Default)]
struct Switch {
    /// Bumped by each cut: sockets opened before it fail.
    generation: AtomicU64,
    /// The live socket's reader.
    waker: AtomicWaker,
}

impl Switch {
    fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// A socket that fails once the switch has been cut after it was opened.
struct Cuttable<S> {
    inner: S,
    switch: Arc<Switch>,
    born: u64,
}

impl<S> Cuttable<S> {
    fn is_cut(&self) -> bool {
        self.switch.generation.load(Ordering::SeqCst) != self.born
    }
    fn reset() -> WsError {
        WsError::Io(std::io::ErrorKind::ConnectionReset.into())
    }
}

impl<S: Stream<Item = Result<Message, WsError>> + Unpin> Stream for Cuttable<S> {
    type Item = Result<Message, WsError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.switch.waker.register(cx.waker());
        if self.is_cut() {
            return Poll::Ready(Some(Err(Self::reset())));
        }
        self.inner.poll_next_unpin(cx)
    }
}

impl<S: Sink<Message, Error = WsError> + Unpin> Sink<Message> for Cuttable<S> {
    type Error = WsError;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.is_cut() {
            return Poll::Ready(Err(Self::reset()));
        }
        Pin::new(&mut self.inner).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        if self.is_cut() {
            return Err(Self::reset());
        }
        Pin::new(&mut self.inner).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.is_cut() {
            return Poll::Ready(Err(Self::reset()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// tokio-tungstenite sockets behind a kill switch.
struct CutConnector {
    switch: Arc<Switch>,
}

impl Connector for CutConnector {
    type Socket = Cuttable<<TokioConnector as Connector>::Socket>;
    fn connect(&self, url: &str) -> BoxFuture<Result<Self::Socket, WsError>> {
        let switch = self.switch.clone();
        let connecting = TokioConnector.connect(url);
        Box::pin(async move {
            let inner = connecting.await?;
            let born = switch.generation.load(Ordering::SeqCst);
            Ok(Cuttable {
                inner,
                switch,
                born,
            })
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
    ) -> BoxFuture<Result<tether_driver::Bound, tether_driver::ServeError>> {
        stream::Tokio.serve(config)
    }
    fn connect(
        &self,
        url: &str,
        config: ClientConfig,
    ) -> Result<(Client, tether_driver::ClientEvents), tether_driver::ClientError> {
        let connector = CutConnector {
            switch: self.switch.clone(),
        };
        Client::start(TokioRuntime, connector, url, None, config)
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
            healthy_after: Duration::ZERO,
            ..BackoffConfig::default()
        },
        ..ClientConfig::new("bench")
    }
}

/// Cut-to-first-replayed-event samples (only runs where the event was replayed count; a run
/// where the new connection won the race and got it live is repeated).
async fn tether_samples(count: usize) -> Result<Vec<Duration>, String> {
    let switch = Arc::new(Switch::default());
    let adapter = CutTokio {
        switch: switch.clone(),
    };
    let mut pair = Pair::start(&adapter, zero_backoff()).await?;
    let mut samples = Vec::with_capacity(count);
    let mut n = 0u64;
    let mut attempts = 0;
    let result = loop {
        if samples.len() >= count {
            break Ok(());
        }
        attempts += 1;
        if attempts > count * 3 + 10 {
            break Err(format!(
                "only {} of {count} reconnects replayed the event",
                samples.len()
            ));
        }
        // A live event first: the client is connected and its cursor is known.
        n += 1;
        if let Err(e) = pair
            .server
            .publish_many(&pair.session, "message", vec![fields(n)])
            .await
        {
            break Err(format!("publish: {e}"));
        }
        match wait_for(&mut pair.events, n).await {
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        let cut = Instant::now();
        switch.cut();
        n += 1;
        if let Err(e) = pair
            .server
            .publish_many(&pair.session, "message", vec![fields(n)])
            .await
        {
            break Err(format!("publish: {e}"));
        }
        match wait_for(&mut pair.events, n).await {
            Ok((at, true)) => samples.push(at.saturating_duration_since(cut)),
            Ok((_, false)) => {}
            Err(e) => break Err(e),
        }
    };
    pair.stop().await;
    result.map(|()| samples)
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

/// Bare TCP connect + WebSocket handshake samples against a bare tokio-tungstenite server.
async fn bare_samples(count: usize) -> Result<Vec<Duration>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
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
    let url = format!("ws://{addr}/ws");
    let mut samples = Vec::with_capacity(count);
    let mut failure = None;
    for _ in 0..count {
        let started = Instant::now();
        match tokio_tungstenite::connect_async_with_config(&url, Some(websocket_config()), true)
            .await
        {
            Ok((ws, _)) => {
                samples.push(started.elapsed());
                drop(ws);
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    server.abort();
    match failure {
        Some(e) => Err(format!("bare handshake: {e}")),
        None => Ok(samples),
    }
}

/// The p50 and p99 rows.
pub async fn rows(sizes: Sizes) -> Vec<Row> {
    // Interleaved halves, so both sides see the same noise.
    let half = sizes.reconnects.div_ceil(2);
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..2 {
        match tether_samples(half).await {
            Ok(s) => ours.extend(s),
            Err(e) => return failed(e),
        }
        match bare_samples(half).await {
            Ok(s) => bare.extend(s),
            Err(e) => return failed(e),
        }
    }
    ours.sort();
    bare.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let note = format!(
        "bare TCP connect + WS handshake (tokio-tungstenite); {} reconnects",
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
