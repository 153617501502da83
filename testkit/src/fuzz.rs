//! Fuzz bodies, compiled by every workspace build so they never rot.
//!
//! Each body takes raw fuzzer bytes and panics only on a real bug: a broken invariant of the
//! codec, of a machine or of the simulated system. The `fuzz/` crate (cargo-fuzz, nightly) has
//! one target per body; `testkit/tests/fuzz_corpus.rs` runs every body over the committed seed
//! corpora (`fuzz/corpus/<target>/`) and a few thousand deterministic pseudo-random inputs on
//! stable.
//!
//! * [`decode`]: the wire codec on arbitrary text; whatever decodes re-encodes stably, and
//!   producer fields are checked alike by `EventBatch::push` and `EventBatch::push_json`.
//! * [`client_at`]: the client machine driven by a [`Script`] of inputs with fuzzed time steps,
//!   checking the delivery, termination and drive-contract invariants after every input.
//! * [`server_at`]: the server machine driven by a [`ServerScript`] (several connections,
//!   handshakes, requests, flow control, timers, application commands, snapshot and restore),
//!   checking the close, numbering, dedup and memory-bound invariants after every step.
//! * [`sim_at`]: the simulator on a seed plus a fault schedule ([`SimScript`]), with all of
//!   its invariants checked.
//!
//! ```
//! use tether_testkit::fuzz::{self, Input, Num, Script, ServerText};
//! # #[allow(clippy::disallowed_methods)]
//! let origin = std::time::Instant::now(); // the caller's clock; the bodies never read one
//! let script = Script::new(vec![
//!     Input::Connected,
//!     Input::Text(ServerText::hello_ok(1, 0)),
//!     Input::Text(ServerText::live(Num::NEXT)),
//! ]);
//! let summary = fuzz::client_at(origin, &script.to_bytes());
//! assert_eq!((summary.connections, summary.delivered), (1, 1));
//! fuzz::decode(br#"{"type":"ping"}"#);
//! ```

mod client;
mod script;
mod server;
mod server_script;
mod sim;

pub use client::{client_at, run, ClientSummary};
pub use script::{
    Content, ErrorKind, Garbage, Input, LiveKind, Num, ReplayPath, ResumeSeed, Script, ServerText,
    Setup, Shape, TimeUnit,
};
pub use server::{run_server, server_at, ServerSummary};
pub use server_script::{
    Agent, ClientGarbage, ClientText, MsgContent, Publish, ReqId, RestoreFrom, SentBytes,
    ServerScript, ServerSetup, SessionRef, Since, Step, Token, Ver, Versions, CONNS,
};
pub use sim::{sim_at, SimEntry, SimScript, MAX_ENTRIES};

use serde_json::Value;

use tether_core::wire::{ClientFrame, DecodeError, EventBatch, ServerFrame};

/// Fuzz body of the wire codec: `data` (lossily made UTF-8) is decoded as a server frame and as a
/// client frame. Decoding must never panic; a frame that decodes must re-encode to text that
/// decodes to the same kind of frame and re-encodes to the same JSON again.
///
/// "The same JSON" is exact text equality, except that floats may differ in their last bits:
/// serde_json's default float parser is best-effort (its `float_roundtrip` feature is off), so
/// the shortest representation of a parsed float can parse back to a neighbouring float.
pub fn decode(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match ServerFrame::decode(&text) {
        Ok(frame) => {
            if let ServerFrame::Event(ev) = &frame {
                let _ = ev.parse::<tether_core::wire::ResponseFrame>();
                let _ = (ev.sequence(), ev.resume_cursor());
            }
            round_trip(&text, frame, ServerFrame::decode, ServerFrame::encode);
        }
        Err(err) => exercise(&err),
    }
    match ClientFrame::decode(&text) {
        Ok(frame) => round_trip(&text, frame, ClientFrame::decode, ClientFrame::encode),
        Err(err) => exercise(&err),
    }
    let _ = EventBatch::new().push_json(&text);
    if let Ok(fields) = serde_json::from_str::<Value>(&text) {
        event_fields(&fields);
    }
}

/// A producer's fields: `EventBatch::push` (keys watched while serde_json writes them) decides
/// as `push_json` (the written text scanned afterwards) does, and keeps the same members.
fn event_fields(fields: &Value) {
    let text = fields.to_string();
    let (mut watched, mut scanned) = (EventBatch::new(), EventBatch::new());
    let (a, b) = (watched.push(fields), scanned.push_json(&text));
    assert_eq!(a, b, "push and push_json disagree on {text:?}");
    assert!(
        watched.iter().eq(scanned.iter()),
        "push and push_json keep different members of {text:?}"
    );
}

fn exercise(err: &DecodeError) {
    let _ = (err.to_string(), err.field());
}

fn round_trip<F: std::fmt::Debug>(
    input: &str,
    first: F,
    decode: impl Fn(&str) -> Result<F, DecodeError>,
    encode: impl Fn(&F) -> String,
) {
    let once = encode(&first);
    let second = decode(&once).unwrap_or_else(|err| {
        panic!("re-encoded frame does not decode: {err}\n input: {input:?}\n encoded: {once:?}")
    });
    assert_eq!(
        std::mem::discriminant(&first),
        std::mem::discriminant(&second),
        "re-encoding changed the kind of frame\n input: {input:?}\n encoded: {once:?}\n \
         first: {first:?}\n second: {second:?}"
    );
    let twice = encode(&second);
    if once != twice {
        let parse = |s: &str| serde_json::from_str::<Value>(s).ok();
        let same = match (parse(&once), parse(&twice)) {
            (Some(a), Some(b)) => same_json(&a, &b),
            _ => false,
        };
        assert!(
            same,
            "encode(decode(encode(x))) != encode(x)\n input: {input:?}\n once: {once:?}\n \
             twice: {twice:?}"
        );
    }
}

/// JSON equality with floats compared to within a few ulps.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => (p - q).abs() <= p.abs().max(q.abs()) * 1e-14,
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_compare_within_a_few_ulps_and_nothing_else_is_loose() {
        let a: Value = serde_json::from_str(r#"{"t":[1.0000000000000002,1]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"t":[1.0,1]}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"t":[1.0,2]}"#).unwrap();
        let d: Value = serde_json::from_str(r#"{"t":[1.001,1]}"#).unwrap();
        assert!(same_json(&a, &b));
        assert!(!same_json(&b, &c));
        assert!(!same_json(&b, &d));
    }

    #[test]
    fn decode_body_takes_frames_garbage_and_invalid_utf8() {
        decode(br#"{"type":"hello_ok","protocol":1,"session_id":"s","x":[1.5e300,null]}"#);
        decode(br#"{"type":"replay","event":{"type":"m","data":{"seq":1},"source":null,"target":null}}"#);
        decode(br#"{"content":"no type is a message"}"#);
        decode(b"\xff{\"type\":");
        decode(b"");
    }
}
