//! # tether-async-std
//!
//! tether over async-tungstenite for async-std **and** smol applications. Sockets come from
//! `async-net` and timers from `async-io` (the reactor both runtimes share), so the only
//! runtime-specific piece is where tasks are spawned:
//!
//! | feature | runtime type | executor |
//! |---|---|---|
//! | `async-std` (default) | [`AsyncStdRuntime`] | `async_std::task::spawn` |
//! | `smol` | [`SmolRuntime`] | `smol::spawn` (smol's global executor) |
//!
//! async-std is discontinued upstream in favour of smol; this crate keeps serving both. The
//! connection loops are the same as the tokio adapter's (`tether-driver`). No tokio is pulled in.
//! `wss://` is not wired in this adapter yet (use a TLS-terminating proxy, or the tokio adapter).
//!
//! ```no_run
//! # #[cfg(feature = "async-std")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use tether_async_std::{connect, AsyncStdRuntime, ClientConfig, Event};
//!
//! async_std::task::block_on(async {
//!     let (client, mut events) =
//!         connect(AsyncStdRuntime, "ws://127.0.0.1:8765/ws", Some("token"), ClientConfig::new("echo"))?;
//!     client.send("hello").await?;
//!     while let Some(event) = events.next().await {
//!         if let Event::Delivered(e) = event {
//!             println!("{} #{}: {}", e.kind, e.seq, e.payload);
//!         }
//!     }
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "async-std"))]
//! # fn main() {}
//! ```

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_net::{TcpListener, TcpStream};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::StatusCode;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::WebSocketStream;
use futures::channel::oneshot;
use futures::future::{self, Either};
use tether_driver::{BoxFuture, Connector, Runtime};

pub use tether_core::client::{ClientConfig, Event};
pub use tether_core::cursor::ResumeState;
pub use tether_core::server::{
    ConnId, Outcome, ServerConfig, ServerEvent, ServerSnapshot, SessionId,
};
pub use tether_driver::{
    load_snapshot, save_snapshot, Client, ClientError, ClientEvents, RequestOutcome, Server,
    ServerError, ServerEvents,
};

/// Read buffer per connection (see the tokio adapter: small buffers keep idle connections small).
pub const READ_BUFFER: usize = 4096;
/// Write buffer per connection.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// The tungstenite settings tether uses: small buffers, 16 MiB frame cap.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

fn sleep_until(deadline: Instant) -> BoxFuture<()> {
    Box::pin(async move {
        async_io::Timer::at(deadline).await;
    })
}

/// async-std's executor with async-io timers.
#[cfg(feature = "async-std")]
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdRuntime;

#[cfg(feature = "async-std")]
impl Runtime for AsyncStdRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        sleep_until(deadline)
    }
    fn spawn(&self, future: BoxFuture<()>) {
        async_std::task::spawn(future);
    }
}

/// smol's global executor with async-io timers.
#[cfg(feature = "smol")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

#[cfg(feature = "smol")]
impl Runtime for SmolRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        sleep_until(deadline)
    }
    fn spawn(&self, future: BoxFuture<()>) {
        smol::spawn(future).detach();
    }
}

/// Opens plain `ws://` WebSockets over async-net.
#[derive(Debug, Clone, Default)]
pub struct AsyncNetConnector;

impl Connector for AsyncNetConnector {
    type Socket = WebSocketStream<TcpStream>;
    fn connect(
        &self,
        url: &str,
    ) -> BoxFuture<Result<Self::Socket, async_tungstenite::tungstenite::Error>> {
        let url = url.to_owned();
        Box::pin(async move {
            use async_tungstenite::tungstenite::Error;
            let request = url.as_str().into_client_request()?;
            let uri = request.uri();
            if uri.scheme_str() != Some("ws") {
                return Err(Error::Url(
                    async_tungstenite::tungstenite::error::UrlError::UnsupportedUrlScheme,
                ));
            }
            let host = uri
                .host()
                .ok_or(Error::Url(
                    async_tungstenite::tungstenite::error::UrlError::NoHostName,
                ))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let (socket, _response) =
                async_tungstenite::client_async_with_config(request, tcp, Some(websocket_config()))
                    .await?;
            Ok(socket)
        })
    }
}

