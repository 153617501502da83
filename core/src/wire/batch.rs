//! Event fields encoded by the producer: a batch of JSON objects in one buffer, checked once
//! when they are added, that the server machine splices into its frames as they are
//! (`Server::publish_encoded`) instead of moving, re-encoding and dropping `Value`s.

use serde::Serialize;

use super::scan;

/// Keys the server writes itself in every tracked frame.
const STAMPED_KEYS: [&str; 3] = ["type", "cursor", "seq"];

/// Why fields were not added to an [`EventBatch`]: the application's mistake, nothing was
/// added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    /// The fields are not one JSON object (serialize a struct or a map).
    #[error("event fields must be one JSON object")]
    NotObject,
    /// A key the server stamps itself (`type`, `cursor`, `seq`): rename the field.
    #[error("field `{0}` is reserved: the server stamps it")]
    Reserved(String),
    /// The value could not be serialized (serde's message).
    #[error("fields could not be encoded: {0}")]
    Encode(String),
}

/// Several events' fields, each encoded once as a JSON object, for the server machine's
/// `publish_encoded` (and the adapters' `Server::publish_batch`). One buffer holds the whole
/// batch, so a streaming producer allocates per batch, not per event or per field.
///
/// ```
/// use tether_core::wire::EventBatch;
/// #[derive(serde::Serialize)]
/// struct Token<'a> { content: &'a str, n: u64 }
///
/// let mut batch = EventBatch::new();
/// batch.push(&Token { content: "hello", n: 1 }).unwrap();
/// batch.push_json(r#"{"content":"world","n":2}"#).unwrap();
/// assert!(batch.push_json(r#"{"seq":3}"#).is_err());
/// let fields: Vec<&str> = batch.iter().map(|f| f.as_str()).collect();
/// assert_eq!(fields, [r#""content":"hello","n":1"#, r#""content":"world","n":2"#]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    /// The encoded objects, back to back.
    text: String,
    /// Each event's members (the text between its braces) in `text`.
    members: Vec<(usize, usize)>,
    /// serde_json's output for the event being added: checked as UTF-8 once, as a whole,
    /// rather than piece by piece.
    scratch: Vec<u8>,
}

/// One event's fields from an [`EventBatch`]: the members of a checked JSON object (no
/// braces), without any key the server stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedFields<'a>(&'a str);

impl<'a> EncodedFields<'a> {
    /// The members' JSON text, e.g. `"content":"hi","n":1` (empty for `{}`).
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// An `io::Write` into a `String`. serde_json only ever writes whole UTF-8 pieces (it splits
/// strings at ASCII escapes), so each write is checked and appended.
pub(crate) struct StrWriter<'a>(pub(crate) &'a mut String);

impl std::io::Write for StrWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.0.push_str(s);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `events` events of `bytes` bytes of JSON in all.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            members: Vec::with_capacity(events),
            scratch: Vec::new(),
        }
    }

    /// Adds an event whose fields are `fields` serialized with serde_json (a struct or a map).
    pub fn push<T: Serialize + ?Sized>(&mut self, fields: &T) -> Result<(), FieldsError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let pushed = match serde_json::to_writer(&mut scratch, fields) {
            Ok(()) => match std::str::from_utf8(&scratch) {
                Ok(object) if plainly_unstamped_object(object) => {
                    // serde_json's own compact output: valid JSON, an object, no stamped key
                    // anywhere; its members are what lies between the braces.
                    let start = self.text.len() + 1;
                    self.text.push_str(object);
                    self.members.push((start, self.text.len() - 1));
                    Ok(())
                }
                Ok(object) => self.push_json(object),
                // serde_json writes UTF-8 only; refused rather than trusted.
                Err(e) => Err(FieldsError::Encode(e.to_string())),
            },
            Err(e) => Err(FieldsError::Encode(e.to_string())),
        };
        self.scratch = scratch;
        pushed
    }

    /// Adds an event whose fields are already JSON text: one object, checked here.
    pub fn push_json(&mut self, object: &str) -> Result<(), FieldsError> {
        let start = self.text.len();
        self.text.push_str(object);
        self.check_last(start)
    }

    /// Records the object written at `start..` or takes it back out.
    fn check_last(&mut self, start: usize) -> Result<(), FieldsError> {
        let mut reserved = None;
        let members = scan::object_members(&self.text[start..], |key, escaped| {
            if reserved.is_none() && is_stamped(key, escaped) {
                reserved = Some(key.to_owned());
            }
        })
        .map(|m| {
            let offset = m.as_ptr() as usize - self.text.as_ptr() as usize;
            (offset, offset + m.len())
        });
        match (members, reserved) {
            (Some(range), None) => {
                self.members.push(range);
                Ok(())
            }
            (members, reserved) => {
                self.text.truncate(start);
                Err(match (members, reserved) {
                    (None, _) => FieldsError::NotObject,
                    (_, key) => FieldsError::Reserved(key.unwrap_or_default()),
                })
            }
        }
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.members.clear();
    }

    /// Each event's fields, in the order they were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EncodedFields<'_>> + '_ {
        self.members
            .iter()
            .map(|&(start, end)| EncodedFields(self.text.get(start..end).unwrap_or("")))
    }
}

