//! The handshake: what the client offers, adopts and reports (new sessions, resets, legacy join, versions, epochs, the resume state).

use super::*;

#[test]
fn first_hello_offers_the_range_and_capabilities_and_no_session() {
    let mut h = H::new(config());
    assert_eq!(h.tx, vec![Transmit::Open]);
    assert!(h.has(|e| matches!(e, Event::StateChanged(State::Connecting { attempt: 0 }))));
    let hello = h.connect();
    assert_eq!(
        hello,
        json!({"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2,
               "capabilities":["streaming","ack"]})
    );
}

#[test]
fn hello_ok_is_adopted_and_resume_sends_session_and_since_zero() {
    let mut h = connected();
    assert!(h.c.is_connected());
    assert_eq!(h.c.session_id(), Some("s1"));
    assert_eq!(h.c.cursor(), Some(0));
    let hello = drop_and_reconnect(&mut h);
    assert_eq!(hello["session_id"], "s1");
    assert_eq!(hello["since"], 0, "cursor 0 is a valid cursor");
}

#[test]
fn a_server_head_behind_our_cursor_is_a_reset_not_ignored() {
    let mut h = connected();
    for s in 1..=9 {
        h.recv(live(s));
    }
    drop_and_reconnect(&mut h);
    h.take();
    h.recv(hello_ok("s1", 2));
    assert!(h.has(|e| *e == Event::ServerReset { cursor: 9, head: 2 }));
    h.recv(live(3));
    assert_eq!(h.delivered(), vec![3]);
}

#[test]
fn a_new_session_instead_of_the_resumed_one_is_reported() {
    let mut h = connected();
    h.recv(live(1));
    drop_and_reconnect(&mut h);
    h.take();
    h.recv(hello_ok("s2", 0));
    assert!(h.has(|e| matches!(e, Event::SessionReplaced { previous, current } if previous == "s1" && current == "s2")));
    h.recv(live(1));
    assert_eq!(h.delivered(), vec![1]);
}

#[test]
fn a_bare_joined_answer_is_accepted_and_resync_required_reports_loss() {
    let mut h = connected();
    for s in 1..=5 {
        h.recv(live(s));
    }
    drop_and_reconnect(&mut h);
    h.take();
    h.recv(
        json!({"type":"joined","session_id":"s1","agent_id":"echo","resumed":true,"cursor":120,
                  "oldest_cursor":21,"resync_required":true,"sequence":20,"protocol_version":1}),
    );
    assert!(h.has(|e| matches!(
        e,
        Event::StateChanged(State::Connected { legacy: true, .. })
    )));
    h.recv(json!({"type":"snapshot","state":{"event_cursor":120}}));
    assert!(h.has(|e| matches!(e, Event::Snapshot(_))));
    assert!(h.has(|e| *e == Event::Lost { from: 6, to: 120 }));
    h.recv(live(121));
    assert_eq!(h.delivered(), vec![121]);
}

#[test]
fn legacy_join_is_tried_only_when_the_server_does_not_understand_hello() {
    let mut h = H::new(config());
    h.connect();
    h.recv(json!({"type":"error","message":"Unknown message type"}));
    let f = h.frames();
    assert_eq!(f[0]["type"], "join");
    assert_eq!(
        (f[0]["min_version"].clone(), f[0]["max_version"].clone()),
        (json!(1), json!(2))
    );
    h.recv(json!({"type":"joined","session_id":"s1","cursor":0,"sequence":0,"protocol_version":1}));
    assert!(h.c.is_connected());

    let mut h = H::new(config());
    h.connect();
    h.recv(json!({"type":"error","code":"insufficient_scope","message":"insufficient scope"}));
    assert!(
        h.frames().is_empty(),
        "a coded error is not a reason to try join"
    );
    assert!(!h.c.is_connected());
}

#[test]
fn resume_state_round_trips_through_a_process_restart() {
    let mut h = connected();
    for s in 1..=3 {
        h.recv(live(s));
    }
    h.c.send_with_id(h.now, "q", "pending").unwrap();
    let saved = serde_json::to_string(&h.c.resume_state()).unwrap();
    let state: ResumeState = serde_json::from_str(&saved).unwrap();
    assert_eq!(state.cursor, Some(3));
    assert_eq!(state.sequence, Some(3));
    assert_eq!(
        state.outbox,
        vec![PendingRequest {
            request_id: "q".into(),
            content: json!("pending")
        }]
    );

    let mut h = H::with_state(config(), state, t0());
    let hello = h.connect();
    assert_eq!(
        (hello["session_id"].clone(), hello["since"].clone()),
        (json!("s1"), json!(3))
    );
    h.recv(hello_ok("s1", 4));
    assert_eq!(h.frames()[0]["request_id"], "q");
    h.recv(replay(4));
    assert_eq!(h.delivered(), vec![4]);
}

#[test]
fn a_version_outside_the_offered_range_is_a_protocol_violation() {
    let mut h = H::new(config());
    h.connect();
    let mut ok = hello_ok("s1", 0);
    ok["protocol"] = json!(3);
    h.recv(ok);
    assert!(h.has(|e| matches!(e, Event::Closed(ClosedReason::ProtocolViolation(_)))));
}

#[test]
fn a_rewind_to_an_older_epoch_is_a_reset_and_the_epoch_is_sent_back() {
    // Found by the simulator: after a lossy restore the server reuses sequence numbers.
    let mut h = H::new(config());
    h.connect();
    let mut ok = hello_ok("s1", 0);
    ok["protocol"] = json!(2);
    ok["sequence"] = json!(0);
    ok["epoch"] = json!(7);
    h.recv(ok);
    for s in 1..=5 {
        h.recv(live(s));
    }
    let hello = drop_and_reconnect(&mut h);
    assert_eq!(
        (hello["since"].clone(), hello["epoch"].clone()),
        (json!(5), json!(7))
    );
    h.take();
    let mut ok = hello_ok("s1", 5);
    ok["protocol"] = json!(2);
    ok["sequence"] = json!(3); // rewound: 4 and 5 are new events
    ok["epoch"] = json!(8);
    h.recv(ok);
    assert!(h.has(|e| *e == Event::ServerReset { cursor: 5, head: 3 }));
    h.recv(replay(4));
    h.recv(replay(5));
    assert_eq!(h.delivered(), vec![4, 5]);
    assert_eq!(h.c.resume_state().epoch, Some(8));
}
