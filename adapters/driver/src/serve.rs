//! Serving on a listening socket, written once: configuration hygiene, the accept loop, the
//! `/ws` upgrade callback and the running server's handle. Each runtime crate supplies only its
//! listener and its WebSocket `accept` function.

use std::future::Future;
use std::net::SocketAddr;

use futures::channel::oneshot;
use futures::future::{self, Either};
use tether_core::server::{ConnectInfo, ServerConfig, ServerSnapshot};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::StatusCode;
use tungstenite::protocol::WebSocketConfig;

use crate::{BoxFuture, Runtime, Server, ServerError, ServerEvents, ServerOptions, WebSocket};

/// Read buffer per connection: tungstenite's default of 128 KiB makes 10,000 idle connections
/// cost ~1.4 GB; 4 KiB keeps them at ~7 KB each (DESIGN.md figures).
pub const READ_BUFFER: usize = 4096;
/// Write buffer per connection (frames are batched with `feed` + one `flush`).
pub const WRITE_BUFFER: usize = 16 * 1024;

/// The tungstenite settings tether uses on both sides: small buffers, 16 MiB frame cap.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen: {0}")]
    Bind(std::io::Error),
    /// The snapshot could not be restored.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A running server: the handle, its events, the bound address and its accept loop.
pub struct Bound {
    /// Publish, respond, snapshot, shut down.
    pub server: Server,
    /// Requests and session events: keep consuming them.
    pub events: ServerEvents,
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Resolves once the accept loop has ended and the port is free.
    pub accepting: BoxFuture<()>,
}

impl Bound {
    /// Graceful shutdown (see [`Server::shutdown`]) that returns once the listening port is
    /// free again, so a restarted server can bind it at once.
    pub async fn shutdown(self) -> Result<ServerSnapshot, ServerError> {
        let snapshot = self.server.shutdown().await?;
        self.accepting.await;
        Ok(snapshot)
    }
}

/// The upgrade callback for `accept_hdr_async`: checks the `/ws` route (HTTP 403 otherwise,
/// like the PraisonAI gateway) and records the credentials in `info`.
#[allow(clippy::result_large_err)] // the error type is tungstenite's
pub fn upgrade_callback(
    peer: SocketAddr,
    info: &mut Option<ConnectInfo>,
) -> impl FnOnce(&Request, Response) -> Result<Response, ErrorResponse> + Unpin + '_ {
    move |request: &Request, response: Response| match crate::connect_info(
        request,
        Some(peer.to_string()),
    ) {
        Ok(i) => {
            *info = Some(i);
            Ok(response)
        }
        Err(refused) => {
            let mut r = ErrorResponse::new(Some(refused.reason));
            *r.status_mut() = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::FORBIDDEN);
            Err(r)
        }
    }
}

/// What a connection's handshake needs to answer plain HTTP requests on the WebSocket port.
#[derive(Clone)]
pub struct HttpContext {
    server: Server,
    token: Option<std::sync::Arc<str>>,
}

impl HttpContext {
    /// The full response to a plain HTTP request (see [`crate::http`]).
    pub async fn answer(&self, request: &crate::http::HttpRequest) -> Vec<u8> {
        crate::http::respond(&self.server, self.token.as_deref(), request).await
    }
}

/// How long a new connection may take to send its request head and finish the upgrade.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the server hub and its accept loop on `runtime`. `accept` yields the next TCP
/// connection; `upgrade` reads its request head, answers plain HTTP itself (with
/// [`HttpContext::answer`]) or performs the WebSocket handshake (with [`upgrade_callback`]),
/// within a deadline. The loop ends, dropping `accept` (and with it the listener), once the
/// server has stopped.
pub fn start_serving<R, T, A, AF, U, UF, S>(
    runtime: R,
    config: ServerConfig,
    options: ServerOptions,
    local_addr: SocketAddr,
    mut accept: A,
    upgrade: U,
) -> Result<Bound, ServeError>
where
    R: Runtime,
    T: Send + 'static,
    A: FnMut() -> AF + Send + 'static,
    AF: Future<Output = std::io::Result<(T, SocketAddr)>> + Send,
    U: Fn(T, SocketAddr, HttpContext) -> UF + Send + Sync + 'static,
    UF: Future<Output = Option<(S, ConnectInfo)>> + Send + 'static,
    S: WebSocket,
{
    let token = config.auth_token.as_deref().map(std::sync::Arc::from);
    let (server, events) = Server::start(runtime.clone(), config, options)?;
    let http = HttpContext {
        server: server.clone(),
        token,
    };
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let acceptor = server.clone();
    let rt = runtime.clone();
    runtime.spawn(Box::pin(async move {
        let mut stopped = Box::pin(acceptor.stopped());
        loop {
            let next = Box::pin(accept());
            let accepted = match future::select(next, stopped).await {
                Either::Left((accepted, s)) => {
                    stopped = s;
                    accepted
                }
                Either::Right(((), _)) => break,
            };
            let Ok((tcp, peer)) = accepted else {
                continue;
            };
            let (server, rt2) = (acceptor.clone(), rt.clone());
            let handshake = Box::pin(upgrade(tcp, peer, http.clone()));
            let deadline = rt.sleep_until(rt.now() + UPGRADE_TIMEOUT);
            rt.spawn(Box::pin(async move {
                if let Either::Left((Some((socket, info)), _)) =
                    future::select(handshake, deadline).await
                {
                    server.attach(&rt2, socket, info);
                }
            }));
        }
        // The port is free before anyone waiting on `accepting` hears the loop has ended.
        drop(accept);
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
