//! Sequence checks: duplicates, gaps and their repair (v1 resume, v2 resync), holes in replays, reported loss, counters.

use super::*;

#[test]
fn live_events_move_the_cursor_and_a_v1_resume_replay_has_no_false_gap() {
    // PROTOCOL.md T§21: the Python client reports gap(expected=1, received=6) here.
    let mut h = connected();
    for s in 1..=5 {
        h.recv(live(s));
    }
    assert_eq!(h.c.cursor(), Some(5));
    let hello = drop_and_reconnect(&mut h);
    assert_eq!(hello["since"], 5);
    h.take();
    let mut ok = hello_ok("s1", 7);
    ok["resumed"] = json!(true);
    h.recv(ok); // v1: no `sequence`
    h.recv(replay(6));
    h.recv(replay(7));
    h.recv(live(8));
    assert_eq!(h.delivered(), vec![6, 7, 8]);
    assert!(!h.has(|e| matches!(e, Event::Gap { .. } | Event::Lost { .. })));
    assert!(h.has(|e| matches!(
        e,
        Event::StateChanged(State::Connected { resumed: true, .. })
    )));
    let Some(Event::Delivered(d)) = h.ev.iter().find(|e| matches!(e, Event::Delivered(_))) else {
        panic!()
    };
    assert!(d.replayed);
    assert_eq!(serde_json::from_str::<Value>(&d.payload).unwrap(), live(6));
}

#[test]
fn duplicates_and_stale_frames_are_dropped_and_counted() {
    let mut h = connected();
    for s in [1, 2, 2, 1, 3, 3] {
        h.recv(live(s));
    }
    assert_eq!(h.delivered(), vec![1, 2, 3]);
    assert_eq!(h.c.stats().duplicates, 3);
    assert!(!h.has(|e| matches!(e, Event::Gap { .. })));
}

#[test]
fn a_v1_live_gap_is_reported_and_repaired_by_resuming_from_the_last_contiguous_cursor() {
    let mut h = connected();
    h.recv(live(1));
    h.recv(live(2));
    h.recv(live(5));
    assert!(h.has(|e| *e
        == Event::Gap {
            expected: 3,
            received: 5
        }));
    assert_eq!(
        h.delivered(),
        vec![1, 2],
        "the gapped frame is not delivered"
    );
    assert!(h.tx.iter().any(|t| matches!(t, Transmit::Close { .. })));
    h.tx.clear();
    assert!(h.has(
        |e| matches!(e, Event::StateChanged(State::Reconnecting { delay, .. }) if delay.is_zero())
    ));
    h.at(Duration::ZERO);
    let hello = h.connect();
    assert_eq!(hello["since"], 2);
    h.recv(hello_ok("s1", 5));
    for s in 3..=5 {
        h.recv(replay(s));
    }
    assert_eq!(h.delivered(), vec![1, 2, 3, 4, 5]);
    assert!(!h.has(|e| matches!(e, Event::Lost { .. })));
}

#[test]
fn a_v2_live_gap_is_repaired_in_band_with_resync() {
    let mut h = H::new(config());
    h.connect();
    let mut ok = hello_ok("s1", 0);
    ok["protocol"] = json!(2);
    ok["sequence"] = json!(0);
    h.recv(ok);
    h.recv(json!({"type":"replay_end","cursor":0,"replayed":0}));
    h.recv(live(1));
    h.recv(live(3));
    h.recv(live(4)); // arrives before the repair: dropped silently, it will be resent
    assert_eq!(h.frames(), vec![json!({"type":"resync","since":1})]);
    assert_eq!(
        h.ev.iter()
            .filter(|e| matches!(e, Event::Gap { .. }))
            .count(),
        1
    );
    for s in 2..=4 {
        h.recv(replay(s));
    }
    h.recv(json!({"type":"replay_end","cursor":4,"replayed":3}));
    h.recv(live(5));
    assert_eq!(h.delivered(), vec![1, 2, 3, 4, 5]);
    assert!(!h.has(|e| matches!(e, Event::Lost { .. })));
}

