//! [`Kind`]: a delivered event's `type`, held without an allocation when it is short.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest `type` held inline (every kind the gateways use is shorter).
const INLINE: usize = 22;

/// A delivered event's `type` (`message`, `response`, `token_stream`, ...). Compares, hashes,
/// prints and derefs like a `str`; names up to 22 bytes are stored inline, so a stream of
/// events costs no allocation (and no cross-thread free) for their kind.
///
/// ```
/// use tether_core::client::Kind;
/// let kind = Kind::from("message");
/// assert!(kind == "message" && "message" == kind);
/// assert_eq!(kind.len(), 7);
/// assert_eq!(format!("{kind} {kind:?}"), "message \"message\"");
/// ```
#[derive(Clone)]
pub struct Kind(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Kind {
    /// The kind as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always a whole `str` copied in by `From<&str>`; checked rather than trusted.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Kind {
    fn from(s: &str) -> Self {
        if s.len() > INLINE {
            return Kind(Repr::Heap(s.into()));
        }
        let mut bytes = [0; INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Kind(Repr::Inline {
            len: s.len() as u8,
            bytes,
        })
    }
}

impl From<String> for Kind {
    fn from(s: String) -> Self {
        if s.len() > INLINE {
            Kind(Repr::Heap(s.into_boxed_str()))
        } else {
            Kind::from(s.as_str())
        }
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> Self {
        k.as_str().to_owned()
    }
}

impl Deref for Kind {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Kind {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Kind {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Kind {}

impl Hash for Kind {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Kind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Kind {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Kind> for str {
    fn eq(&self, other: &Kind) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Kind> for &str {
    fn eq(&self, other: &Kind) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_kinds_read_back_and_compare_alike() {
        let long = "k".repeat(INLINE + 1);
        for s in ["", "message", "é€", &"x".repeat(INLINE), &long] {
            let (a, b) = (Kind::from(s), Kind::from(s.to_owned()));
            assert_eq!(a.as_str(), s);
            assert_eq!(a, b);
            assert_eq!(String::from(b), s);
            assert!(a == s);
            assert!(s == a);
        }
        assert_ne!(Kind::from("message"), Kind::from("messages"));
        let set: std::collections::HashSet<Kind> = ["a", "b", "a"].map(Kind::from).into();
        assert!(set.contains("a") && set.len() == 2);
    }
}
