//! # tether-tokio
//!
//! tether over tokio and tokio-tungstenite: a client that reconnects by itself on the core's
//! schedule, resumes its session without loss or duplicates, and reports gaps it cannot repair.
//! The connection loop lives in `tether-driver` (shared with the async-std adapter); this crate
//! plugs in tokio's clock, timers and tasks and tokio-tungstenite's sockets.
//!
//! ```no_run
//! use futures::StreamExt;
//! use tether_tokio::{connect, ClientConfig, Event};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, mut events) = connect("ws://127.0.0.1:8765/ws", Some("token"), ClientConfig::new("echo"))?;
//! let outcome = client.send("hello").await?;
//! println!("outcome: {outcome:?}");
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Delivered(e) => println!("{} #{}: {}", e.kind, e.seq, e.payload),
//!         Event::Lost { from, to } => eprintln!("lost {from}..={to}"),
//!         Event::Closed(reason) => { eprintln!("closed: {reason:?}"); break }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tether_driver::{BoxFuture, Connector, Runtime};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tether_core::client::{ClientConfig, Event};
pub use tether_core::cursor::ResumeState;
pub use tether_core::server::{
    ConnId, Outcome, ServerConfig, ServerEvent, ServerSnapshot, SessionId,
};
pub use tether_driver::{
    load_snapshot, save_snapshot, Client, ClientError, ClientEvents, RequestOutcome, Server,
    ServerError, ServerEvents,
};

/// Read buffer per connection: tungstenite's default of 128 KiB makes 10,000 idle connections
/// cost ~1.4 GB; 4 KiB keeps them at ~7 KB each (DESIGN.md figures).
pub const READ_BUFFER: usize = 4096;
/// Write buffer per connection (frames are batched with `feed` + one `flush`).
pub const WRITE_BUFFER: usize = 16 * 1024;

/// The tungstenite settings tether uses: small buffers, 16 MiB frame cap.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// tokio's clock, timers and tasks.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
    fn spawn(&self, future: BoxFuture<()>) {
        tokio::spawn(future);
    }
}

/// Opens WebSockets with tokio-tungstenite (`wss://` with the `rustls` feature).
#[derive(Debug, Clone, Default)]
pub struct TokioConnector;

impl Connector for TokioConnector {
    type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
    fn connect(
        &self,
        url: &str,
    ) -> BoxFuture<Result<Self::Socket, tokio_tungstenite::tungstenite::Error>> {
        let url = url.to_owned();
        Box::pin(async move {
            let (socket, _response) =
                tokio_tungstenite::connect_async_with_config(url, Some(websocket_config()), true)
                    .await?;
            Ok(socket)
        })
    }
}

/// Starts a client on the current tokio runtime (must be called inside one).
pub fn connect(
    url: &str,
    token: Option<&str>,
    config: ClientConfig,
) -> Result<(Client, ClientEvents), ClientError> {
    Client::start(TokioRuntime, TokioConnector, url, token, config)
}

/// Starts a client that resumes a persisted session.
pub fn connect_resumed(
    url: &str,
    token: Option<&str>,
    config: ClientConfig,
    state: ResumeState,
) -> Result<(Client, ClientEvents), ClientError> {
    Client::start_resumed(TokioRuntime, TokioConnector, url, token, config, state)
}

/// A running server: the handle, its events, and the address it listens on.
pub struct Bound {
    /// Publish, respond, snapshot, shut down.
    pub server: Server,
    /// Requests and session events: keep consuming them.
    pub events: ServerEvents,
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The accept loop; it ends (freeing the port) once the server has stopped.
    pub accepting: tokio::task::JoinHandle<()>,
}

impl Bound {
    /// Graceful shutdown (see [`Server::shutdown`]) that returns once the listening port is
    /// free again, so a restarted server can bind it at once.
    pub async fn shutdown(self) -> Result<ServerSnapshot, ServerError> {
        let snapshot = self.server.shutdown().await?;
        let _ = self.accepting.await;
        Ok(snapshot)
    }
}

/// Binds `addr` and serves WebSocket connections on `/ws` (other paths get HTTP 403, like the
/// PraisonAI gateway). A `seed` of all zeros (the default) is replaced with OS entropy, so
/// session ids are unguessable; `epoch_at_start` of 0 is taken from the system clock.
/// `snapshot` restores sessions saved by a previous run.
pub async fn serve(
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
    let (server, events) = Server::start(TokioRuntime, config, snapshot)?;
    let acceptor = server.clone();
    let accepting = tokio::spawn(async move {
        let stopped = acceptor.stopped();
        tokio::pin!(stopped);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut stopped => break,
            };
            let Ok((tcp, peer)) = accepted else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let server = acceptor.clone();
            tokio::spawn(async move {
                let mut info = None;
                // The callback's error type is tungstenite's, not ours to shrink.
                #[allow(clippy::result_large_err)]
                let callback =
                    |request: &Request, response: Response| match tether_driver::connect_info(
                        request,
                        Some(peer.to_string()),
                    ) {
                        Ok(i) => {
                            info = Some(i);
                            Ok(response)
                        }
                        Err(refused) => Err(refusal(refused)),
                    };
                let upgraded = tokio_tungstenite::accept_hdr_async_with_config(
                    tcp,
                    callback,
                    Some(websocket_config()),
                )
                .await;
                if let (Ok(socket), Some(info)) = (upgraded, info) {
                    server.attach(&TokioRuntime, socket, info);
                }
            });
        }
        // The port is free before the task (and `Bound::shutdown`) completes.
        drop(listener);
    });
    Ok(Bound {
        server,
        events,
        local_addr,
        accepting,
    })
}

fn refusal(refused: tether_driver::UpgradeRefused) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(refused.reason));
    *response.status_mut() =
        tokio_tungstenite::tungstenite::http::StatusCode::from_u16(refused.status)
            .unwrap_or(tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN);
    response
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