/// A v2 session resumed since 1 at head `head`: the resume's `hello_ok`.
fn v2_resumed(h: &mut H, head: u64) {
    let mut ok = hello_ok("s1", head);
    ok["protocol"] = json!(2);
    ok["sequence"] = json!(1);
    ok["resumed"] = json!(true);
    h.recv(ok);
}

#[test]
fn a_v2_hole_inside_a_replay_is_repaired_with_a_resync_after_the_replay_ends() {
    // A server replays contiguously: 3 missing between 2 and 4 was lost on the way (e.g. a
    // frame-dropping proxy), not evicted. The server still holds it, so it is asked again.
    let mut h = H::new(config());
    h.connect();
    v2_resumed_fresh(&mut h);
    h.recv(live(1));
    let hello = drop_and_reconnect(&mut h);
    assert_eq!(hello["since"], 1);
    h.take();
    v2_resumed(&mut h, 5);
    h.recv(replay(2));
    h.recv(replay(4)); // 3 went missing
    h.recv(replay(5));
    assert!(
        h.frames().is_empty(),
        "no resync while the replay is still coming"
    );
    h.recv(json!({"type":"replay_end","cursor":5,"replayed":4}));
    assert_eq!(h.frames(), vec![json!({"type":"resync","since":2})]);
    h.recv(live(6)); // live before the resync's replays: it will be replayed too
    for s in 3..=6 {
        h.recv(replay(s));
    }
    h.recv(json!({"type":"replay_end","cursor":6,"replayed":4}));
    h.recv(live(7));
    assert_eq!(h.delivered(), vec![2, 3, 4, 5, 6, 7]);
    assert!(!h.has(|e| matches!(e, Event::Lost { .. })), "{:?}", h.ev);
    assert_eq!(h.c.stats().gaps, 1);
}

#[test]
fn a_v1_hole_inside_a_replay_is_repaired_by_resuming_again() {
    let mut h = connected();
    h.recv(live(1));
    drop_and_reconnect(&mut h);
    h.take();
    h.recv(hello_ok("s1", 4));
    h.recv(replay(2));
    h.recv(replay(4)); // 3 went missing
    assert!(h.tx.iter().any(|t| matches!(t, Transmit::Close { .. })));
    h.tx.clear();
    h.at(Duration::ZERO);
    let hello = h.connect();
    assert_eq!(hello["since"], 2);
    h.recv(hello_ok("s1", 4));
    h.recv(replay(3));
    h.recv(replay(4));
    assert_eq!(h.delivered(), vec![2, 3, 4]);
    assert!(!h.has(|e| matches!(e, Event::Lost { .. })));
}

#[test]
fn a_hole_inside_a_replay_that_comes_back_is_reported_lost_instead_of_looping() {
    let mut h = H::new(config());
    h.connect();
    v2_resumed_fresh(&mut h);
    drop_and_reconnect(&mut h);
    h.take();
    v2_resumed(&mut h, 4);
    h.recv(replay(2));
    h.recv(replay(4));
    h.recv(json!({"type":"replay_end","cursor":4,"replayed":3}));
    assert_eq!(h.frames(), vec![json!({"type":"resync","since":2})]);
    h.recv(replay(4)); // a broken server: the resync's replay has the same hole
    h.recv(json!({"type":"replay_end","cursor":4,"replayed":1}));
    assert!(h.has(|e| *e == Event::Lost { from: 3, to: 3 }));
    assert_eq!(h.delivered(), vec![2, 4]);
    assert!(h.frames().is_empty(), "asked once");
}

/// A new v2 session, its (empty) replay over.
fn v2_resumed_fresh(h: &mut H) {
    let mut ok = hello_ok("s1", 0);
    ok["protocol"] = json!(2);
    ok["sequence"] = json!(0);
    h.recv(ok);
    h.recv(json!({"type":"replay_end","cursor":0,"replayed":0}));
}

