//! A one-pass scanner for the hot path of [`ServerFrame::decode`](super::ServerFrame::decode):
//! it validates a frame's JSON syntax and picks out the top-level `type`, `cursor` and `seq`
//! without building anything.
//!
//! It is a fast path, not a second parser: it accepts only what serde_json accepts and reads
//! exactly what the serde peek would read (checked by the tests below), and it gives up
//! (`None`) on anything unusual — an escaped key or `type`, a duplicate or non-integer
//! `cursor`/`seq`, a `null` `type`, nesting deeper than 64, any syntax error — so that the
//! serde path decides, with its exact errors.

use std::ops::Range;

/// What the peek reads from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peeked<'a> {
    pub(crate) kind: &'a str,
    pub(crate) cursor: Option<u64>,
    pub(crate) seq: Option<u64>,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that is `"`, `\\` or a control character, and possibly of
/// bytes after the first such byte (a borrow can spill upwards): exact for "any", and the
/// lowest set bit is exactly the first one.
#[inline]
fn special_mask(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    (below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) & HIGH
}

/// Whether any of the 8 bytes of `w` is `"`, `\\` or a control character (exact for "any").
#[inline]
pub(crate) fn word_has_special(w: u64) -> bool {
    special_mask(w) != 0
}

/// Whether `c` is `"`, `\\` or a control character: what ends a JSON string's plain run (and
/// what serde_json escapes).
#[inline]
pub(crate) fn is_special(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\'
}

/// Index of the first `"`, `\\` or control character at or after `i`, or `b.len()`.
#[inline]
fn next_special(b: &[u8], i: usize) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    let mut chunks = rest.chunks_exact(8);
    let mut at = i;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let mask = special_mask(u64::from_le_bytes(word));
        if mask != 0 {
            return at + (mask.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let tail = chunks.remainder();
    at + tail
        .iter()
        .position(|&c| is_special(c))
        .unwrap_or(tail.len())
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Skips a string whose opening quote is at `i - 1`; returns the index after the closing quote
/// and whether it held an escape.
fn skip_string(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i = next_special(b, i);
        match *b.get(i)? {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let hex = b.get(i + 2..i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                }
            }
            // Only specials stop `next_special`: this is a control character.
            _ => return None,
        }
    }
}

/// Skips a number (JSON grammar) starting at `i`.
fn skip_number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i)?,
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// Skips `"key"` `:` of an object member at `i`; returns the index of its value.
fn skip_key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (i, _) = skip_string(b, i + 1)?;
    let i = skip_ws(b, i);
    (b.get(i) == Some(&b':')).then(|| skip_ws(b, i + 1))
}

