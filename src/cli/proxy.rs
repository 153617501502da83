//! A fault-injecting TCP proxy for the demo. It forwards bytes both ways and understands just
//! enough WebSocket framing on the server→client side to hit live event frames: armed faults
//! are applied, one each, to the next live `message` frame that passes.
//!
//! - [`Fault::Cut`] tears the connection in the middle of that frame (a seeded number of its
//!   bytes get through), the way a dying link does: the client must resume its session.
//! - [`Fault::Drop`] swallows the frame: the client sees a sequence gap and must repair it.
//! - [`Fault::Duplicate`] sends it twice: the client must drop the copy.
//!
//! Decisions come from a seeded PRNG, so the same seed injects the same faults.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tether_core::rng::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Frames above this are forwarded without inspection (the demo's are ~100 bytes).
const MAX_INSPECTED_FRAME: u64 = 1 << 24;
/// Live frames that pass untouched after a fault before the next armed one applies, so two
/// faults never land on neighbouring frames (a drop right before a cut would go unnoticed).
const FAULT_SPACING: u64 = 3;
/// An HTTP upgrade response larger than this is not one: stop parsing, just forward.
const MAX_HTTP_HEAD: usize = 64 * 1024;

/// One fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Cut the connection mid-frame.
    Cut,
    /// Swallow one live event frame.
    Drop,
    /// Send one live event frame twice.
    Duplicate,
}

/// How many faults were actually injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Connections cut.
    pub cuts: u64,
    /// Frames swallowed.
    pub drops: u64,
    /// Frames duplicated.
    pub duplicates: u64,
}

/// A running proxy; it stops with the runtime.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: SocketAddr,
    armed: Mutex<Armed>,
    rng: Mutex<Rng>,
    cuts: AtomicU64,
    drops: AtomicU64,
    duplicates: AtomicU64,
    last_cut: Mutex<Option<Instant>>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub async fn start(target: SocketAddr, seed: u64) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            armed: Mutex::new(Armed::default()),
            rng: Mutex::new(Rng::from_u64(seed)),
            cuts: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            last_cut: Mutex::new(None),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.relay(inbound).await });
            }
        });
        Ok(Proxy { addr, shared })
    }

    /// The WebSocket URL that goes through the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Queues a fault for the next live event frame without one.
    pub fn arm(&self, fault: Fault) {
        lock(&self.shared.armed).queue.push_back(fault);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> Injected {
        Injected {
            cuts: self.shared.cuts.load(Ordering::SeqCst),
            drops: self.shared.drops.load(Ordering::SeqCst),
            duplicates: self.shared.duplicates.load(Ordering::SeqCst),
        }
    }

    /// When the last cut happened.
    pub fn last_cut(&self) -> Option<Instant> {
        *lock(&self.shared.last_cut)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    async fn relay(self: Arc<Self>, inbound: TcpStream) {
        let Ok(outbound) = TcpStream::connect(self.target).await else {
            return; // the client sees a closed socket and retries
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (client_read, client_write) = inbound.into_split();
        let (server_read, server_write) = outbound.into_split();
        // When either direction ends, both sockets close (the other copy is dropped).
        tokio::select! {
            _ = upstream(client_read, server_write) => {}
            _ = self.downstream(server_read, client_write) => {}
        }
    }

    /// Server → client, frame-aware.
    async fn downstream(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let mut parser = Parser::default();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(32 * 1024);
        loop {
            let n = from.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            out.clear();
            let mut cut = false;
            parser.feed(&chunk[..n], |piece| {
                if cut {
                    return;
                }
                match piece {
                    Piece::Opaque(bytes) => out.extend_from_slice(bytes),
                    Piece::LiveEvent(frame) => match self.take_fault() {
                        None => out.extend_from_slice(frame),
                        Some(Fault::Drop) => {
                            self.drops.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(Fault::Duplicate) => {
                            out.extend_from_slice(frame);
                            out.extend_from_slice(frame);
                            self.duplicates.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(Fault::Cut) => {
                            let keep = 1
                                + (lock(&self.rng).next_u64() as usize) % (frame.len() - 1).max(1);
                            out.extend_from_slice(&frame[..keep.min(frame.len())]);
                            cut = true;
                        }
                    },
                }
            });
            to.write_all(&out).await?;
            if cut {
                let _ = to.shutdown().await;
                *lock(&self.last_cut) = Some(Instant::now());
                self.cuts.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
        }
    }

    /// The fault for the live frame passing now, if one is armed and spacing allows.
    fn take_fault(&self) -> Option<Fault> {
        let mut armed = lock(&self.armed);
        if armed.untouched < FAULT_SPACING {
            armed.untouched += 1;
            return None;
        }
        let fault = armed.queue.pop_front();
        armed.untouched = if fault.is_some() { 0 } else { FAULT_SPACING };
        fault
    }
}

/// Faults waiting for a live frame.
struct Armed {
    queue: VecDeque<Fault>,
    /// Live frames passed since the last fault.
    untouched: u64,
}

impl Default for Armed {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            untouched: FAULT_SPACING,
        }
    }
}

/// Client → server: a plain copy.
async fn upstream(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<u64> {
    tokio::io::copy(&mut from, &mut to).await
}

/// A piece of the server→client byte stream.
enum Piece<'a> {
    /// Bytes to forward as they are (HTTP head, control frames, anything not understood).
    Opaque(&'a [u8]),
    /// One whole text frame carrying a live `message` event.
    LiveEvent(&'a [u8]),
}

/// Splits the server→client stream into the HTTP upgrade response, then whole WebSocket
/// frames, buffering partial ones across reads.
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    mode: Mode,
}

#[derive(Default, PartialEq, Eq)]
enum Mode {
    #[default]
    HttpHead,
    Frames,
    /// Something we do not understand: forward the rest untouched.
    Raw,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(Piece<'_>)) {
        if self.mode == Mode::Raw {
            emit(Piece::Opaque(bytes));
            return;
        }
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        if self.mode == Mode::HttpHead {
            match find(&self.buf, b"\r\n\r\n") {
                Some(end) => {
                    emit(Piece::Opaque(&self.buf[..end + 4]));
                    at = end + 4;
                    self.mode = Mode::Frames;
                }
                None if self.buf.len() > MAX_HTTP_HEAD => self.mode = Mode::Raw,
                None => return,
            }
        }
        while self.mode == Mode::Frames {
            match frame_extent(&self.buf[at..]) {
                Extent::Whole { len, payload_at } => {
                    let frame = &self.buf[at..at + len];
                    if is_live_event(frame, payload_at) {
                        emit(Piece::LiveEvent(frame));
                    } else {
                        emit(Piece::Opaque(frame));
                    }
                    at += len;
                }
                Extent::Partial => break,
                Extent::TooLarge => self.mode = Mode::Raw,
            }
        }
        if self.mode == Mode::Raw {
            emit(Piece::Opaque(&self.buf[at..]));
            at = self.buf.len();
        }
        self.buf.drain(..at);
    }
}

enum Extent {
    Whole { len: usize, payload_at: usize },
    Partial,
    TooLarge,
}

/// RFC 6455 §5.2 framing: 2 header bytes, 0/2/8 length bytes, 0/4 mask bytes, payload.
fn frame_extent(b: &[u8]) -> Extent {
    if b.len() < 2 {
        return Extent::Partial;
    }
    let masked = b[1] & 0x80 != 0;
    let (payload_len, mut header) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n), 10)
        }
        126 | 127 => return Extent::Partial,
        n => (u64::from(n), 2),
    };
    if payload_len > MAX_INSPECTED_FRAME {
        return Extent::TooLarge;
    }
    if masked {
        header += 4;
    }
    let len = header + payload_len as usize;
    if b.len() < len {
        Extent::Partial
    } else {
        Extent::Whole {
            len,
            payload_at: header,
        }
    }
}

