//! # tether-tokio
//!
//! tether over tokio and tokio-tungstenite: a client that reconnects by itself on the core's
//! schedule, resumes its session without loss or duplicates, and reports gaps it cannot repair.
//! The connection loop lives in `tether-driver` (shared with the async-std adapter); this crate
//! plugs in tokio's clock, timers and tasks and tokio-tungstenite's sockets.
//!
//! A server and a client in one program: the client's request is answered, and an event the
//! server publishes to its session is delivered.
//!
//! ```
//! use futures::StreamExt;
//! use tether_tokio::{connect, serve, ClientConfig, Event, Outcome, RequestOutcome};
//! use tether_tokio::{ServerConfig, ServerEvent, ServerOptions, TokioRuntime};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let options = ServerOptions::default();
//!     let mut gateway = serve(TokioRuntime, "127.0.0.1:0", ServerConfig::default(), options).await?;
//!     let url = format!("ws://{}/ws", gateway.local_addr);
//!     let server = gateway.server.clone();
//!     tokio::spawn(async move {
//!         // The application: answer each request, publish one event to each new session.
//!         while let Some(event) = gateway.events.next().await {
//!             let server = server.clone();
//!             match event {
//!                 ServerEvent::Request { session, request_id, content, .. } => {
//!                     let answer = Outcome::ok(format!("echo: {content}"));
//!                     tokio::spawn(async move { server.respond(&session, &request_id, answer).await });
//!                 }
//!                 ServerEvent::SessionCreated { session, .. } => {
//!                     let fields = vec![("text".to_owned(), "welcome".into())];
//!                     tokio::spawn(async move { server.publish(&session, "message", fields).await });
//!                 }
//!                 _ => {}
//!             }
//!         }
//!     });
//!
//!     let (client, mut events) = connect(TokioRuntime, url, ClientConfig::new("echo"), Default::default())?;
//!     let answer = client.send("hello").await?;
//!     let RequestOutcome::Final { content: Some(content), .. } = answer else { panic!("{answer:?}") };
//!     assert_eq!(content.to_string(), "echo: hello");
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Delivered(e) if e.kind == "message" => {
//!                 assert!(e.payload.as_str().contains(r#""text":"welcome""#));
//!                 client.disconnect().await;
//!             }
//!             Event::Lost { from, to } => panic!("lost {from}..={to}"),
//!             Event::Closed(_) => break, // after `disconnect`
//!             _ => {} // connecting, connected, responses...
//!         }
//!     }
//!     Ok(())
//! }
//! ```

mod prefixed;

use std::sync::Arc;
use std::time::Instant;

use tether_driver::{BoxFuture, Connector, Runtime};
use tokio::net::TcpListener;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

/// Starts a client at `url` on the current tokio runtime (must be called inside one): a new
/// session, or the one in [`ConnectOptions::resume`]. `url` may be a list of [`Endpoints`],
/// tried in turn at each reconnect.
pub fn connect(
    runtime: TokioRuntime,
    url: impl Into<Endpoints>,
    config: ClientConfig,
    options: ConnectOptions,
) -> Result<(Client, ClientEvents), ClientError> {
    Client::start(runtime, TokioConnector, url, config, options)
}

/// Binds `addr` and serves WebSocket connections on `/ws` (other upgrade paths get HTTP 403, like
/// the PraisonAI gateway) and, on the same port, `GET /health`, `/ready`, `/live` and `/metrics`
/// (see `tether_driver::http`), on `runtime` (the current tokio runtime). A `seed` of `None` (the
/// default) is drawn from OS entropy, so session ids are unguessable; an `epoch_at_start` of 0
/// is the system clock. [`ServerOptions`]: a snapshot of a previous run to restore, metrics.
pub async fn serve(
    runtime: TokioRuntime,
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
    let upgrade = |tcp: tokio::net::TcpStream, peer, http| async move {
        let _ = tcp.set_nodelay(true);
        let tcp = prefixed::sort(tcp, &http).await?;
        let mut info = None;
        let callback = tether_driver::upgrade_callback(peer, &mut info);
        let socket = tokio_tungstenite::accept_hdr_async_with_config(
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