/// Skips one JSON value starting at `i` (no leading whitespace); iterative, up to 64 levels.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    // Bit n of `objects`: whether open level n is an object (else an array).
    let (mut objects, mut depth) = (0u64, 0u32);
    loop {
        // A value starts at `i`.
        let mut opened = false;
        match *b.get(i)? {
            b'"' => i = skip_string(b, i + 1)?.0,
            open @ (b'{' | b'[') => {
                if depth == 64 {
                    return None;
                }
                objects = (objects << 1) | u64::from(open == b'{');
                depth += 1;
                i = skip_ws(b, i + 1);
                opened = true;
            }
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            b'-' | b'0'..=b'9' => i = skip_number(b, i)?,
            _ => return None,
        }
        // After a value (or just inside a new container): close, or find the next value.
        loop {
            if depth == 0 {
                return Some(i);
            }
            if !opened {
                i = skip_ws(b, i);
            }
            let object = objects & 1 == 1;
            match *b.get(i)? {
                b'}' if object => {}
                b']' if !object => {}
                b',' if !opened => {
                    i = skip_ws(b, i + 1);
                    if object {
                        i = skip_key(b, i)?;
                    }
                    break;
                }
                _ if opened => {
                    if object {
                        i = skip_key(b, i)?;
                    }
                    break;
                }
                _ => return None,
            }
            // Close the container.
            i += 1;
            objects >>= 1;
            depth -= 1;
            opened = false;
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// `null` or a plain non-negative integer that fits a `u64`, read in one pass. A negative,
/// fractional or exponent number is left to serde (its error, not ours), and so is a leading
/// zero (not JSON).
fn opt_u64(b: &[u8], i: usize) -> Option<(Option<u64>, usize)> {
    let mut j = i;
    let n = match *b.get(i)? {
        b'n' => return Some((None, literal(b, i, b"null")?)),
        b'0' => {
            j += 1;
            0
        }
        b'1'..=b'9' => {
            let mut n = 0u64;
            while let Some(&d @ b'0'..=b'9') = b.get(j) {
                n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                j += 1;
            }
            n
        }
        _ => return None,
    };
    match b.get(j) {
        Some(b'.' | b'e' | b'E' | b'0'..=b'9') => None,
        _ => Some((Some(n), j)),
    }
}

/// Walks one well-formed JSON object (nothing after it but whitespace): for each member,
/// `member(key, escaped, i)` gets the range of its key as written (inside the quotes), whether
/// the key holds an escape, and the index of its value, and returns the index after the value
/// (`None` gives up). Returns the span of the members, from the first key to the end of the
/// last value.
#[inline]
fn walk_object(
    b: &[u8],
    mut member: impl FnMut(Range<usize>, bool, usize) -> Option<usize>,
) -> Option<Range<usize>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let (first, mut last) = (i, i);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (after, escaped) = skip_string(b, i + 1)?;
            let key = i + 1..after - 1;
            i = skip_ws(b, after);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = member(key, escaped, skip_ws(b, i + 1))?;
            last = i;
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(first..last)
}

/// The `type`, `cursor` and `seq` of a well-formed frame object, or `None` to let serde decide.
pub(crate) fn peek(text: &str) -> Option<Peeked<'_>> {
    let b = text.as_bytes();
    let mut kind = None;
    let (mut cursor, mut seq) = (None, None);
    let (mut seen_cursor, mut seen_seq) = (false, false);
    walk_object(b, |key, escaped, i| {
        if escaped {
            return None;
        }
        match &b[key] {
            b"type" => {
                if kind.is_some() || b.get(i) != Some(&b'"') {
                    return None;
                }
                let (after, escaped) = skip_string(b, i + 1)?;
                if escaped {
                    return None;
                }
                kind = Some((i + 1, after - 1));
                Some(after)
            }
            key @ (b"cursor" | b"seq") => {
                let (seen, value) = if key == b"cursor" {
                    (&mut seen_cursor, &mut cursor)
                } else {
                    (&mut seen_seq, &mut seq)
                };
                if std::mem::replace(seen, true) {
                    return None;
                }
                let (n, after) = opt_u64(b, i)?;
                *value = n;
                Some(after)
            }
            _ => skip_value(b, i),
        }
    })?;
    let (start, end) = kind?;
    Some(Peeked {
        kind: text.get(start..end)?,
        cursor,
        seq,
    })
}