/// A final, unmasked text frame whose JSON starts with `{"type":"message"` (a live tracked
/// event as tether's server writes it; replays start with `{"type":"replay"`).
fn is_live_event(frame: &[u8], payload_at: usize) -> bool {
    let fin_text = frame[0] == 0x81;
    let unmasked = frame[1] & 0x80 == 0;
    fin_text && unmasked && frame[payload_at..].starts_with(br#"{"type":"message""#)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_frame(payload: &str) -> Vec<u8> {
        let mut f = vec![0x81];
        let n = payload.len();
        if n < 126 {
            f.push(n as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        f.extend_from_slice(payload.as_bytes());
        f
    }

    /// Feeds `stream` in chunks of `step` bytes; returns (opaque bytes, live frames).
    fn split(stream: &[u8], step: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut parser = Parser::default();
        let (mut opaque, mut live) = (Vec::new(), Vec::new());
        for chunk in stream.chunks(step) {
            parser.feed(chunk, |p| match p {
                Piece::Opaque(b) => opaque.extend_from_slice(b),
                Piece::LiveEvent(f) => live.push(f.to_vec()),
            });
        }
        (opaque, live)
    }

    #[test]
    fn live_event_frames_are_found_whatever_the_read_boundaries() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let hello = text_frame(r#"{"type":"hello_ok","session_id":"s"}"#);
        let event = text_frame(&format!(
            r#"{{"type":"message","content":"{}","cursor":1,"seq":1}}"#,
            "x".repeat(200)
        ));
        let replay = text_frame(r#"{"type":"replay","event":{"type":"message"}}"#);
        let ping = vec![0x89, 0x00];
        let stream = [
            head.clone(),
            hello.clone(),
            event.clone(),
            ping.clone(),
            replay.clone(),
        ]
        .concat();
        for step in [1, 3, 7, 64, stream.len()] {
            let (opaque, live) = split(&stream, step);
            assert_eq!(live, vec![event.clone()], "step {step}");
            assert_eq!(opaque, [&head[..], &hello, &ping, &replay].concat());
        }
    }

    #[test]
    fn a_huge_frame_switches_to_plain_forwarding() {
        let mut stream = b"HTTP/1.1 101 OK\r\n\r\n".to_vec();
        stream.extend_from_slice(&[0x82, 127]);
        stream.extend_from_slice(&u64::MAX.to_be_bytes());
        stream.extend_from_slice(b"rest");
        let (opaque, live) = split(&stream, 5);
        assert!(live.is_empty());
        assert_eq!(opaque, stream);
    }
}
