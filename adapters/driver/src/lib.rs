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

pub use client::{Client, ClientError, ClientEvents, RequestOutcome};
pub use serve::{
    production_config, start_serving, start_serving_with, upgrade_callback, websocket_config,
    Bound, HttpContext, ServeError, READ_BUFFER, WRITE_BUFFER,
};
pub use server::{
    load_snapshot, save_snapshot, Server, ServerError, ServerEvents, ServerOptions,
    PUBLISH_MANY_MAX,
};
pub use tether_core;
pub use tether_core::wire::{Content, EventBatch, FieldsError};
pub use tungstenite::{self, Message};
pub use upgrade::{connect_info, UpgradeRefused, WS_PATH};
pub use url::{with_token, Endpoints, UrlError};

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

/// A WebSocket: a stream of incoming messages and a sink for outgoing ones.
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
