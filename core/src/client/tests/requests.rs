//! Requests and other frames: the outbox, resends, typed send errors, bad frames, notices.

use super::*;

#[test]
fn the_outbox_queues_while_down_flushes_in_order_and_resolves_outcomes() {
    let mut h = H::new(config());
    let a = h.c.send_with_id(h.now, "a", "first").unwrap();
    let b = h.c.send_with_id(h.now, "b", "second").unwrap();
    assert!(
        h.frames().is_empty(),
        "nothing is written before the handshake"
    );
    h.connect();
    h.recv(hello_ok("s1", 0));
    let f = h.frames();
    assert_eq!(
        f.iter()
            .map(|f| f["request_id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(a), json!(b)]
    );
    let resp = |seq: u64, status: &str, id: Option<&str>| {
        let mut v =
            json!({"type":"response","status":status,"session_id":"s1","cursor":seq,"seq":seq});
        if let Some(id) = id {
            v["request_id"] = json!(id);
        }
        if status == "final" {
            v["content"] = json!("echo");
            v["outcome"] = json!({"status":"ok"});
        }
        v
    };
    h.recv(resp(1, "accepted", Some("a")));
    h.recv(resp(2, "accepted", Some("b")));
    h.recv(resp(3, "final", None)); // PraisonAI finals carry no request_id: FIFO
    h.recv(resp(4, "duplicate", Some("b")));
    let updates: Vec<_> =
        h.ev.iter()
            .filter_map(|e| match e {
                Event::Request(u) => Some((u.request_id.clone(), u.status.clone())),
                _ => None,
            })
            .collect();
    assert_eq!(
        updates,
        vec![
            ("a".into(), RequestStatus::Accepted),
            ("b".into(), RequestStatus::Accepted),
            (
                "a".into(),
                RequestStatus::Final {
                    content: Some(json!("echo").into()),
                    outcome: Some(json!({"status":"ok"}))
                }
            ),
            (
                "b".into(),
                RequestStatus::Duplicate {
                    content: None,
                    outcome: None
                }
            ),
        ]
    );
    assert!(h.c.resume_state().outbox.is_empty());
}

#[test]
fn unanswered_requests_are_resent_after_a_resume_and_ambiguous_when_the_session_is_lost() {
    let mut h = connected();
    h.c.send_with_id(h.now, "r1", "hi").unwrap();
    assert_eq!(h.frames().len(), 1);
    drop_and_reconnect(&mut h);
    h.recv(hello_ok("s1", 0));
    let f = h.frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["request_id"], "r1", "same id: the server deduplicates");

    drop_and_reconnect(&mut h);
    h.take();
    h.recv(hello_ok("s9", 0));
    assert!(h.has(|e| matches!(e, Event::Request(u) if u.request_id == "r1" && u.status == RequestStatus::Ambiguous)));
    assert!(h.frames().is_empty());
}

#[test]
fn send_errors_are_typed() {
    let mut cfg = config();
    cfg.outbox_capacity = 1;
    let mut h = H::new(cfg);
    assert_eq!(h.c.send(h.now, ""), Err(SendError::EmptyContent));
    h.c.send_with_id(h.now, "x", "one").unwrap();
    assert_eq!(
        h.c.send_with_id(h.now, "y", "two"),
        Err(SendError::OutboxFull { capacity: 1 })
    );
    h.c.disconnect(h.now);
    assert_eq!(h.c.send(h.now, "late"), Err(SendError::Closed));
}

#[test]
fn bad_frames_are_reported_and_the_connection_goes_on() {
    let mut h = connected();
    h.c.handle_text(h.now, "{not json");
    h.c.handle_text(h.now, "[1,2,3]");
    h.c.handle_binary(h.now);
    h.recv(json!({"type":"message","cursor":"x"}));
    h.recv(live(1));
    assert_eq!(h.c.stats().bad_frames, 4);
    assert_eq!(h.delivered(), vec![1]);
    assert!(h.c.is_connected());
}

#[test]
fn untracked_frames_pass_through_as_notices() {
    let mut h = connected();
    h.recv(json!({"type":"status","source":"echo","message":"Thinking..."}));
    h.recv(json!({"type":"broadcast","data":{"text":"hi"},"event_id":"e","timestamp":1.0,"source":"x","target":null}));
    h.recv(json!({"type":"error","message":"Not joined to any session"}));
    assert_eq!(
        h.ev.iter()
            .filter(|e| matches!(e, Event::Notice(_)))
            .count(),
        2
    );
    assert!(h.has(|e| matches!(e, Event::ServerError(_))));
    assert!(h.delivered().is_empty());
}

#[test]
fn a_request_whose_final_was_lost_is_resent_and_resolves() {
    // Found by the simulator: the final was evicted while the client was away.
    let mut h = connected();
    h.c.send_with_id(h.now, "q", "hi").unwrap();
    h.frames();
    h.recv(json!({"type":"response","status":"accepted","session_id":"s1","request_id":"q","cursor":1,"seq":1}));
    drop_and_reconnect(&mut h);
    h.take();
    h.recv(hello_ok("s1", 3));
    h.recv(replay(3)); // 2 (the final) is gone
    assert!(h.has(|e| *e == Event::Lost { from: 2, to: 2 }));
    let resent = h.frames();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0]["request_id"], "q");
    h.recv(
        json!({"type":"response","status":"duplicate","session_id":"s1","request_id":"q",
                  "content":"echo: hi","outcome":{"status":"ok"},"cursor":4,"seq":4}),
    );
    assert!(h.has(|e| matches!(e, Event::Request(u) if u.request_id == "q" && matches!(u.status, RequestStatus::Duplicate { outcome: Some(_), .. }))));
}
