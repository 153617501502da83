//! The one JSON writer: every frame tether writes is assembled here, straight into one
//! buffer, in the key order the reference server uses (serde_json's `Map` would sort keys), at
//! no allocation beyond the buffer. Strings are escaped exactly as serde_json escapes them;
//! numbers and other values go through serde_json itself, so the bytes are serde_json's.

use serde::Serialize;
use serde_json::Value;

use super::scan::{is_special, word_has_special};

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

/// Compact JSON of `v`; the types used here always serialize, `null` is a safe fallback.
pub(crate) fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Whether `s` holds a byte serde_json escapes (`"`, `\\`, control characters).
fn needs_escape(s: &[u8]) -> bool {
    // No early exit inside a block: the compiler turns this into a few vector compares.
    fn block_special(block: &[u8]) -> bool {
        block.iter().fold(false, |acc, &b| acc | is_special(b))
    }
    fn word(bytes: &[u8]) -> u64 {
        bytes.try_into().map_or(0, u64::from_le_bytes)
    }
    let n = s.len();
    if n >= 16 {
        let mut blocks = s.chunks_exact(16);
        if blocks.any(block_special) {
            return true;
        }
        // The tail, as the last 16 bytes (overlapping what was checked).
        n % 16 != 0 && block_special(&s[n - 16..])
    } else if n >= 8 {
        word_has_special(word(&s[..8])) || word_has_special(word(&s[n - 8..]))
    } else {
        s.iter().any(|&b| is_special(b))
    }
}

/// Appends `s` as a JSON string literal, escaped byte for byte as serde_json does.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    if needs_escape(s.as_bytes()) {
        push_escaped(out, s);
    } else {
        out.push_str(s);
    }
    out.push('"');
}

#[cold]
fn push_escaped(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// `n` in decimal, in `buf`.
pub(crate) fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    const PAIRS: &[u8; 200] =
        b"00010203040506070809101112131415161718192021222324252627282930313233343536373839\
        40414243444546474849505152535455565758596061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let pair = |d: u64| {
        let d = 2 * d as usize;
        [PAIRS[d], PAIRS[d + 1]]
    };
    let mut i = buf.len();
    while n >= 100 {
        i -= 2;
        buf[i..i + 2].copy_from_slice(&pair(n % 100));
        n /= 100;
    }
    if n >= 10 {
        i -= 2;
        buf[i..i + 2].copy_from_slice(&pair(n));
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut String, n: u64) {
    out.push_str(fmt_u64(n, &mut [0; 20]));
}

/// Appends `v` as serde_json's compact JSON (`null` if it cannot be serialized).
pub(crate) fn push_json<T: Serialize + ?Sized>(out: &mut String, v: &T) {
    let mark = out.len();
    if serde_json::to_writer(StrWriter(out), v).is_err() {
        out.truncate(mark);
        out.push_str("null");
    }
}

/// Appends a JSON value; strings (the common case) take the direct path.
pub(crate) fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => push_str(out, s),
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        other => push_json(out, other),
    }
}

/// Appends a uuid (8-4-4-4-12 lowercase hex) of `id`'s big-endian bytes.
pub(crate) fn push_uuid(out: &mut String, id: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 36];
    let mut pos = 0;
    for (i, b) in id.to_be_bytes().iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[pos] = b'-';
            pos += 1;
        }
        buf[pos] = HEX[usize::from(b >> 4)];
        buf[pos + 1] = HEX[usize::from(b & 15)];
        pos += 2;
    }
    for &c in &buf {
        out.push(char::from(c));
    }
}

/// `id` as a uuid string.
pub(crate) fn uuid_string(id: u128) -> String {
    let mut s = String::with_capacity(36);
    push_uuid(&mut s, id);
    s
}

/// Parses a uuid string written by [`push_uuid`] (any hex case).
pub(crate) fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut id = 0u128;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        let digit = char::from(c).to_digit(16)?;
        id = (id << 4) | u128::from(digit);
    }
    Some(id)
}

/// Length of the prefix every frame starts with, before its JSON-escaped `type` value.
pub(crate) const TYPE_PREFIX: &str = "{\"type\":";

/// Writes `{"type":..., k:v, ...}` in insertion order, into a caller's buffer.
pub(crate) struct Obj<'a>(&'a mut String);

