//! Splitting a server→client byte stream into the HTTP upgrade response and then whole
//! WebSocket frames (RFC 6455 §5.2), buffering partial ones across reads, and reading the
//! sequence number of the frames that carry one.

use serde::Deserialize;

/// Frames above this are forwarded without inspection.
const MAX_INSPECTED_FRAME: u64 = 1 << 24;
/// An HTTP upgrade response larger than this is not one: stop parsing, just forward.
const MAX_HTTP_HEAD: usize = 64 * 1024;

/// A piece of the stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Bytes to forward as they are: the HTTP head, control and binary frames, fragments,
    /// compressed frames, anything not understood.
    Opaque(Vec<u8>),
    /// One whole, unfragmented, uncompressed, unmasked text frame: `bytes` is the frame with
    /// its header, its payload starts at `payload_at`.
    Text {
        /// The whole frame.
        bytes: Vec<u8>,
        /// Offset of the payload.
        payload_at: usize,
    },
}

/// The splitter's state.
#[derive(Default)]
pub(crate) struct Splitter {
    buf: Vec<u8>,
    mode: Mode,
}

#[derive(Default, PartialEq, Eq)]
enum Mode {
    #[default]
    HttpHead,
    Frames,
    /// Something not understood: forward the rest untouched.
    Raw,
}

impl Splitter {
    /// Feeds the bytes of one read; appends the pieces now complete to `out`.
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        if self.mode == Mode::Raw {
            out.push(Piece::Opaque(bytes.to_vec()));
            return;
        }
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        if self.mode == Mode::HttpHead {
            match find(&self.buf, b"\r\n\r\n") {
                Some(end) => {
                    out.push(Piece::Opaque(self.buf[..end + 4].to_vec()));
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
                    let frame = self.buf[at..at + len].to_vec();
                    // FIN + text opcode, no RSV bits (no compression), unmasked.
                    if frame[0] == 0x81 && frame[1] & 0x80 == 0 {
                        out.push(Piece::Text {
                            bytes: frame,
                            payload_at,
                        });
                    } else {
                        out.push(Piece::Opaque(frame));
                    }
                    at += len;
                }
                Extent::Partial => break,
                Extent::TooLarge => self.mode = Mode::Raw,
            }
        }
        if self.mode == Mode::Raw {
            out.push(Piece::Opaque(self.buf[at..].to_vec()));
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

/// What the proxy needs to know about a text frame: its `type` and its sequence number, if it
/// is a tracked frame (top-level `seq`) or a replay (`seq`, else `event.sequence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// The frame's `type` (`message`, `response`, `replay`, ...).
    pub kind: String,
    /// Its sequence number.
    pub seq: u64,
}

impl EventInfo {
    /// Reads a frame's payload; `None` for frames without a sequence number (handshakes,
    /// pings, errors, broadcasts) and for anything that is not a JSON object.
    pub fn of(payload: &[u8]) -> Option<EventInfo> {
        #[derive(Deserialize)]
        struct Replayed {
            sequence: Option<u64>,
        }
        #[derive(Deserialize)]
        struct Frame {
            #[serde(rename = "type")]
            kind: Option<String>,
            seq: Option<u64>,
            event: Option<Replayed>,
        }
        let frame: Frame = serde_json::from_slice(payload).ok()?;
        let kind = frame.kind.unwrap_or_else(|| "message".into());
        let seq = match frame.seq {
            Some(seq) => seq,
            None if kind == "replay" => frame.event?.sequence?,
            None => return None,
        };
        Some(EventInfo { kind, seq })
    }
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

    /// Feeds `stream` in chunks of `step` bytes; returns (opaque bytes, text frames).
    fn split(stream: &[u8], step: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut splitter = Splitter::default();
        let (mut opaque, mut text) = (Vec::new(), Vec::new());
        let mut pieces = Vec::new();
        for chunk in stream.chunks(step) {
            splitter.feed(chunk, &mut pieces);
        }
        for p in pieces {
            match p {
                Piece::Opaque(b) => opaque.extend_from_slice(&b),
                Piece::Text { bytes, .. } => text.push(bytes),
            }
        }
        (opaque, text)
    }

    #[test]
    fn text_frames_are_found_whatever_the_read_boundaries() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let hello = text_frame(r#"{"type":"hello_ok","session_id":"s"}"#);
        let event = text_frame(&format!(
            r#"{{"type":"message","content":"{}","cursor":1,"seq":1}}"#,
            "x".repeat(200)
        ));
        let ping = vec![0x89, 0x00];
        let binary = vec![0x82, 0x01, 0xff];
        let stream = [
            head.clone(),
            hello.clone(),
            event.clone(),
            ping.clone(),
            binary.clone(),
        ]
        .concat();
        for step in [1, 3, 7, 64, stream.len()] {
            let (opaque, text) = split(&stream, step);
            assert_eq!(text, vec![hello.clone(), event.clone()], "step {step}");
            assert_eq!(opaque, [&head[..], &ping, &binary].concat());
        }
    }

    #[test]
    fn a_huge_frame_switches_to_plain_forwarding() {
        let mut stream = b"HTTP/1.1 101 OK\r\n\r\n".to_vec();
        stream.extend_from_slice(&[0x82, 127]);
        stream.extend_from_slice(&u64::MAX.to_be_bytes());
        stream.extend_from_slice(b"rest");
        let (opaque, text) = split(&stream, 5);
        assert!(text.is_empty());
        assert_eq!(opaque, stream);
    }

    #[test]
    fn sequence_numbers_come_from_live_frames_and_both_replay_shapes() {
        let live = br#"{"type":"message","content":"seq","cursor":7,"seq":7}"#;
        assert_eq!(
            EventInfo::of(live),
            Some(EventInfo {
                kind: "message".into(),
                seq: 7
            })
        );
        let v2_replay = br#"{"type":"replay","event":{"type":"message","data":{"cursor":8,"seq":8},"sequence":8},"seq":8}"#;
        assert_eq!(EventInfo::of(v2_replay).map(|e| e.seq), Some(8));
        let v1_replay = br#"{"type":"replay","event":{"type":"message","data":{"cursor":9,"seq":9},"sequence":9}}"#;
        assert_eq!(
            EventInfo::of(v1_replay).map(|e| (e.kind, e.seq)),
            Some(("replay".into(), 9))
        );
        assert_eq!(EventInfo::of(br#"{"type":"hello_ok","cursor":3}"#), None);
        assert_eq!(EventInfo::of(br#"{"type":"ping"}"#), None);
        assert_eq!(EventInfo::of(b"not json"), None);
    }
}
