//! Event fields encoded by the producer: a batch of JSON objects in one buffer, checked once
//! when they are added, that the server machine splices into its frames as they are
//! (`Server::publish_encoded`) instead of moving, re-encoding and dropping `Value`s.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

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
        let mut watch = KeyWatch::default();
        let written = fields.serialize(&mut serde_json::Serializer::with_formatter(
            &mut scratch,
            &mut watch,
        ));
        let pushed = match written {
            Ok(()) => match std::str::from_utf8(&scratch) {
                Ok(object) if watch.plainly_unstamped() && object.starts_with('{') => {
                    // serde_json's own compact output, valid JSON, an object (no raw text
                    // anywhere, and it begins with a brace) whose keys were all seen: its
                    // members are what lies between the braces.
                    let start = self.text.len() + 1;
                    self.text.push_str(object);
                    self.members.push((start, self.text.len() - 1));
                    Ok(())
                }
                // Anything else gets the full check, which also names the reserved key.
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

/// serde_json's compact formatter, watching the keys of the top-level object as serde_json
/// writes them, so that [`EventBatch::push`] knows whether one is stamped without scanning
/// the text afterwards.
#[derive(Default)]
struct KeyWatch {
    /// Objects open around what is being written (top-level keys are written at depth 1).
    depth: u32,
    /// The top-level key being written.
    key: Option<KeyText>,
    /// A top-level key was stamped.
    stamped: bool,
    /// Raw JSON text was written as it is (`RawValue`): its keys were not seen.
    raw: bool,
}

impl KeyWatch {
    /// No top-level key is one the server stamps, and every key was seen being written.
    fn plainly_unstamped(&self) -> bool {
        !self.stamped && !self.raw
    }
}

/// The text of a key as it is written, kept only while it could still be a stamped key.
#[derive(Default)]
struct KeyText {
    bytes: [u8; KEY_MAX],
    len: usize,
    /// Longer than any stamped key, or holding an escaped character (no stamped key does).
    unlike: bool,
}

/// Length of the longest stamped key (`cursor`).
const KEY_MAX: usize = 6;

impl KeyText {
    fn push(&mut self, fragment: &str) {
        let end = self.len + fragment.len();
        match self.bytes.get_mut(self.len..end) {
            Some(room) if !self.unlike => {
                room.copy_from_slice(fragment.as_bytes());
                self.len = end;
            }
            _ => self.unlike = true,
        }
    }

    fn is_stamped(&self) -> bool {
        !self.unlike
            && STAMPED_KEYS
                .iter()
                .any(|k| k.as_bytes() == &self.bytes[..self.len])
    }
}

impl Formatter for &mut KeyWatch {
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        CompactFormatter.begin_object(w)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        CompactFormatter.end_object(w)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if self.depth == 1 {
            self.key = Some(KeyText::default());
        }
        CompactFormatter.begin_object_key(w, first)
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if let Some(key) = self.key.take() {
            self.stamped |= key.is_stamped();
        }
        CompactFormatter.end_object_key(w)
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if let Some(key) = &mut self.key {
            key.push(fragment);
        }
        CompactFormatter.write_string_fragment(w, fragment)
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        if let Some(key) = &mut self.key {
            key.unlike = true;
        }
        CompactFormatter.write_char_escape(w, escape)
    }

    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        self.raw = true;
        CompactFormatter.write_raw_fragment(w, fragment)
    }
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

#[cfg(test)]
mod key_watch {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// `push` (keys watched as serde_json writes them) and `push_json` (the text scanned
    /// afterwards) decide alike.
    fn decide(fields: &impl Serialize) -> (Result<(), FieldsError>, Result<(), FieldsError>) {
        let text = serde_json::to_string(fields).unwrap();
        let (mut watched, mut scanned) = (EventBatch::new(), EventBatch::new());
        let decisions = (watched.push(fields), scanned.push_json(&text));
        assert_eq!(
            watched.iter().collect::<Vec<_>>(),
            scanned.iter().collect::<Vec<_>>()
        );
        decisions
    }

    /// Whether `push` takes its fast path (no second look at the text) for `fields`.
    fn plainly_unstamped(fields: &impl Serialize) -> bool {
        let mut watch = KeyWatch::default();
        let mut out = Vec::new();
        fields
            .serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, &mut watch,
            ))
            .unwrap();
        assert_eq!(out, serde_json::to_vec(fields).unwrap(), "compact output");
        watch.plainly_unstamped()
    }

    #[derive(Serialize)]
    struct Renamed {
        #[serde(rename = "type")]
        kind: u8,
    }

    #[derive(Serialize)]
    struct Flattened {
        a: u8,
        #[serde(flatten)]
        rest: std::collections::BTreeMap<String, u8>,
    }

    #[test]
    fn stamped_keys_are_caught_where_they_are_top_level_and_only_there() {
        let cases: Vec<(Value, Option<&str>)> = vec![
            (json!({"seq": 1}), Some("seq")),
            (json!({"a": 1, "cursor": {"x": 1}}), Some("cursor")),
            (json!({"a": {"seq": 1}, "b": [{"type": 2}]}), None),
            (
                json!({"se": 1, "seqq": 2, "typ": 3, "cursors": 4, "": 5}),
                None,
            ),
            (json!({"se\"q": 1, "ty\npe": 2, "\u{1}seq": 3}), None),
            (json!({"a": "seq", "b": "\"seq\":"}), None),
        ];
        for (fields, reserved) in cases {
            let (watched, scanned) = decide(&fields);
            assert_eq!(watched, scanned, "{fields}");
            assert_eq!(plainly_unstamped(&fields), reserved.is_none(), "{fields}");
            assert_eq!(
                watched,
                reserved.map_or(Ok(()), |k| Err(FieldsError::Reserved(k.into()))),
                "{fields}"
            );
        }
        assert_eq!(
            decide(&Renamed { kind: 1 }).0,
            Err(FieldsError::Reserved("type".into()))
        );
        let flat = Flattened {
            a: 1,
            rest: [("seq".to_owned(), 2)].into(),
        };
        assert_eq!(decide(&flat).0, Err(FieldsError::Reserved("seq".into())));
        let ints = std::collections::BTreeMap::from([(1u8, "seq"), (2, "type")]);
        assert_eq!(decide(&ints), (Ok(()), Ok(())));
        // Raw text is not watched: it gets the full check.
        let raw = serde_json::value::RawValue::from_string(r#"{"seq":1}"#.into()).unwrap();
        assert_eq!(decide(&raw).0, Err(FieldsError::Reserved("seq".into())));
        let nested_raw = json!({"a": serde_json::to_value(&*raw).unwrap()});
        assert_eq!(decide(&nested_raw), (Ok(()), Ok(())));
        assert_eq!(decide(&json!([1])).0, Err(FieldsError::NotObject));
        assert_eq!(decide(&json!("seq")).0, Err(FieldsError::NotObject));
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("seq".to_owned()),
            Just("type".to_owned()),
            Just("cursor".to_owned()),
            "[a-z\"\\\\\n]{0,7}",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            key().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn watching_keys_decides_as_scanning_the_text(fields in value()) {
            let (watched, scanned) = decide(&fields);
            prop_assert_eq!(watched, scanned);
        }
    }
}