/// Whether serde_json's compact output (valid JSON) is an object in which no key could be one
/// the server stamps: it starts with `{` and no `:` in it follows `"type"`, `"cursor"` or
/// `"seq"` (serde_json writes such keys unescaped, each right before its `:`). A colon is
/// found with the `memchr` crate's vectorized search, and a few sit in a typical event. Anything else gets the full
/// check.
fn plainly_unstamped_object(json: &str) -> bool {
    json.starts_with('{')
        && memchr::memchr_iter(b':', json.as_bytes()).all(|at| {
            let before = json.get(..at).unwrap_or_default();
            !STAMPED_KEYS.iter().any(|key| {
                before
                    .strip_suffix('"')
                    .and_then(|b| b.strip_suffix(key))
                    .is_some_and(|b| b.ends_with('"'))
            })
        })
}

/// Whether a key, as written in JSON (escapes kept), names a field the server stamps.
fn is_stamped(key: &str, escaped: bool) -> bool {
    if !escaped {
        return STAMPED_KEYS.contains(&key);
    }
    // `"typ\u0065"` is `type` too: decode the rare escaped key to compare it.
    serde_json::from_str::<String>(&format!("\"{key}\""))
        .is_ok_and(|k| STAMPED_KEYS.contains(&k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_kept_as_their_members_and_anything_else_is_refused() {
        let mut batch = EventBatch::with_capacity(4, 256);
        batch.push(&serde_json::json!({})).unwrap();
        assert_eq!(
            batch.push(&serde_json::json!({"a": {"seq": 1}, "seq": 2})),
            Err(FieldsError::Reserved("seq".into()))
        );
        assert_eq!(
            batch.push(&serde_json::json!({"cursor": 1})),
            Err(FieldsError::Reserved("cursor".into()))
        );
        batch
            .push_json(" { \"a\" : [1, {\"seq\": 2}] , \"b\":null } ")
            .unwrap();
        batch
            .push(&std::collections::BTreeMap::from([("k", "v\"")]))
            .unwrap();
        let fields: Vec<&str> = batch.iter().map(|f| f.as_str()).collect();
        assert_eq!(
            fields,
            ["", r#""a" : [1, {"seq": 2}] , "b":null"#, r#""k":"v\"""#]
        );
        let kept = batch.text.len();
        for bad in [
            "[1]",
            "5",
            "{",
            r#"{"a":1}x"#,
            r#"{"a" 1}"#,
            "",
            r#"{"a":1,}"#,
        ] {
            assert_eq!(batch.push_json(bad), Err(FieldsError::NotObject), "{bad:?}");
        }
        assert_eq!(batch.push(&7), Err(FieldsError::NotObject));
        for (bad, key) in [
            (r#"{"n":1,"seq":2}"#, "seq"),
            (r#"{"type":"x"}"#, "type"),
            (r#"{"cursor":null}"#, "cursor"),
            (r#"{"typ\u0065":1}"#, r"typ\u0065"),
        ] {
            assert_eq!(
                batch.push_json(bad),
                Err(FieldsError::Reserved(key.into())),
                "{bad:?}"
            );
        }
        // Refused events leave nothing behind.
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.text.len(), kept);
        batch.clear();
        assert!(batch.is_empty());
    }
}
