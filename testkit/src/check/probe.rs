//! A raw WebSocket connection for the checks: it sends exactly the frames a check writes and
//! returns exactly what the server sends, and writes both to the check's transcript (the
//! evidence of a failure).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Finding;

/// Longest transcript line: long frames keep their head and tail.
const LINE_MAX: usize = 220;
/// Lines kept per check (a replay of thousands of events would drown the evidence).
const TRANSCRIPT_MAX: usize = 4000;

/// What a check saw and did, line by line.
#[derive(Clone, Default)]
pub(crate) struct Transcript(Arc<Mutex<Lines>>);

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    dropped: usize,
}

impl Transcript {
    pub(crate) fn push(&self, line: String) {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if l.lines.len() < TRANSCRIPT_MAX {
            l.lines.push(trim(&line));
        } else {
            l.dropped += 1;
        }
    }

    /// The lines so far, and empties the transcript.
    pub(crate) fn take(&self) -> Vec<String> {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = std::mem::take(&mut l.lines);
        if l.dropped > 0 {
            lines.push(format!("… {} more lines not kept", l.dropped));
            l.dropped = 0;
        }
        lines
    }
}

/// `text` cut to [`LINE_MAX`] characters, keeping its head and tail.
pub(crate) fn trim(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= LINE_MAX {
        return text.to_owned();
    }
    let head: String = text.chars().take(LINE_MAX - 60).collect();
    let tail: String = text.chars().skip(chars - 40).collect();
    format!("{head} …({} chars)… {tail}", chars - LINE_MAX + 20)
}

/// A text frame from the server.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// As received.
    pub text: String,
    /// Parsed (`Null` when it is not JSON).
    pub value: Value,
}

impl Frame {
    /// `type`, or "" when absent.
    pub(crate) fn ty(&self) -> &str {
        self.value["type"].as_str().unwrap_or("")
    }

    /// A field.
    pub(crate) fn get(&self, key: &str) -> &Value {
        &self.value[key]
    }

    /// The sequence number of a tracked frame (top-level `seq`) or of a replay (`seq`, else
    /// `event.sequence`, else `event.data.cursor`).
    pub(crate) fn seq(&self) -> Option<u64> {
        if let Some(seq) = self.value["seq"].as_u64() {
            return Some(seq);
        }
        if self.ty() == "replay" {
            let e = &self.value["event"];
            return e["sequence"]
                .as_u64()
                .or_else(|| e["data"]["cursor"].as_u64());
        }
        None
    }

    pub(crate) fn is_replay(&self) -> bool {
        self.ty() == "replay"
    }

    /// A tracked live frame (it carries `seq` and is not a replay).
    pub(crate) fn is_live_event(&self) -> bool {
        !self.is_replay() && self.value["seq"].is_u64()
    }

    /// A `response` frame's `status`.
    pub(crate) fn status(&self) -> &str {
        self.value["status"].as_str().unwrap_or("")
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A close frame arrived.
    Closed { code: u16, reason: String },
    /// The TCP connection ended without a close frame (what a client reports as 1006).
    Dropped(String),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Closed { code, reason } => write!(f, "close {code} {reason:?}"),
            Ended::Dropped(why) => write!(f, "dropped without a close frame (1006): {why}"),
        }
    }
}

/// What [`Probe::recv`] got.
#[derive(Debug, Clone)]
pub(crate) enum Got {
    Frame(Frame),
    Ended(Ended),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One raw connection.
pub(crate) struct Probe {
    name: String,
    ws: Ws,
    log: Transcript,
    /// Answer the server's `{"type":"ping"}` with a pong without returning it (default).
    pub(crate) auto_pong: bool,
    /// Don't write received frames to the transcript (bulk reads); they are counted instead.
    quiet: Option<usize>,
    ended: Option<Ended>,
}

impl Probe {
    /// Connects to `url` (token already in it); `shown` is the URL as the transcript shows it.
    pub(crate) async fn open(
        name: String,
        url: &str,
        shown: &str,
        log: Transcript,
    ) -> Result<Probe, Finding> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let result = tokio::time::timeout(Duration::from_secs(10), connect).await;
        match result {
            Ok(Ok((ws, _))) => {
                log.push(format!("{name} connected to {shown}"));
                Ok(Probe {
                    name,
                    ws,
                    log,
                    auto_pong: true,
                    quiet: None,
                    ended: None,
                })
            }
            Ok(Err(WsError::Http(response))) => {
                log.push(format!(
                    "{name} upgrade to {shown} refused: HTTP {}",
                    response.status()
                ));
                Err(Finding::Fail(format!(
                    "the WebSocket upgrade was refused with HTTP {}",
                    response.status()
                )))
            }
            Ok(Err(e)) => {
                log.push(format!("{name} cannot connect to {shown}: {e}"));
                Err(Finding::Fail(format!("cannot connect: {e}")))
            }
            Err(_) => {
                log.push(format!(
                    "{name} no WebSocket upgrade from {shown} within 10 s"
                ));
                Err(Finding::Fail("the WebSocket upgrade timed out".into()))
            }
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Sends a JSON frame.
    pub(crate) async fn send(&mut self, frame: &Value) -> Result<(), Finding> {
        self.send_text(frame.to_string()).await
    }

    /// Sends a text frame as it is.
    pub(crate) async fn send_text(&mut self, text: String) -> Result<(), Finding> {
        self.log.push(format!("{} → {text}", self.name));
        self.write(Message::Text(text.into())).await
    }

    /// Sends a binary frame.
    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), Finding> {
        self.log.push(format!(
            "{} → binary frame, {} bytes",
            self.name,
            bytes.len()
        ));
        self.write(Message::Binary(bytes.into())).await
    }

