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
//! A server and a client on async-std (with the `smol` feature, the same code runs on
//! `SmolRuntime` with `smol::block_on` and `smol::spawn`):
//!
//! ```
//! # #[cfg(feature = "async-std")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use async_std::task;
//! use futures::StreamExt;
//! use tether_async_std::{connect, serve, AsyncStdRuntime, ClientConfig, Outcome};
//! use tether_async_std::{RequestOutcome, ServerConfig, ServerEvent, ServerOptions};
//!
//! task::block_on(async {
//!     let options = ServerOptions::default();
//!     let mut gateway = serve(AsyncStdRuntime, "127.0.0.1:0", ServerConfig::default(), options).await?;
//!     let url = format!("ws://{}/ws", gateway.local_addr);
//!     let server = gateway.server.clone();
//!     task::spawn(async move {
//!         while let Some(event) = gateway.events.next().await {
//!             if let ServerEvent::Request { session, request_id, content, .. } = event {
//!                 let (server, answer) = (server.clone(), Outcome::ok(format!("echo: {content}")));
//!                 task::spawn(async move { server.respond(&session, &request_id, answer).await });
//!             }
//!         }
//!     });
//!     let (client, _events) = connect(AsyncStdRuntime, url, ClientConfig::new("echo"), Default::default())?;
//!     let answer = client.send("hello").await?;
//!     let RequestOutcome::Final { content: Some(content), .. } = answer else { panic!("{answer:?}") };
//!     assert_eq!(content.to_string(), "echo: hello");
//!     client.disconnect().await;
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "async-std"))]
//! # fn main() {}
//! ```

mod prefixed;

use std::sync::Arc;
use std::time::Instant;

use async_net::{TcpListener, TcpStream};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::UrlError;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::WebSocketStream;
use tether_driver::{BoxFuture, Connector, Runtime};

pub use tether_core::client::{ClientConfig, Event};
pub use tether_core::cursor::ResumeState;
pub use tether_core::server::{
    Audience, ConnId, Outcome, ServerConfig, ServerEvent, ServerSnapshot, SessionId,
};
pub use tether_core::wire::{Content, EventBatch, FieldsError};
pub use tether_driver::{
    load_snapshot, save_snapshot, websocket_config, Bound, Client, ClientError, ClientEvents,
    ConnectOptions, Endpoints, RequestOutcome, ServeError, Server, ServerError, ServerEvents,
    ServerOptions, PUBLISH_MANY_MAX,
};

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
    /// smol's global executor runs every task on one thread by default.
    fn yield_after_read(&self) -> bool {
        true
    }
}

/// Opens plain `ws://` WebSockets over async-net.
#[derive(Debug, Clone, Default)]
pub struct AsyncNetConnector;

impl Connector for AsyncNetConnector {
    type Socket = WebSocketStream<TcpStream>;
    fn connect(&self, url: &str) -> BoxFuture<Result<Self::Socket, WsError>> {
        let url = url.to_owned();
        Box::pin(async move {
            let request = url.as_str().into_client_request()?;
            let uri = request.uri();
            if uri.scheme_str() != Some("ws") {
                return Err(WsError::Url(UrlError::UnsupportedUrlScheme));
            }
            let host = uri.host().ok_or(WsError::Url(UrlError::NoHostName))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let tcp = TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(80))).await?;
            let _ = tcp.set_nodelay(true);
            let config = Some(websocket_config());
            let (socket, _response) =
                async_tungstenite::client_async_with_config(request, tcp, config).await?;
            Ok(socket)
        })
    }
}

/// Starts a client at `url` on `runtime` ([`AsyncStdRuntime`], [`SmolRuntime`] or your own):
/// a new session, or the one in [`ConnectOptions::resume`]. `url` may be a list of
/// [`Endpoints`], tried in turn at each reconnect.
pub fn connect<R: Runtime>(
    runtime: R,
    url: impl Into<Endpoints>,
    config: ClientConfig,
    options: ConnectOptions,
) -> Result<(Client, ClientEvents), ClientError> {
    Client::start(runtime, AsyncNetConnector, url, config, options)
}

/// Binds `addr` and serves WebSocket connections on `/ws` on `runtime` (other upgrade paths get
/// HTTP 403) and, on the same port, `GET /health`, `/ready`, `/live` and `/metrics`. As in the
/// tokio adapter, a `seed` of `None` is drawn from OS entropy, an `epoch_at_start` of 0 is the
/// system clock, and [`ServerOptions`] carry a snapshot to restore and the metrics switch.
pub async fn serve<R: Runtime>(
    runtime: R,
    addr: &str,
    config: ServerConfig,
    options: ServerOptions,
) -> Result<Bound, ServeError> {
    let listener = Arc::new(TcpListener::bind(addr).await.map_err(ServeError::Bind)?);
    let local_addr = listener.local_addr().map_err(ServeError::Bind)?;
    let accept = move || {
        let listener = listener.clone();
        async move { listener.accept().await }
    };
    let upgrade = |tcp: TcpStream, peer, http| async move {
        let _ = tcp.set_nodelay(true);
        let tcp = prefixed::sort(tcp, &http).await?;
        let mut info = None;
        let callback = tether_driver::upgrade_callback(peer, &mut info);
        let socket = async_tungstenite::accept_hdr_async_with_config(
            tcp,
            callback,
            Some(websocket_config()),
        )
        .await
        .ok()?;
        Some((socket, info?))
    };
    tether_driver::start_serving(runtime, config, options, local_addr, accept, upgrade)
}