impl<'a> Obj<'a> {
    /// Starts `{"type":kind` at the end of `out`.
    pub(crate) fn start(out: &'a mut String, kind: &str) -> Self {
        out.push_str(TYPE_PREFIX);
        push_str(out, kind);
        Self(out)
    }

    /// Continues an object left open in `out` (a store's frame body).
    pub(crate) fn resume(out: &'a mut String) -> Self {
        Self(out)
    }

    /// Bytes written to the buffer so far.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    fn key(&mut self, key: &str) {
        self.0.push(',');
        push_str(self.0, key);
        self.0.push(':');
    }

    /// `,"key":<value as serde_json writes it>`.
    pub(crate) fn field<T: Serialize + ?Sized>(mut self, key: &str, value: &T) -> Self {
        self.key(key);
        push_json(self.0, value);
        self
    }

    /// `,"key":"<value>"`.
    pub(crate) fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_str(self.0, value);
        self
    }

    /// `,"key":<n>`.
    pub(crate) fn u64(mut self, key: &str, n: u64) -> Self {
        self.key(key);
        push_u64(self.0, n);
        self
    }

    /// `,"key":<v>`.
    pub(crate) fn value(mut self, key: &str, v: &Value) -> Self {
        self.key(key);
        push_value(self.0, v);
        self
    }

    /// `,"key":<raw_json>` (already JSON).
    pub(crate) fn raw(mut self, key: &str, raw_json: &str) -> Self {
        self.key(key);
        self.0.push_str(raw_json);
        self
    }

    /// `,<members>`: fields already encoded as JSON object members (nothing if empty).
    pub(crate) fn members(self, members: &str) -> Self {
        if !members.is_empty() {
            self.0.push(',');
            self.0.push_str(members);
        }
        self
    }

    /// Closes the object, appending `"cursor":n,"seq":n` as the last two keys.
    pub(crate) fn tracked(self, cursor: u64) -> &'a mut String {
        push_tracked_tail(self.0, cursor);
        self.0
    }

    /// Closes the object.
    pub(crate) fn end(self) -> &'a mut String {
        self.0.push('}');
        self.0
    }

    /// `f(self)`: keeps a chain of fields going through a conditional one.
    #[inline]
    pub(crate) fn then(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }

    /// `,"key":` followed by what `write` appends (a nested value).
    pub(crate) fn nested(mut self, key: &str, write: impl FnOnce(&mut String)) -> Self {
        self.key(key);
        write(self.0);
        self
    }

    /// `,"key":true|false` if there is a value.
    pub(crate) fn opt_bool(self, key: &str, b: Option<bool>) -> Self {
        match b {
            Some(b) => self.bool(key, b),
            None => self,
        }
    }

    /// `,"key":true|false`.
    pub(crate) fn bool(mut self, key: &str, b: bool) -> Self {
        self.key(key);
        self.0.push_str(if b { "true" } else { "false" });
        self
    }

    /// `,"key":"<value>"` if there is a value.
    pub(crate) fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    /// `,"key":<n>` if there is a number.
    pub(crate) fn opt_u64(self, key: &str, n: Option<u64>) -> Self {
        match n {
            Some(n) => self.u64(key, n),
            None => self,
        }
    }

    /// `,"key":<v>` if there is a value.
    pub(crate) fn opt_value(self, key: &str, v: Option<&Value>) -> Self {
        match v {
            Some(v) => self.value(key, v),
            None => self,
        }
    }

    /// `,"key":["a","b",...]`.
    pub(crate) fn strings(mut self, key: &str, items: &[String]) -> Self {
        self.key(key);
        push_strings(self.0, items);
        self
    }

    /// `,"key":{...}`, the object's members written by `build`.
    pub(crate) fn object(mut self, key: &str, build: impl FnOnce(Members<'_>)) -> Self {
        self.key(key);
        self.0.push('{');
        build(Members {
            out: self.0,
            first: true,
        });
        self.0.push('}');
        self
    }

    /// Every member of `map`, in its order.
    pub(crate) fn map(self, map: &serde_json::Map<String, Value>) -> Self {
        map.iter().fold(self, |o, (k, v)| o.value(k, v))
    }
}

