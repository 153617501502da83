use serde_json::{json, Value};

use super::*;

const FRAMES: &str = include_str!("../../tests/fixtures/praisonai-transcript-frames.jsonl");

/// Objects are equivalent when every key has an equal value, a `null` value counting as absent
/// (the typed model keeps optional fields as `Option`).
fn equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                equivalent(va, vb)
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equivalent(a, b))
        }
        _ => a == b,
    }
}

/// Frames in the transcript that the reference server chokes on or coerces; tether refuses them
/// with an error naming the field.
fn expected_rejection(text: &str) -> Option<&'static str> {
    let v: Value = serde_json::from_str(text).unwrap();
    let bad = |k: &str| v.get(k).is_some_and(|x| !x.is_null() && !x.is_u64());
    for field in [
        "protocol_min",
        "protocol_max",
        "min_version",
        "max_version",
        "since",
    ] {
        if bad(field) {
            return Some(match field {
                "protocol_min" => "protocol_min",
                "protocol_max" => "protocol_max",
                "min_version" => "min_version",
                "max_version" => "max_version",
                _ => "since",
            });
        }
    }
    None
}

#[test]
fn every_transcript_frame_decodes_and_reencodes_to_an_equivalent_object() {
    let (mut server_frames, mut client_frames, mut rejected) = (0, 0, 0);
    for line in FRAMES.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        let text = rec["text"].as_str().unwrap();
        let mut original: Value = serde_json::from_str(text).unwrap();
        let reencoded = if rec["dir"] == "S->C" {
            server_frames += 1;
            match ServerFrame::decode(text) {
                Ok(frame) => frame.encode(),
                // The reference server echoes a client's boolean versions (`"protocol":true`);
                // tether never offers booleans, and refuses the echo by name.
                Err(err) if original["protocol"] == json!(true) => {
                    assert_eq!(err.field(), Some("protocol"), "{text}");
                    rejected += 1;
                    continue;
                }
                Err(err) => panic!("{text}: {err}"),
            }
        } else {
            client_frames += 1;
            match (ClientFrame::decode(text), expected_rejection(text)) {
                (Ok(frame), None) => frame.encode(),
                (Err(err), Some(field)) => {
                    assert_eq!(err.field(), Some(field), "{text}: {err}");
                    rejected += 1;
                    continue;
                }
                (got, want) => panic!("{text}: got {got:?}, expected rejection of {want:?}"),
            }
        };
        if original.get("type").is_none_or(Value::is_null) {
            original["type"] = json!("message");
        }
        let back: Value = serde_json::from_str(&reencoded).unwrap();
        assert!(
            equivalent(&original, &back),
            "not equivalent:\n  in:  {text}\n  out: {reencoded}"
        );
    }
    assert!(
        server_frames > 100 && client_frames > 40,
        "fixture too small"
    );
    assert!(
        rejected >= 7,
        "the transcript's malformed version fields must be refused"
    );
}

#[test]
fn live_tracked_frames_stay_raw_and_expose_cursor_and_seq() {
    let text = r#"{"type":"token_stream","data":{"content":"one "},"cursor":15,"seq":15}"#;
    let ServerFrame::Event(ev) = ServerFrame::decode(text).unwrap() else {
        panic!("not an event")
    };
    assert_eq!(ev.kind, "token_stream");
    assert_eq!(
        (ev.cursor, ev.seq, ev.sequence()),
        (Some(15), Some(15), Some(15))
    );
    assert_eq!(&*ev.text, text);
    assert_eq!(ServerFrame::Event(ev).encode(), text);
}

#[test]
fn a_tracked_error_is_an_event_and_an_untracked_error_is_typed() {
    let tracked = r#"{"type":"error","message":"m","cursor":7,"seq":7}"#;
    assert!(
        matches!(ServerFrame::decode(tracked).unwrap(), ServerFrame::Event(e) if e.seq == Some(7))
    );
    let untracked =
        r#"{"type":"error","code":"version_unsupported","message":"m","server_min_version":1}"#;
    let ServerFrame::Error(e) = ServerFrame::decode(untracked).unwrap() else {
        panic!("not an error")
    };
    assert_eq!(e.code, Some(ConnectErrorCode::VersionUnsupported));
    assert_eq!(e.extra["server_min_version"], json!(1));
}

#[test]
fn replay_keeps_the_inner_frame_raw_and_both_path_shapes_decode() {
    let hello_path = r#"{"type":"replay","event":{"type":"message","data":{"type":"message","content":"x","cursor":4,"seq":4},"event_id":"e","timestamp":1.5,"source":"gateway","target":"c","sequence":4}}"#;
    let ServerFrame::Replay(r) = ServerFrame::decode(hello_path).unwrap() else {
        panic!()
    };
    assert_eq!(r.event.sequence, Some(4));
    assert_eq!(r.seq, None);
    assert_eq!(
        r.event.data.get(),
        r#"{"type":"message","content":"x","cursor":4,"seq":4}"#
    );
    let join_path = r#"{"type":"replay","event":{"type":"m","data":{},"source":null,"target":null,"sequence":9},"seq":9}"#;
    let ServerFrame::Replay(r) = ServerFrame::decode(join_path).unwrap() else {
        panic!()
    };
    assert_eq!(r.seq, Some(9));
}

