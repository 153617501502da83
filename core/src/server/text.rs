//! [`FrameText`]: an outgoing frame's JSON text, shared without copying, and the chunked
//! writer that the event log stores its frames with.

use std::fmt;
use std::ops::Deref;

use bytes::{Bytes, BytesMut};

/// The JSON text of one outgoing frame. Cloning it shares the text (a reference count, no
/// copy): a live event's text is the one the event log holds for its session's recovery window
/// (an event published to many sessions is completed with each one's cursor when sent).
///
/// Write it with [`as_bytes`](Self::as_bytes) or [`into_bytes`](Self::into_bytes) (for
/// tungstenite: `Frame::message(text.into_bytes(), OpCode::Data(Data::Text), true)`): it
/// is valid UTF-8, built from `str`s. It also derefs to `str` for inspection, which checks
/// the UTF-8 again: handy in tests, not meant for a hot path.
///
/// ```
/// use tether_core::server::FrameText;
/// let text = FrameText::from(r#"{"type":"message","seq":1}"#);
/// assert_eq!(text, r#"{"type":"message","seq":1}"#);
/// assert_eq!(text.as_bytes().len(), 26);
/// assert!(text.contains("\"seq\":1"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FrameText(Bytes);

impl FrameText {
    /// The text's bytes (UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text's bytes as a shared buffer (UTF-8), for a socket that takes `Bytes`.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text. Checks the UTF-8 (always valid: built from `str`s).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// No text (no allocation): what a freed log record keeps.
    pub(crate) fn empty() -> Self {
        FrameText(Bytes::new())
    }
}

impl From<String> for FrameText {
    /// Takes the string's buffer as it is (no copy).
    fn from(s: String) -> Self {
        FrameText(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for FrameText {
    fn from(s: &str) -> Self {
        FrameText(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl Deref for FrameText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for FrameText {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for FrameText {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for FrameText {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl fmt::Display for FrameText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for FrameText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Writes frames back to back into chunks and hands each out as a [`FrameText`] sharing its
/// chunk: a stream of frames costs one allocation per chunk instead of one per frame, and a
/// chunk is freed once every frame in it is dropped. Chunks start small and double while
/// the writer is busy, so a quiet session pins little memory. Beyond the frames its ring
/// holds, a session pins at most the partly evicted oldest chunk and the current one
/// (2 × 64 KiB).
#[derive(Debug, Clone, Default)]
pub(crate) struct FrameWriter {
    /// The current chunk's free space (empty: no chunk yet).
    buf: BytesMut,
    /// Size of the next chunk.
    next_chunk: usize,
}

/// First chunk of a writer.
const FIRST_CHUNK: usize = 512;
/// Largest chunk: bounds what one retained frame can pin.
const MAX_CHUNK: usize = 64 << 10;

impl FrameWriter {
    /// Copies `text` into the current chunk (a new one if it does not fit) and shares it.
    pub(crate) fn write(&mut self, text: &str) -> FrameText {
        self.reserve(text.len());
        self.buf.extend_from_slice(text.as_bytes());
        FrameText(self.buf.split().freeze())
    }

    /// Makes room for `len` more bytes in the current chunk (a new chunk if needed).
    fn reserve(&mut self, len: usize) {
        if self.buf.capacity() < len {
            let size = self.next_chunk.clamp(FIRST_CHUNK, MAX_CHUNK);
            self.next_chunk = size.saturating_mul(2);
            self.buf = BytesMut::with_capacity(size.max(len));
        }
    }

    /// Like [`write`](Self::write) for a frame written in parts (e.g. a shared body and a
    /// session's tracked tail), which together must be UTF-8.
    pub(crate) fn write_parts(&mut self, parts: &[&[u8]]) -> FrameText {
        self.reserve(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        FrameText(self.buf.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_share_growing_chunks_and_keep_their_text() {
        let mut w = FrameWriter::default();
        let frames: Vec<(String, FrameText)> = (0..2_000)
            .map(|i| {
                let text = format!(r#"{{"type":"m","n":{i},"é":"{}"}}"#, "x".repeat(i % 300));
                let frame = w.write(&text);
                (text, frame)
            })
            .collect();
        for (text, frame) in &frames {
            assert_eq!(frame, text.as_str());
            assert_eq!(frame.as_bytes(), text.as_bytes());
        }
        // Chunks doubled up to the cap: the last one is the largest.
        assert_eq!(w.next_chunk, MAX_CHUNK * 2);
        // A frame bigger than a chunk gets a chunk of its own size.
        let big = "y".repeat(MAX_CHUNK * 3);
        assert_eq!(w.write(&big), big.as_str());
        assert_eq!(FrameText::from(big.clone()).into_bytes().len(), big.len());
        assert_eq!(FrameText::from("a\"b").to_string(), "a\"b");
        assert_eq!(format!("{:?}", FrameText::from("a\"b")), r#""a\"b""#);
        // Two parts make one frame.
        assert_eq!(w.write_parts(&[b"{\"a\":", b"1", b"}"]), "{\"a\":1}");
        assert!(FrameText::empty().is_empty());
    }
}
