//! The bare baselines: tungstenite sockets with nothing of tether in between, doing the same
//! JSON work per frame (encode on the sending side; typed decode and a sequence check on the
//! receiving side), with the same buffer settings and batched writes (`feed` + periodic
//! `flush`).

use std::borrow::Cow;
use std::future::Future;
use std::time::Instant;

use futures::channel::oneshot;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tether_driver::tungstenite::{Error as WsError, Message};
use tether_driver::{websocket_config, Runtime};

use super::CONTENT;

/// Frames fed between two flushes by the bare writers.
pub const FLUSH_EVERY: u64 = 256;

/// A stamped event frame, as tether's server writes it.
#[derive(Serialize)]
pub struct OutFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub content: &'a str,
    pub n: u64,
    pub cursor: u64,
    pub seq: u64,
}

/// What a bare reader decodes: the type, the sequence and the content (borrowed).
#[derive(Deserialize)]
pub struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
}

/// The JSON text of event `n`.
pub fn encode(n: u64) -> String {
    serde_json::to_string(&OutFrame {
        kind: "message",
        content: CONTENT,
        n,
        cursor: n,
        seq: n,
    })
    .unwrap_or_default()
}

/// Writes events `1..=n` with `feed` and a flush every [`FLUSH_EVERY`] frames.
pub async fn write_events<S>(ws: &mut S, n: u64) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    for i in 1..=n {
        ws.feed(Message::text(encode(i))).await?;
        if i % FLUSH_EVERY == 0 {
            ws.flush().await?;
        }
    }
    ws.flush().await
}

/// The sequence check of a bare reader: `message` frames must come as `next`, `next + 1`, ...
pub struct SeqCheck {
    pub next: u64,
    /// Content bytes seen (the content is decoded, as a client hands it on).
    pub content_bytes: usize,
}

impl SeqCheck {
    /// Decodes one text frame; true if it was the next `message`. Other types are ignored.
    pub fn accept(&mut self, text: &str) -> Result<bool, String> {
        let frame: InFrame<'_> =
            serde_json::from_str(text).map_err(|e| format!("bad frame {text:?}: {e}"))?;
        if frame.kind != "message" {
            return Ok(false);
        }
        self.content_bytes += frame.content.as_ref().map_or(0, |c| c.len());
        match frame.seq {
            Some(s) if s == self.next => {
                self.next += 1;
                Ok(true)
            }
            other => Err(format!("expected seq {}, got {other:?}", self.next)),
        }
    }
}

/// Reads until `n` consecutive `message` frames (seq 1..=n, or from `first`) have arrived;
/// returns when the last one did.
pub async fn read_events<S>(ws: &mut S, first: u64, n: u64) -> Result<Instant, String>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut check = SeqCheck {
        next: first,
        content_bytes: 0,
    };
    let mut got = 0;
    while got < n {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if check.accept(text.as_str())? {
                    got += 1;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("bare reader: {e}")),
            None => return Err(format!("bare reader: closed after {got} of {n}")),
        }
    }
    Ok(Instant::now())
}

/// Runs `future` on `runtime`; the receiver gets its output.
pub fn spawn_with<R: Runtime, T: Send + 'static>(
    runtime: &R,
    future: impl Future<Output = T> + Send + 'static,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    runtime.spawn(Box::pin(async move {
        let _ = tx.send(future.await);
    }));
    rx
}

/// One bare streaming run: the server side writes, the client side reads; events per second
/// from the first write to the last read.
async fn stream_over<R, S, C>(
    runtime: &R,
    mut server: S,
    mut client: C,
    n: u64,
) -> Result<f64, String>
where
    R: Runtime,
    S: Sink<Message, Error = WsError> + Unpin + Send + 'static,
    C: Stream<Item = Result<Message, WsError>> + Unpin + Send + 'static,
{
    let reader = spawn_with(runtime, async move { read_events(&mut client, 1, n).await });
    let started = Instant::now();
    let writer = spawn_with(runtime, async move {
        let r = write_events(&mut server, n).await;
        // Keep the socket open until the reader is done.
        (r, server)
    });
    let done = reader.await.map_err(|_| "bare reader task lost")??;
    let (written, _server) = writer.await.map_err(|_| "bare writer task lost")?;
    written.map_err(|e| format!("bare writer: {e}"))?;
    Ok(n as f64 / done.saturating_duration_since(started).as_secs_f64())
}

/// A bare tokio-tungstenite pair on 127.0.0.1.
pub async fn tokio_stream(n: u64) -> Result<f64, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::accept_async_with_config(tcp, Some(websocket_config()))
            .await
            .map_err(std::io::Error::other)
    });
    let (client, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{addr}/"),
        Some(websocket_config()),
        true,
    )
    .await
    .map_err(|e| e.to_string())?;
    let server = accept
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    stream_over(&tether_tokio::TokioRuntime, server, client, n).await
}

/// A bare async-tungstenite pair over async-net on 127.0.0.1, tasks on `runtime`.
pub async fn async_stream<R: Runtime>(runtime: R, n: u64) -> Result<f64, String> {
    let listener = async_net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let accept = spawn_with(&runtime, async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        async_tungstenite::accept_async_with_config(tcp, Some(websocket_config()))
            .await
            .map_err(|e| e.to_string())
    });
    let tcp = async_net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (client, _) = async_tungstenite::client_async_with_config(
        format!("ws://{addr}/"),
        tcp,
        Some(websocket_config()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let server = accept.await.map_err(|_| "accept task lost")??;
    stream_over(&runtime, server, client, n).await
}

/// A bare tokio-tungstenite client socket.
pub type BareClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `hello` tether's client sends first (offering v1..=v2).
pub fn hello(agent_id: &str) -> String {
    serde_json::json!({
        "type": "hello",
        "agent_id": agent_id,
        "protocol_min": 1,
        "protocol_max": 2,
        "capabilities": ["streaming", "ack"],
    })
    .to_string()
}

/// A bare client that has done the gateway handshake: connects, sends `hello`, reads up to
/// `hello_ok`; returns the socket and the session id.
pub async fn bare_session(url: &str, agent_id: &str) -> Result<(BareClient, String), String> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(websocket_config()), true)
            .await
            .map_err(|e| format!("bare connect: {e}"))?;
    ws.send(Message::text(hello(agent_id)))
        .await
        .map_err(|e| format!("bare hello: {e}"))?;
    while let Some(message) = ws.next().await {
        let message = message.map_err(|e| format!("bare handshake: {e}"))?;
        let Message::Text(text) = message else {
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(text.as_str()).map_err(|e| format!("bare handshake: {e}"))?;
        match v["type"].as_str() {
            Some("hello_ok") => {
                let session = v["session_id"].as_str().unwrap_or_default().to_owned();
                return Ok((ws, session));
            }
            Some("hello_error") | Some("error") => return Err(format!("refused: {text}")),
            _ => {}
        }
    }
    Err("bare handshake: closed before hello_ok".into())
}