/// The members of one well-formed JSON object (the text between its braces, whitespace
/// trimmed) and its top-level keys, each handed to `key` as written (escapes kept) with
/// whether it holds an escape. `None` if `text` is anything else (or nests deeper than 64).
pub(crate) fn object_members<'a>(
    text: &'a str,
    mut key: impl FnMut(&'a str, bool),
) -> Option<&'a str> {
    let b = text.as_bytes();
    let members = walk_object(b, |name, escaped, i| {
        // Quotes are ASCII: the range is on character boundaries.
        key(text.get(name)?, escaped);
        skip_value(b, i)
    })?;
    text.get(members)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    /// The serde peek the fast path stands in for (as in `ServerFrame::decode`).
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        #[serde(default)]
        cursor: Option<u64>,
        #[serde(default)]
        seq: Option<u64>,
    }

    /// Whenever the fast path answers, serde accepts the text and reads the same values.
    fn agrees(text: &str) -> Option<Peeked<'_>> {
        let fast = peek(text);
        if let Some(p) = fast {
            let slow: Peek = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("fast path accepted what serde rejects ({e}): {text}"));
            assert_eq!(slow.kind.as_deref(), Some(p.kind), "{text}");
            assert_eq!((slow.cursor, slow.seq), (p.cursor, p.seq), "{text}");
        }
        fast
    }

    #[test]
    fn reads_live_frames_like_serde() {
        let frames = [
            r#"{"type":"message","content":"hi","cursor":4,"seq":4}"#,
            r#" { "type" : "token_stream" , "data" : {"content":"a \"b\" \\ \n é 😀 \u00e9","n":[1,-2.5e+3,0,0.1,true,false,null,{},[]]}, "cursor" : 0 , "seq" : null } "#,
            r#"{"type":"status"}"#,
            r#"{"data":[[[]]],"type":"x","seq":18446744073709551615}"#,
            r#"{"type":"ünï","cursor":null}"#,
        ];
        for f in frames {
            assert!(agrees(f).is_some(), "fast path should take {f}");
        }
        let p = peek(r#"{"type":"m","cursor":7,"seq":8}"#);
        assert_eq!(
            p,
            Some(Peeked {
                kind: "m",
                cursor: Some(7),
                seq: Some(8)
            })
        );
    }

    #[test]
    fn strings_end_exactly_where_serde_says_around_every_word_boundary() {
        // A special byte at every position of strings of every length around the 8-byte
        // chunks the scanner reads: it must stop at the same byte serde stops at.
        for len in 0..40 {
            for pos in 0..len {
                for special in [
                    "\"", "\\\\", "\\\"", "\\u00e9", "\u{0}", "\u{1f}", "\n", "\u{7f}", "é", "😀",
                ] {
                    let body: String = (0..len)
                        .map(|i| if i == pos { special } else { "a" })
                        .collect();
                    // Mid-frame, and last (where the final partial chunk is read bytewise).
                    for frame in [
                        format!(r#"{{"type":"m","x":"{body}","seq":1}}"#),
                        format!(r#"{{"type":"m","seq":1,"x":"{body}"}}"#),
                    ] {
                        let serde_ok = serde_json::from_str::<serde_json::Value>(&frame).is_ok();
                        let fast = agrees(&frame).map(|p| p.seq);
                        assert_eq!(fast, serde_ok.then_some(Some(1)), "{frame:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_the_unusual_and_the_invalid_to_serde() {
        let texts = [
            r#"{"type":"m","cursor":1,"cursor":2}"#,
            r#"{"type":"m","type":"n"}"#,
            r#"{"type":null}"#,
            r#"{"type":"a\"b"}"#,
            r#"{"t\u0079pe":"m"}"#,
            r#"{"type":"m","seq":-1}"#,
            r#"{"type":"m","seq":1.0}"#,
            r#"{"type":"m","seq":1e2}"#,
            r#"{"type":"m","seq":01}"#,
            r#"{"type":"m","seq":18446744073709551616}"#,
            r#"{"type":"m","x":01}"#,
            r#"{"type":"m","x":1.}"#,
            r#"{"type":"m","x":.5}"#,
            r#"{"type":"m","x":"\x"}"#,
            r#"{"type":"m","x":"\u12g4"}"#,
            "{\"type\":\"m\",\"x\":\"\u{1}\"}",
            r#"{"type":"m","x":[1,]}"#,
            r#"{"type":"m","x":{"a":1,}}"#,
            r#"{"type":"m","x":{1:2}}"#,
            r#"{"type":"m",}"#,
            r#"{"type":"m"} x"#,
            r#"{"type":"m""#,
            r#"{"content":"no type"}"#,
            r#"[1,2]"#,
            r#"{"type":"m","x":tru}"#,
            r#"{"type":"m","x":nulll}"#,
        ];
        for t in texts {
            assert_eq!(agrees(t), None, "fast path must not take {t}");
        }
        let deep = format!(r#"{{"type":"m","x":{}{}}}"#, "[".repeat(70), "]".repeat(70));
        assert_eq!(agrees(&deep), None);
        let ok = format!(r#"{{"type":"m","x":{}{}}}"#, "[".repeat(60), "]".repeat(60));
        assert!(agrees(&ok).is_some());
    }

    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"",
            "\\",
            "\\\"",
            "\\u0041",
            "\\u12",
            "\\q",
            "\"type\"",
            "\"cursor\"",
            "\"seq\"",
            "\"data\"",
            "\"m\"",
            "0",
            "7",
            "-",
            "1.5",
            "e",
            "E+2",
            "01",
            "18446744073709551616",
            "null",
            "true",
            "false",
            "nul",
            "x",
            "é",
            "\u{1}",
        ])
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any value serde_json writes, as the payload of a frame (compact or pretty): taken by
        /// the fast path, read like serde.
        #[test]
        fn takes_every_well_formed_frame(data in json_value(), kind in "[a-z_]{1,12}", n in any::<u64>(), pretty in any::<bool>()) {
            let frame = serde_json::json!({"type": kind, "data": data, "cursor": n, "seq": n});
            let text = if pretty { serde_json::to_string_pretty(&frame) } else { serde_json::to_string(&frame) };
            let text = text.unwrap();
            prop_assert!(agrees(&text).is_some(), "not taken: {}", text);
        }

        /// Token soup: whatever the fast path accepts, serde accepts with the same reading.
        #[test]
        fn never_accepts_what_serde_rejects(tokens in prop::collection::vec(token(), 0..40)) {
            let text: String = tokens.concat();
            agrees(&text);
            agrees(&format!("{{\"type\":\"m\",{text}"));
            agrees(&format!("{{\"type\":\"m\",\"d\":{text}}}"));
        }

        /// Token soup: `object_members` takes exactly the objects serde takes, and the keys
        /// it reports are the object's own.
        #[test]
        fn object_members_agree_with_serde(tokens in prop::collection::vec(token(), 0..40), data in json_value()) {
            for text in [format!("{{{}", tokens.concat()), tokens.concat(), serde_json::json!({"d": data, "e": 1}).to_string()] {
                let mut keys = Vec::new();
                let members = object_members(&text, |k, _| keys.push(k.to_owned()));
                let serde = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text);
                prop_assert_eq!(members.is_some(), serde.is_ok(), "{}", text);
                if let (Some(members), Ok(map)) = (members, serde) {
                    let again: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&format!("{{{members}}}")).unwrap();
                    prop_assert_eq!(&again, &map);
                    if keys.iter().all(|k| !k.contains('\\')) {
                        prop_assert!(map.keys().all(|k| keys.contains(k)));
                    }
                }
            }
        }

        /// Mutations of a valid frame (a byte replaced, dropped or doubled).
        #[test]
        fn mutated_frames_agree(pos in 0usize..120, op in 0u8..3, with in token()) {
            let frame = r#"{"type":"token_stream","data":{"content":"a \"b\"","n":[1,-2.5e+3,null]},"event_id":"e","cursor":12,"seq":12}"#;
            let pos = pos.min(frame.len());
            let mut text = frame.to_owned();
            if frame.is_char_boundary(pos) {
                match op {
                    0 => text.insert_str(pos, with),
                    1 if pos < frame.len() => { text.remove(pos); }
                    _ => text.replace_range(pos..pos, &frame[pos..(pos + 1).min(frame.len())]),
                }
            }
            agrees(&text);
        }
    }
}