/// The members of a nested object (no `type` first).
pub(crate) struct Members<'a> {
    out: &'a mut String,
    first: bool,
}

impl Members<'_> {
    fn key(&mut self, key: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        push_str(self.out, key);
        self.out.push(':');
    }

    /// `"key":<n>` if there is a number.
    pub(crate) fn opt_u64(mut self, key: &str, n: Option<u64>) -> Self {
        if let Some(n) = n {
            self.key(key);
            push_u64(self.out, n);
        }
        self
    }

    /// `"key":["a",...]`.
    pub(crate) fn strings(mut self, key: &str, items: &[String]) -> Self {
        self.key(key);
        push_strings(self.out, items);
        self
    }

    /// Every member of `map`, in its order.
    pub(crate) fn map(mut self, map: &serde_json::Map<String, Value>) -> Self {
        for (k, v) in map {
            self.key(k);
            push_value(self.out, v);
        }
        self
    }
}

/// Appends `["a","b",...]`.
fn push_strings(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, item);
    }
    out.push(']');
}

/// The keys that end a tracked frame: `,"cursor":n,"seq":n}` (known keys, written as they are).
const CURSOR_KEY: &str = ",\"cursor\":";
const SEQ_KEY: &str = ",\"seq\":";

/// The end of a tracked frame, `,"cursor":n,"seq":n}`, as the pieces `f` gets (for a shared
/// body completed per session).
pub(crate) fn tracked_tail<R>(cursor: u64, f: impl FnOnce([&str; 5]) -> R) -> R {
    let mut buf = [0; 20];
    let n = fmt_u64(cursor, &mut buf);
    f([CURSOR_KEY, n, SEQ_KEY, n, "}"])
}

/// Appends the end of a tracked frame, as [`tracked_tail`] (after one reservation: this runs
/// for every published event).
pub(crate) fn push_tracked_tail(out: &mut String, cursor: u64) {
    let mut buf = [0; 20];
    let n = fmt_u64(cursor, &mut buf);
    out.reserve(CURSOR_KEY.len() + SEQ_KEY.len() + 1 + 2 * n.len());
    out.push_str(CURSOR_KEY);
    out.push_str(n);
    out.push_str(SEQ_KEY);
    out.push_str(n);
    out.push('}');
}

/// A standalone frame: `build` fills in the fields after `{"type":kind`.
pub(crate) fn frame(kind: &str, build: impl FnOnce(Obj<'_>) -> &mut String) -> String {
    let mut out = String::with_capacity(128);
    build(Obj::start(&mut out, kind));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_does() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀\u{7f}\u{2028}");
        let samples = [
            "",
            "plain",
            "a\"b\\c",
            "sixteen bytes ok",
            "sixteen bytes \n!",
            all.as_str(),
        ];
        for s in samples {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
        // Every length and position around the block and word boundaries.
        for len in 0..40 {
            for pos in 0..len {
                for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '\u{7f}', 'é'] {
                    let s: String = (0..len)
                        .map(|i| if i == pos { special } else { 'a' })
                        .collect();
                    let mut out = String::new();
                    push_str(&mut out, &s);
                    assert_eq!(out, serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_values_and_uuids_match_serde_json() {
        for n in [0, 7, 10, 99, 100, 101, 999, 1000, 12345, 1 << 53, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        for v in [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(1.5),
            serde_json::json!(-3),
            serde_json::json!("x\ty"),
            serde_json::json!({"b": [1, "two", null], "a": {"c": false}}),
        ] {
            let mut out = String::new();
            push_value(&mut out, &v);
            assert_eq!(out, v.to_string());
        }
        let id = 0x0123_4567_89ab_4def_8123_4567_89ab_cdefu128;
        let text = uuid_string(id);
        assert_eq!(text, "01234567-89ab-4def-8123-456789abcdef");
        assert_eq!(parse_uuid(&text), Some(id));
        assert_eq!(parse_uuid(&text.to_uppercase()), Some(id));
        assert_eq!(parse_uuid("01234567-89ab-4def-8123-456789abcde"), None);
        assert_eq!(parse_uuid("01234567+89ab-4def-8123-456789abcdef"), None);
        assert_eq!(parse_uuid("0123456g-89ab-4def-8123-456789abcdef"), None);
    }
}
