//! Client requests and publishing: handed out once, duplicates, refused content.

use super::*;

#[test]
fn requests_are_handed_out_once_and_duplicates_carry_the_original_outcome() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    events(&mut s);
    s.handle_text(
        t0 + secs(1),
        C1,
        r#"{"type": "message", "content": "hi", "request_id": "req-1"}"#,
    );
    let out = drain(&mut s, t0 + secs(1));
    let texts = texts_of(&out, C1);
    assert_eq!(
        texts[0],
        format!(
            r#"{{"type":"response","status":"accepted","content":"Started processing.","session_id":"{sid}","request_id":"req-1","cursor":1,"seq":1}}"#
        )
    );
    let ev = events(&mut s);
    let reqs: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, ServerEvent::Request { .. }))
        .collect();
    assert_eq!(reqs.len(), 1);
    assert!(
        matches!(reqs[0], ServerEvent::Request { request_id, content, .. } if request_id == "req-1" && content == "hi")
    );

    // Resend before the answer: duplicate, no content, no second Request.
    for _ in 0..20 {
        s.handle_text(
            t0 + secs(2),
            C1,
            r#"{"type":"message","content":"hi","request_id":"req-1"}"#,
        );
    }
    let out = drain(&mut s, t0 + secs(2));
    assert_eq!(close_of(&out, C1), None, "duplicates never count as abuse");
    let f = frames_of(&out, C1);
    assert_eq!(f.len(), 20);
    assert_eq!(f[0]["status"], "duplicate");
    assert!(f[0].get("content").is_none());
    assert!(events(&mut s)
        .iter()
        .all(|e| !matches!(e, ServerEvent::Request { .. })));

    let n = s
        .respond(t0 + secs(3), &sid, "req-1", Outcome::ok("echo: hi"))
        .unwrap();
    let out = drain(&mut s, t0 + secs(3));
    let t = texts_of(&out, C1);
    assert_eq!(
        t[0],
        format!(
            r#"{{"type":"response","status":"final","content":"echo: hi","outcome":{{"status":"ok"}},"session_id":"{sid}","request_id":"req-1","cursor":{n},"seq":{n}}}"#
        )
    );
    assert_eq!(
        s.respond(t0 + secs(3), &sid, "req-1", Outcome::ok("x")),
        Err(CommandError::AlreadyAnswered("req-1".into()))
    );
    s.handle_text(
        t0 + secs(4),
        C1,
        r#"{"type":"message","content":"hi","request_id":"req-1"}"#,
    );
    let f = frames_of(&drain(&mut s, t0 + secs(4)), C1);
    assert_eq!(
        (
            f[0]["status"].clone(),
            f[0]["content"].clone(),
            f[0]["outcome"]["status"].clone()
        ),
        (json!("duplicate"), json!("echo: hi"), json!("ok"))
    );

    // No request_id: a generated one.
    s.handle_text(t0 + secs(5), C1, r#"{"content":"no id"}"#);
    drain(&mut s, t0 + secs(5));
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, ServerEvent::Request { request_id, .. } if request_id.len() == 32)));
}

#[test]
fn empty_content_gets_an_untracked_typed_error_and_consumes_no_sequence() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    for bad in [
        r#"{"type":"message","content":""}"#,
        r#"{"type":"message"}"#,
        r#"{"type":"message","content":null}"#,
    ] {
        s.handle_text(t0, C1, bad);
        let f = frames_of(&drain(&mut s, t0), C1);
        assert_eq!(
            f,
            [
                json!({"type":"error","code":"invalid_value","message":"message content must be non-empty","field":"content"})
            ]
        );
    }
    s.handle_text(t0, C1, r#"{"type":"message","content":"x","request_id":5}"#);
    let f = frames_of(&drain(&mut s, t0), C1);
    assert_eq!(
        (f[0]["code"].clone(), f[0]["field"].clone()),
        (json!("invalid_value"), json!("request_id"))
    );
    assert_eq!(s.session_head(&sid), Some(0));
}

#[test]
fn publish_refuses_reserved_kinds_and_fields() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    assert_eq!(
        s.publish(t0, &sid, "replay", &[]),
        Err(CommandError::ReservedKind("replay".into()))
    );
    assert_eq!(
        s.publish(t0, &sid, "m", &[("seq", json!(1))]),
        Err(CommandError::ReservedField("seq".into()))
    );
    assert_eq!(
        s.broadcast(t0, "broadcast", &json!({"text":"hello everyone"})),
        1
    );
    let t = texts_of(&drain(&mut s, t0), C1);
    assert_eq!(
        keys(&t[0]),
        ["type", "data", "event_id", "timestamp", "source", "target"]
    );
}