/// Starts a client on `runtime` ([`AsyncStdRuntime`] or [`SmolRuntime`]).
pub fn connect<R: Runtime>(
    runtime: R,
    url: &str,
    token: Option<&str>,
    config: ClientConfig,
) -> Result<(Client, ClientEvents), ClientError> {
    Client::start(runtime, AsyncNetConnector, url, token, config)
}

/// Starts a client that resumes a persisted session.
pub fn connect_resumed<R: Runtime>(
    runtime: R,
    url: &str,
    token: Option<&str>,
    config: ClientConfig,
    state: ResumeState,
) -> Result<(Client, ClientEvents), ClientError> {
    Client::start_resumed(runtime, AsyncNetConnector, url, token, config, state)
}

/// A running server: the handle, its events, the bound address and its accept loop.
pub struct Bound {
    /// Publish, respond, snapshot, shut down.
    pub server: Server,
    /// Requests and session events: keep consuming them.
    pub events: ServerEvents,
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Resolves when the accept loop has ended and the port is free.
    pub accepting: BoxFuture<()>,
}

impl Bound {
    /// Graceful shutdown that returns once the listening port is free again.
    pub async fn shutdown(self) -> Result<ServerSnapshot, ServerError> {
        let snapshot = self.server.shutdown().await?;
        self.accepting.await;
        Ok(snapshot)
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Bind(std::io::Error),
    /// No OS entropy for the session-id seed.
    #[error("no OS entropy: {0}")]
    Entropy(String),
    /// The snapshot could not be restored.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Binds `addr` and serves WebSocket connections on `/ws` on `runtime` (other paths get
/// HTTP 403). As in the tokio adapter, an all-zero `seed` is replaced with OS entropy and an
/// `epoch_at_start` of 0 with the system clock.
pub async fn serve<R: Runtime>(
    runtime: R,
    addr: &str,
    mut config: ServerConfig,
    snapshot: Option<ServerSnapshot>,
) -> Result<Bound, ServeError> {
    if config.seed == [0; 32] {
        getrandom::fill(&mut config.seed).map_err(|e| ServeError::Entropy(e.to_string()))?;
    }
    if config.epoch_at_start == 0.0 {
        config.epoch_at_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
    }
    let listener = TcpListener::bind(addr).await.map_err(ServeError::Bind)?;
    let local_addr = listener.local_addr().map_err(ServeError::Bind)?;
    let (server, events) = Server::start(runtime.clone(), config, snapshot)?;
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let acceptor = server.clone();
    let rt = runtime.clone();
    runtime.spawn(Box::pin(async move {
        let mut stopped = Box::pin(acceptor.stopped());
        loop {
            let accepted = match future::select(Box::pin(listener.accept()), stopped).await {
                Either::Left((accepted, s)) => {
                    stopped = s;
                    accepted
                }
                Either::Right(((), _)) => break,
            };
            let Ok((tcp, peer)) = accepted else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            rt.spawn(Box::pin(upgrade(rt.clone(), acceptor.clone(), tcp, peer)));
        }
        // The port is free before anyone waiting on `accepting` hears the loop has ended.
        drop(listener);
        drop(done_tx);
    }));
    Ok(Bound {
        server,
        events,
        local_addr,
        accepting: Box::pin(async move {
            let _ = done_rx.await;
        }),
    })
}

/// Upgrades one TCP connection on `/ws` and hands it to the server.
async fn upgrade<R: Runtime>(runtime: R, server: Server, tcp: TcpStream, peer: SocketAddr) {
    let mut info = None;
    // The callback's error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| match tether_driver::connect_info(
        request,
        Some(peer.to_string()),
    ) {
        Ok(i) => {
            info = Some(i);
            Ok(response)
        }
        Err(refused) => {
            let mut r = ErrorResponse::new(Some(refused.reason));
            *r.status_mut() = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::FORBIDDEN);
            Err(r)
        }
    };
    let upgraded =
        async_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(websocket_config()))
            .await;
    if let (Ok(socket), Some(info)) = (upgraded, info) {
        server.attach(&runtime, socket, info);
    }
}
