//! # tether-driver
//!
//! The connection loops of tether, written once and generic over the runtime: they drive the
//! sans-IO machines of `tether-core` over any `Stream + Sink` of tungstenite [`Message`]s and a
//! tiny [`Runtime`] (clock, timer, spawn). `tether-tokio` and `tether-async-std` are thin shells
//! that plug in their runtime and their WebSocket connector; a third adapter (another runtime, a
//! test transport) needs nothing else.
//!
//! The loops make no protocol decision: every decision is the core's. They own the socket, the
//! timer and the application's channels, and after each wake-up they write what the machine
//! produced with `feed` and a single `flush` (never a flush per frame).
//!
//! A third adapter is a [`Runtime`] and a [`Connector`]. Here the runtime is smol and the
//! "network" is in memory: connecting hands the other end of a channel pair to the server.
//!
//! ```
//! use std::pin::Pin;
//! use std::task::{Context, Poll};
//! use std::time::Instant;
//!
//! use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
//! use futures::{Sink, Stream, StreamExt};
//! use tether_driver::tether_core::client::ClientConfig;
//! use tether_driver::tether_core::server::{ConnectInfo, Outcome, ServerConfig, ServerEvent};
//! use tether_driver::tungstenite::Error as WsError;
//! use tether_driver::{
//!     BoxFuture, Client, ConnectOptions, Connector, Message, RequestOutcome, Runtime, Server,
//!     ServerOptions,
//! };
//!
//! /// smol's clock, timers and executor.
//! #[derive(Clone)]
//! struct Smol;
//!
//! impl Runtime for Smol {
//!     fn now(&self) -> Instant {
//!         Instant::now()
//!     }
//!     fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
//!         Box::pin(async move { smol::Timer::at(deadline).await; })
//!     }
//!     fn spawn(&self, future: BoxFuture<()>) {
//!         smol::spawn(future).detach();
//!     }
//! }
//!
//! /// One end of an in-memory WebSocket.
//! struct Pipe(UnboundedReceiver<Message>, UnboundedSender<Message>);
//!
//! fn pipe() -> (Pipe, Pipe) {
//!     let ((a_tx, a_rx), (b_tx, b_rx)) = (unbounded(), unbounded());
//!     (Pipe(a_rx, b_tx), Pipe(b_rx, a_tx))
//! }
//!
//! impl Stream for Pipe {
//!     type Item = Result<Message, WsError>;
//!     fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
//!         self.0.poll_next_unpin(cx).map(|message| message.map(Ok))
//!     }
//! }
//!
//! impl Sink<Message> for Pipe {
//!     type Error = WsError;
//!     fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
//!         Poll::Ready(Ok(()))
//!     }
//!     fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
//!         // The server writes its frames ready-made (`Message::Frame`); a peer reads the message.
//!         let message = match message {
//!             Message::Frame(frame) => Message::Text(frame.into_text().expect("a text frame")),
//!             message => message,
//!         };
//!         self.1.unbounded_send(message).map_err(|_| WsError::ConnectionClosed)
//!     }
//!     fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
//!         Poll::Ready(Ok(()))
//!     }
//!     fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
//!         self.1.close_channel();
//!         Poll::Ready(Ok(()))
//!     }
//! }
//!
//! /// "Connecting" attaches the other end to the server.
//! struct InMemory(Server);
//!
//! impl Connector for InMemory {
//!     type Socket = Pipe;
//!     fn connect(&self, _url: &str) -> BoxFuture<Result<Pipe, WsError>> {
//!         let (client_end, server_end) = pipe();
//!         self.0.attach(&Smol, server_end, ConnectInfo::default());
//!         Box::pin(async { Ok(client_end) })
//!     }
//! }
//!
//! smol::block_on(async {
//!     let (server, mut requests) = Server::start(Smol, ServerConfig::default(), ServerOptions::default())?;
//!     let answering = server.clone();
//!     smol::spawn(async move {
//!         while let Some(event) = requests.next().await {
//!             if let ServerEvent::Request { session, request_id, content, .. } = event {
//!                 let (server, answer) = (answering.clone(), Outcome::ok(format!("echo: {content}")));
//!                 smol::spawn(async move { server.respond(&session, &request_id, answer).await })
//!                     .detach();
//!             }
//!         }
//!     })
//!     .detach();
//!     let config = ClientConfig::new("echo");
//!     let options = ConnectOptions::default();
//!     let (client, _events) = Client::start(Smol, InMemory(server), "ws://memory/ws", config, options)?;
//!     let answer = client.send("hello").await?;
//!     let RequestOutcome::Final { content: Some(content), .. } = answer else { panic!("{answer:?}") };
//!     assert_eq!(content.to_string(), "echo: hello");
//!     client.disconnect().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod client;
pub mod http;
pub mod metrics;
mod queue;
mod serve;
mod server;
mod upgrade;
mod url;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures::{Sink, Stream};

pub use client::{Client, ClientError, ClientEvents, ConnectOptions, RequestOutcome};
pub use serve::{
    start_serving, upgrade_callback, websocket_config, Bound, HttpContext, ServeError, READ_BUFFER,
    WRITE_BUFFER,
};
pub use server::{
    load_snapshot, save_snapshot, Server, ServerError, ServerEvents, ServerOptions, StoreRequests,
    PUBLISH_MANY_MAX,
};
pub use tether_core;
pub use tether_core::wire::{Content, EventBatch, FieldsError};
pub use tungstenite::{self, Message};
pub use upgrade::{connect_info, UpgradeRefused, WS_PATH};
pub use url::{with_token, Endpoints, UrlError};

/// 32 bytes of OS entropy: the seed of a machine whose config leaves it `None`.
fn os_seed() -> Result<[u8; 32], getrandom::Error> {
    let mut seed = [0; 32];
    getrandom::fill(&mut seed)?;
    Ok(seed)
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a connection loop needs from an async runtime: a clock, a timer and a way to spawn.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The current time (the only clock read; the core gets it as `now`).
    fn now(&self) -> Instant;
    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;
    /// Runs `future` in the background.
    fn spawn(&self, future: BoxFuture<()>);
    /// Whether a client loop that has drained its socket lets the other ready tasks run once
    /// before it waits on the reactor. It pays off where one executor thread runs the peer's
    /// writer too (smol's global executor: the next read then finds data without a wake-up
    /// from the I/O thread) and costs on work-stealing runtimes (tokio, async-std), where the
    /// yield only delays the loop. Default: no.
    fn yield_after_read(&self) -> bool {
        false
    }
}

/// A WebSocket: a stream of incoming messages and a sink for outgoing ones. The server loop writes
/// its frames ready-made, as `Message::Frame` text frames (no copy); a transport that is not a
/// tungstenite socket delivers them to the peer as the `Message::Text` they carry.
pub trait WebSocket:
    Stream<Item = Result<Message, tungstenite::Error>>
    + Sink<Message, Error = tungstenite::Error>
    + Unpin
    + Send
    + 'static
{
}

impl<T> WebSocket for T where
    T: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin
        + Send
        + 'static
{
}

/// Opens client WebSockets.
pub trait Connector: Send + Sync + 'static {
    /// The socket type.
    type Socket: WebSocket;
    /// Opens a WebSocket to `url` (TCP connect, TLS if `wss`, HTTP upgrade).
    fn connect(&self, url: &str) -> BoxFuture<Result<Self::Socket, tungstenite::Error>>;
}
