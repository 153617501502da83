//! [`Payload`]: a delivered event's JSON text, sharing one buffer with the events delivered
//! in the same batch.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// A delivered event's JSON text (the frame as the server sent it). Derefs, compares and
/// prints like a `str`.
///
/// The events the machine delivers between two calls of [`Client::poll_event`] share one
/// buffer, so a stream costs one allocation per batch instead of one per event (and the
/// consumer's thread frees one buffer per batch, not one per event). Keeping one payload keeps
/// its batch's buffer alive: copy it (`to_string`) to keep a lone payload for long.
///
/// [`Client::poll_event`]: super::Client::poll_event
///
/// ```
/// use tether_core::client::Payload;
/// let p = Payload::from(r#"{"type":"message","seq":1}"#);
/// assert_eq!(p, r#"{"type":"message","seq":1}"#);
/// assert_eq!(p.len(), 26);
/// ```
#[derive(Clone)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    /// A slice of a batch's shared buffer.
    Shared {
        text: Arc<String>,
        start: usize,
        end: usize,
    },
    /// Its own text.
    Owned(Box<str>),
    /// Inside the machine only: bytes `range` of batch `batch`, not yet frozen into a buffer.
    Pending { batch: u64, range: Range<usize> },
}

impl Payload {
    /// The payload as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Shared { text, start, end } => text.get(*start..*end).unwrap_or_default(),
            Repr::Owned(s) => s,
            // Never handed out: the machine resolves it before `poll_event` returns.
            Repr::Pending { .. } => "",
        }
    }

    /// The payload as its own allocation.
    pub fn into_boxed_str(self) -> Box<str> {
        match self.0 {
            Repr::Owned(s) => s,
            _ => self.as_str().into(),
        }
    }
}

/// The texts of events being delivered, gathered in one growing buffer and frozen into a
/// shared one when the application takes the first of them.
#[derive(Debug, Default)]
pub(crate) struct PayloadBatches {
    /// Texts of batch `open`, back to back.
    gathering: String,
    open: u64,
    /// The last frozen batch and its number.
    frozen: Option<(u64, Arc<String>)>,
}

/// A new batch's buffer starts with the previous batch's size, up to this.
const GATHER_KEEP: usize = 256 << 10;

impl PayloadBatches {
    /// Adds `text` to the open batch; the payload is resolved by [`PayloadBatches::resolve`].
    pub(crate) fn add(&mut self, text: &str) -> Payload {
        let start = self.gathering.len();
        self.gathering.push_str(text);
        Payload(Repr::Pending {
            batch: self.open,
            range: start..self.gathering.len(),
        })
    }

    /// Turns a pending payload into a slice of its batch's shared buffer (freezing the open
    /// batch if it is that one's). Events leave the machine in order, so batches are frozen
    /// in order too.
    pub(crate) fn resolve(&mut self, payload: &mut Payload) {
        let Repr::Pending { batch, range } = &payload.0 else {
            return;
        };
        let (batch, range) = (*batch, range.clone());
        if batch == self.open && range == (0..self.gathering.len()) {
            // A batch of one (events taken one by one): the gathered text becomes the payload
            // as it is (no second copy, no shared count); the next event starts a new buffer.
            payload.0 = Repr::Owned(std::mem::take(&mut self.gathering).into_boxed_str());
            self.open += 1;
            return;
        }
        if batch == self.open {
            // The gathered buffer itself is shared (no copy); the next batch gets a new one
            // the size of this one (up to a bound).
            let next = String::with_capacity(self.gathering.len().min(GATHER_KEEP));
            let text = Arc::new(std::mem::replace(&mut self.gathering, next));
            self.frozen = Some((self.open, text));
            self.open += 1;
        }
        payload.0 = match &self.frozen {
            Some((b, text)) if *b == batch => Repr::Shared {
                text: text.clone(),
                start: range.start,
                end: range.end,
            },
            // Unreachable while events leave in order; an empty text is the safe answer.
            _ => Repr::Owned("".into()),
        };
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Payload(Repr::Owned(s.into()))
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Payload(Repr::Owned(s.into_boxed_str()))
    }
}

impl From<Box<str>> for Payload {
    fn from(s: Box<str>) -> Self {
        Payload(Repr::Owned(s))
    }
}

impl Deref for Payload {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Payload {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

impl PartialEq<str> for Payload {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Payload {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_one_batch_share_a_buffer_and_batches_freeze_in_order() {
        let mut batches = PayloadBatches::default();
        let mut first = [batches.add("a1"), batches.add("a22")];
        batches.resolve(&mut first[0]);
        // Added after the first batch was frozen: the next batch.
        let mut late = [batches.add("b333"), batches.add("b4")];
        batches.resolve(&mut first[1]);
        batches.resolve(&mut late[0]);
        batches.resolve(&mut late[1]);
        let late = &late[0];
        assert_eq!([first[0].as_str(), first[1].as_str()], ["a1", "a22"]);
        assert_eq!(*late, "b333");
        let shared = |p: &Payload| match &p.0 {
            Repr::Shared { text, .. } => Some(text.clone()),
            _ => None,
        };
        let (a, b) = (shared(&first[0]).unwrap(), shared(&first[1]).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &shared(late).unwrap()));
        assert_eq!(first[1].clone().into_boxed_str(), "a22".into());
        // A batch of one is not shared.
        let mut lone = batches.add("c");
        batches.resolve(&mut lone);
        assert!(shared(&lone).is_none());
        assert_eq!(lone, "c");
        assert_eq!(Payload::from("x".to_owned()).to_string(), "x");
    }
}