    async fn write(&mut self, message: Message) -> Result<(), Finding> {
        match self.ws.send(message).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.log
                    .push(format!("{} → (could not send: {e})", self.name));
                Err(Finding::Fail(format!(
                    "{}: the connection refused a write: {e}",
                    self.name
                )))
            }
        }
    }

    /// Writes received frames to the transcript (the default) or only counts them.
    pub(crate) fn set_quiet(&mut self, quiet: bool) {
        match (quiet, self.quiet.take()) {
            (true, counted) => self.quiet = Some(counted.unwrap_or(0)),
            (false, Some(n)) if n > 0 => self
                .log
                .push(format!("{} ← ({n} frames received, not shown)", self.name)),
            (false, _) => {}
        }
    }

    /// The next frame, or how the connection ended; a failure after `within`, naming `what`
    /// the check was waiting for.
    pub(crate) async fn recv(&mut self, within: Duration, what: &str) -> Result<Got, Finding> {
        if let Some(ended) = &self.ended {
            return Ok(Got::Ended(ended.clone()));
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(next) => next,
                Err(_) => {
                    self.log.push(format!(
                        "{} … nothing more within {} ms",
                        self.name,
                        within.as_millis()
                    ));
                    return Err(Finding::Fail(format!(
                        "{}: no {what} within {} ms",
                        self.name,
                        within.as_millis()
                    )));
                }
            };
            let ended = match next {
                None => Ended::Dropped("the stream ended".into()),
                Some(Err(e)) => Ended::Dropped(e.to_string()),
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => Ended::Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    },
                    None => Ended::Closed {
                        code: 1005,
                        reason: String::new(),
                    },
                },
                Some(Ok(Message::Text(text))) => {
                    let text = text.to_string();
                    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let frame = Frame { text, value };
                    match &mut self.quiet {
                        Some(n) => *n += 1,
                        None => self.log.push(format!("{} ← {}", self.name, frame.text)),
                    }
                    if self.auto_pong && frame.ty() == "ping" {
                        self.send_text(r#"{"type":"pong"}"#.into()).await?;
                        continue;
                    }
                    return Ok(Got::Frame(frame));
                }
                Some(Ok(Message::Binary(bytes))) => {
                    self.log.push(format!(
                        "{} ← binary frame, {} bytes",
                        self.name,
                        bytes.len()
                    ));
                    return Ok(Got::Frame(Frame {
                        text: format!("<binary frame, {} bytes>", bytes.len()),
                        value: Value::Null,
                    }));
                }
                // WebSocket pings are answered by tungstenite itself.
                Some(Ok(_)) => continue,
            };
            self.set_quiet(false);
            self.log.push(format!("{} ← {ended}", self.name));
            self.ended = Some(ended.clone());
            return Ok(Got::Ended(ended));
        }
    }

    /// The next frame; the connection ending is a failure.
    pub(crate) async fn frame(&mut self, within: Duration, what: &str) -> Result<Frame, Finding> {
        match self.recv(within, what).await? {
            Got::Frame(f) => Ok(f),
            Got::Ended(e) => Err(Finding::Fail(format!(
                "{}: the connection ended ({e}) while waiting for {what}",
                self.name
            ))),
        }
    }

    /// Frames until one satisfies `want` (the others are skipped, and kept in the transcript).
    pub(crate) async fn until(
        &mut self,
        within: Duration,
        what: &str,
        want: impl Fn(&Frame) -> bool,
    ) -> Result<Frame, Finding> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.frame(left, what).await?;
            if want(&f) {
                return Ok(f);
            }
        }
    }

    /// Reads until the connection ends; frames on the way are returned with how it ended.
    pub(crate) async fn until_end(
        &mut self,
        within: Duration,
    ) -> Result<(Vec<Frame>, Ended), Finding> {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left, "end of the connection").await? {
                Got::Frame(f) => frames.push(f),
                Got::Ended(e) => return Ok((frames, e)),
            }
        }
    }

    /// How the connection ended, if it has.
    pub(crate) fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// A clean close: our close frame, then the server's, then the end of the TCP stream (the
    /// server has then processed the close).
    pub(crate) async fn close(mut self) {
        if self.ended.is_some() {
            return;
        }
        self.log.push(format!("{} → close 1000", self.name));
        let _ = self.ws.close(None).await;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            self.log.push(format!(
                "{} … the server did not finish the close within 5 s",
                self.name
            ));
        }
    }

    /// Drops the TCP connection without a close frame (a dead link, as the server sees it).
    pub(crate) fn abort(self) {
        if self.ended.is_none() {
            self.log.push(format!(
                "{} ✂ TCP connection dropped, no close frame",
                self.name
            ));
        }
    }
}