#[test]
fn unknown_types_and_extra_fields_are_kept() {
    let text =
        r#"{"type":"hello_ok","protocol":2,"session_id":"s","cursor":3,"shiny":{"new":true}}"#;
    let frame = ServerFrame::decode(text).unwrap();
    let ServerFrame::HelloOk(ok) = &frame else {
        panic!()
    };
    assert_eq!(ok.extra["shiny"], json!({"new": true}));
    let back: Value = serde_json::from_str(&frame.encode()).unwrap();
    assert_eq!(back["shiny"], json!({"new": true}));

    let unknown = r#"{"type":"telemetry","x":1}"#;
    assert!(
        matches!(ServerFrame::decode(unknown).unwrap(), ServerFrame::Event(e) if e.kind == "telemetry" && e.sequence().is_none())
    );
    assert!(
        matches!(ClientFrame::decode(unknown).unwrap(), ClientFrame::Other(e) if e.kind == "telemetry")
    );
}

#[test]
fn ill_typed_and_missing_fields_name_the_field() {
    let cases = [
        (
            r#"{"type":"hello_ok","protocol":"1","session_id":"s"}"#,
            "protocol",
        ),
        (r#"{"type":"hello_ok","protocol":1}"#, "session_id"),
        (r#"{"type":"hello_error","message":"m"}"#, "code"),
        (r#"{"type":"replay","event":{"type":"m"}}"#, "event.data"),
        (
            r#"{"type":"replay","event":{"type":"m","data":{},"sequence":-1}}"#,
            "event.sequence",
        ),
        (r#"{"type":"message","cursor":1.5}"#, "cursor"),
        (r#"{"type":"message","seq":"3"}"#, "seq"),
        (r#"{"type":7}"#, "type"),
        (r#"{"content":"no type"}"#, "type"),
        (
            r#"{"type":"joined","session_id":"s","policy":1,"cursor":-4}"#,
            "cursor",
        ),
    ];
    for (text, field) in cases {
        let err = ServerFrame::decode(text).unwrap_err();
        assert_eq!(err.field(), Some(field), "{text}: {err}");
    }
    let client_cases = [
        (r#"{"type":"hello","protocol_min":true}"#, "protocol_min"),
        (r#"{"type":"hello","protocol_max":-1}"#, "protocol_max"),
        (r#"{"type":"hello","protocol":{"min":"1"}}"#, "protocol.min"),
        (
            r#"{"type":"hello","capabilities":"streaming"}"#,
            "capabilities",
        ),
        (r#"{"type":"join","min_version":1.9}"#, "min_version"),
        (r#"{"type":"message","request_id":5}"#, "request_id"),
    ];
    for (text, field) in client_cases {
        let err = ClientFrame::decode(text).unwrap_err();
        assert_eq!(err.field(), Some(field), "{text}: {err}");
    }
}

#[test]
fn garbage_is_a_typed_error_never_a_panic() {
    assert!(matches!(
        ServerFrame::decode("{not json"),
        Err(DecodeError::Syntax(_))
    ));
    assert!(matches!(
        ServerFrame::decode(""),
        Err(DecodeError::Syntax(_))
    ));
    assert!(matches!(
        ServerFrame::decode("[1,2,3]"),
        Err(DecodeError::NotObject)
    ));
    assert!(matches!(
        ClientFrame::decode("5"),
        Err(DecodeError::NotObject)
    ));
    assert!(matches!(
        ClientFrame::decode(r#"{"type":"ping"} x"#),
        Err(DecodeError::Syntax(_))
    ));
    assert!(matches!(
        ServerFrame::decode(r#"{"type":"message","cursor":1,"cursor":2}"#),
        Err(DecodeError::Field { .. })
    ));
}

#[test]
fn hello_range_follows_the_reference_defaulting() {
    let h = |t: &str| match ClientFrame::decode(t).unwrap() {
        ClientFrame::Hello(h) => h,
        _ => panic!(),
    };
    assert_eq!(h(r#"{"type":"hello"}"#).offered_range(), (1, 1));
    assert_eq!(
        h(r#"{"type":"hello","protocol_max":3}"#).offered_range(),
        (1, 3)
    );
    assert_eq!(
        h(r#"{"type":"hello","protocol":{"min":2,"max":4}}"#).offered_range(),
        (2, 4)
    );
    assert_eq!(
        h(r#"{"type":"hello","protocol_min":2,"protocol":{"min":5,"max":6}}"#).offered_range(),
        (2, 1)
    );
    assert_eq!(
        h(r#"{"type":"hello","caps":["a"]}"#).offered_capabilities(),
        ["a"]
    );
}
