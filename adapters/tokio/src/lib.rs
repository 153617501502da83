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

use std::time::Instant;

use tether_driver::{BoxFuture, Connector, Runtime};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tether_core::client::{ClientConfig, Event};
pub use tether_core::cursor::ResumeState;
pub use tether_driver::{Client, ClientError, ClientEvents, RequestOutcome};

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
