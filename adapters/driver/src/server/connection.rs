//! A connection task: owns one WebSocket, hands what it reads to the hub, writes what the hub
//! routes to it (`feed`, then one `flush`), and reports what it wrote.

use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::channel::mpsc;
use futures::future;
use futures::{SinkExt, StreamExt};
use tether_core::server::{ConnId, FrameText};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::hub::{Input, Written};
use super::CLOSE_GRACE;
use crate::metrics::ServerMetrics;
use crate::queue::{Ledger, Receiver as OutReceiver};
use crate::{Runtime, WebSocket};

/// Frames a connection task writes per wake-up before flushing and yielding.
const WRITE_BATCH: usize = 256;

pub(super) enum Out {
    /// The machine's frame text (live events share it with the recovery window), with the instant
    /// of the `publish` that produced it when known (for the publish-to-write histogram).
    Frame(FrameText, Option<Instant>),
    Close(u16, String),
}

enum ConnWake {
    Socket(Option<Result<Message, tungstenite::Error>>),
    Out(Option<Out>),
}

/// Whether a frame is a tracked event (and a replayed one), for the delivery counters. Tracked
/// frames end with the `,"seq":n}` the server appends last, so only the last field is looked at.
fn tracked_kind(text: &[u8]) -> (bool, bool) {
    if text.starts_with(br#"{"type":"replay""#) {
        return (true, true);
    }
    let tracked = text.ends_with(b"}")
        && text
            .iter()
            .rposition(|&b| b == b',')
            .is_some_and(|i| text[i..].starts_with(br#","seq":"#));
    (tracked, false)
}

/// The machine's frame as the text message tungstenite writes: the frame shares the window's
/// chunk (no copy, no allocation), and it is not validated again as UTF-8 (it was built from
/// `str`s). The same frame tungstenite makes of a `Message::Text`.
fn text_message(text: FrameText) -> Message {
    Message::Frame(Frame::message(
        text.into_bytes(),
        OpCode::Data(Data::Text),
        true,
    ))
}

/// What a connection task owns. It lives in a box because an `async fn` keeps its arguments
/// twice in its future (as captured arguments and as locals), and an idle connection is
/// mostly its task.
pub(super) struct ConnState<R, S> {
    pub(super) runtime: R,
    pub(super) conn: ConnId,
    pub(super) socket: S,
    pub(super) out: OutReceiver<Out>,
    pub(super) hub: mpsc::Sender<Input>,
    pub(super) sent: Arc<Ledger<Written>>,
    pub(super) metrics: ServerMetrics,
}

/// One connection: announces itself to the hub (`attach`), then reads to the hub and writes
/// what the hub routes here.
pub(super) async fn run<R: Runtime, S: WebSocket>(mut state: Box<ConnState<R, S>>, attach: Input) {
    let ConnState {
        runtime,
        conn,
        socket,
        out,
        hub,
        sent,
        metrics,
    } = &mut *state;
    let conn = *conn;
    let counting = metrics.is_enabled();
    if hub.send(attach).await.is_err() {
        return;
    }
    let mut turn = false;
    loop {
        turn = !turn;
        let wake = future::poll_fn(|cx| {
            let socket_first = turn;
            for i in 0..2 {
                let ready = if (i == 0) == socket_first {
                    socket.poll_next_unpin(cx).map(ConnWake::Socket)
                } else {
                    out.poll_next(cx).map(ConnWake::Out)
                };
                if ready.is_ready() {
                    return ready;
                }
            }
            Poll::Pending
        })
        .await;
        match wake {
            ConnWake::Socket(Some(Ok(message))) => {
                let input = match message {
                    Message::Text(text) => Input::Text(conn, text),
                    Message::Binary(data) => Input::Binary(conn, data.len()),
                    Message::Ping(_) => {
                        // tungstenite queued the pong; push it out.
                        if socket.flush().await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Message::Pong(_) | Message::Frame(_) => continue,
                    Message::Close(_) => break,
                };
                if hub.send(input).await.is_err() {
                    return;
                }
            }
            ConnWake::Socket(_) => break,
            ConnWake::Out(None) => break,
            ConnWake::Out(Some(first)) => {
                let (mut frames, mut bytes) = (0usize, 0usize);
                let (mut tracked, mut replayed) = (0u64, 0u64);
                let mut oldest_publish: Option<Instant> = None;
                let mut close = None;
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Out::Frame(text, published_at) => {
                            frames += 1;
                            bytes += text.len();
                            if counting {
                                let (is_tracked, is_replay) = tracked_kind(text.as_bytes());
                                tracked += u64::from(is_tracked);
                                replayed += u64::from(is_replay);
                                oldest_publish = oldest_publish.or(published_at);
                            }
                            if socket.feed(text_message(text)).await.is_err() {
                                close = Some((1011, String::new()));
                                break;
                            }
                        }
                        Out::Close(code, reason) => {
                            close = Some((code, reason));
                            break;
                        }
                    }
                    if frames < WRITE_BATCH {
                        next = out.try_next().ok().flatten();
                    }
                }
                let flushed = socket.flush().await.is_ok();
                if flushed && counting {
                    metrics.events_delivered.inc_by(tracked);
                    metrics.events_replayed.inc_by(replayed);
                    if let Some(at) = oldest_publish {
                        let latency = runtime.now().saturating_duration_since(at);
                        metrics.publish_to_write.observe(latency.as_secs_f64());
                    }
                }
                if frames > 0 {
                    sent.push((conn, frames, bytes));
                }
                if let Some((code, reason)) = close {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    };
                    let closing = Box::pin(async {
                        if socket.send(Message::Close(Some(frame))).await.is_ok() {
                            let _ = socket.close().await;
                        }
                    });
                    let grace = runtime.sleep_until(runtime.now() + CLOSE_GRACE);
                    let _ = future::select(closing, grace).await;
                    break;
                }
                if !flushed {
                    break;
                }
            }
        }
    }
    let _ = hub.send(Input::Closed(conn)).await;
}