#[test]
fn a_gap_the_repair_cannot_fill_is_reported_lost_once_and_never_loops() {
    let mut h = connected();
    h.recv(live(1));
    h.recv(live(4)); // gap 2..3, repair by resume
    h.at(Duration::ZERO);
    h.connect();
    h.recv(hello_ok("s1", 4));
    h.recv(replay(4)); // the server no longer holds 2..3
    assert!(h.has(|e| *e == Event::Lost { from: 2, to: 3 }));
    assert_eq!(h.delivered(), vec![1, 4]);
    h.recv(live(7)); // a new gap at a new position is repaired again...
    assert!(h.has(|e| *e
        == Event::Gap {
            expected: 5,
            received: 7
        }));
    h.at(Duration::ZERO);
    h.connect();
    h.recv(hello_ok("s1", 7));
    h.recv(live(8)); // ...and when nothing is replayed, the loss shows at the first live frame
    h.recv(live(7)); // (stale now)
    assert!(h.has(|e| *e == Event::Lost { from: 5, to: 7 }));
    assert_eq!(h.delivered(), vec![1, 4, 8]);
    assert_eq!(h.c.stats().lost, 5);
}

#[test]
fn a_repeated_gap_at_the_same_position_is_reported_lost_instead_of_looping() {
    let mut cfg = config();
    cfg.versions = crate::version::VersionRange::V1_ONLY;
    let mut h = H::new(cfg);
    h.connect();
    h.recv(hello_ok("s1", 0));
    h.recv(live(1));
    h.recv(live(3));
    h.at(Duration::ZERO);
    h.connect();
    h.recv(hello_ok("s1", 1)); // a broken server: says head 1, keeps sending 3
    h.recv(live(3));
    assert!(h.has(|e| *e == Event::Lost { from: 2, to: 2 }));
    assert_eq!(h.delivered(), vec![1, 3]);
}

#[test]
fn a_resume_older_than_the_server_window_reports_the_loss() {
    // T§11: 120 events, resume since 5, only 21..120 retained; v1 hello says nothing.
    let mut h = connected();
    for s in 1..=5 {
        h.recv(live(s));
    }
    drop_and_reconnect(&mut h);
    h.take();
    h.recv(hello_ok("s1", 120));
    for s in 21..=120 {
        h.recv(replay(s));
    }
    assert!(h.has(|e| *e == Event::Lost { from: 6, to: 20 }));
    assert_eq!(h.delivered().len(), 100);
    assert_eq!(h.c.cursor(), Some(120));
}

#[test]
fn sequences_beyond_the_json_safe_range_are_malformed_not_delivered() {
    let mut h = connected();
    h.recv(live(MAX_SEQUENCE + 1));
    h.recv(live(u64::MAX));
    h.recv(live(u64::MAX));
    assert!(h.delivered().is_empty());
    assert_eq!(h.c.stats().bad_frames, 3);
    h.recv(live(1));
    assert_eq!(h.delivered(), vec![1]);
}

#[test]
fn a_peer_whose_cursor_lags_its_seq_never_gets_a_redelivery() {
    let mut h = connected();
    h.recv(json!({"type":"message","cursor":0,"seq":1}));
    drop_and_reconnect(&mut h);
    let mut ok = hello_ok("s1", 1);
    ok["resumed"] = json!(true);
    h.recv(ok);
    h.recv(replay(1));
    assert_eq!(h.delivered(), vec![1]);
}

#[test]
fn lost_counts_saturate_across_numberings() {
    let mut cfg = config();
    cfg.repair_gaps = false;
    let mut h = H::new(cfg);
    h.connect();
    h.recv(hello_ok("s0", 0));
    h.recv(live(MAX_SEQUENCE - 1));
    drop_and_reconnect(&mut h);
    h.recv(hello_ok("s1", 0));
    h.recv(live(MAX_SEQUENCE - 1));
    assert_eq!(h.c.stats().lost, 2 * (MAX_SEQUENCE - 2));
}

#[test]
fn the_duplicate_count_survives_reconnects() {
    let mut h = connected();
    h.recv(live(1));
    h.recv(live(1));
    drop_and_reconnect(&mut h);
    h.recv(hello_ok("s1", 1));
    h.recv(replay(1));
    assert_eq!(h.c.stats().duplicates, 2);
}
