//! The recovery window in time and bytes, and readers left behind by it.

use super::*;

fn window_cfg(window: Duration) -> ServerConfig {
    ServerConfig {
        recovery_window: window,
        ..cfg()
    }
}

#[test]
fn events_stay_for_the_recovery_window_and_a_resume_after_it_learns_exactly_what_aged_out() {
    let t0 = t0();
    let mut s = Server::new(window_cfg(secs(10)), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    for (at, n) in [(0, 1), (6, 2), (12, 3)] {
        s.publish(t0 + secs(at), &sid, "m", &[("n", json!(n))])
            .unwrap();
    }
    // At 12 s event 1 is 12 s old: gone; event 2 (6 s old) is kept, whatever the bounds.
    let f = resume_v2(&mut s, t0 + secs(12), C2, &sid, 0);
    assert_eq!(
        (&f[0]["oldest_cursor"], &f[0]["resync_required"]),
        (&json!(2), &json!(true))
    );
    let replayed: Vec<&Value> = f.iter().filter(|f| f["type"] == "replay").collect();
    assert_eq!(replayed.len(), 2);
    assert_eq!(replayed[0]["event"]["data"]["n"], 2);
    let end = f.iter().find(|f| f["type"] == "replay_end").unwrap();
    assert_eq!((&end["lost_from"], &end["lost_to"]), (&json!(1), &json!(1)));
    // A resume at 10 s would still have had everything.
    let mut s = Server::new(window_cfg(secs(10)), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    s.publish(t0 + secs(1), &sid, "m", &[]).unwrap();
    let f = resume_v2(&mut s, t0 + secs(10), C2, &sid, 0);
    assert_eq!(f[0]["resync_required"], false);
}

#[test]
fn a_quiet_log_is_evicted_by_the_timer_within_a_second_of_the_window() {
    let t0 = t0();
    let mut s = Server::new(window_cfg(secs(10)), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    s.publish(t0 + secs(1), &sid, "m", &[]).unwrap();
    s.publish(t0 + secs(3), &sid, "m", &[]).unwrap();
    assert_eq!(s.stats().log_events, 2);
    // The session expires after an hour; the log's first deadline is event 1's, 1 s late.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(12)));
    s.handle_timeout(t0 + secs(12));
    assert_eq!(s.stats().log_events, 1);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(14)));
    s.handle_timeout(t0 + secs(14));
    assert_eq!((s.stats().log_events, s.stats().log_bytes), (0, 0));
    assert_eq!(s.poll_timeout(), Some(t0 + s.config().session_ttl));
    // Nothing retained: a resume since the head loses nothing, one since 1 loses 2..=2.
    let f = resume_v2(&mut s, t0 + secs(15), C2, &sid, 2);
    assert_eq!(f[0]["resync_required"], false);
    s.handle_closed(t0 + secs(15), C2);
    let f = resume_v2(&mut s, t0 + secs(15), ConnId(3), &sid, 1);
    let end = f.iter().find(|f| f["type"] == "replay_end").unwrap();
    assert_eq!((&end["lost_from"], &end["lost_to"]), (&json!(2), &json!(2)));
}

#[test]
fn the_total_bound_evicts_the_oldest_across_sessions_and_a_reader_left_behind_is_a_slow_consumer() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            // Room for about ten events in all.
            recovery_total_bytes: 10 * (60 + log::RECORD_COST),
            max_queued_frames: 1,
            ..cfg()
        },
        t0,
    );
    let a = connect_v1(&mut s, t0, C1);
    let b = connect_v1(&mut s, t0, C2);
    drain(&mut s, t0);
    // A's reader is stuck with one frame in flight (never confirmed): its events wait.
    s.publish(t0, &a, "m", &[("x", json!("a"))]).unwrap();
    s.publish(t0, &a, "m", &[("x", json!("a"))]).unwrap();
    let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert_eq!(texts_of(&out, C1).len(), 1, "one frame in flight");
    // B's stream pushes A's second event out of the log.
    for _ in 0..20 {
        s.publish(t0, &b, "m", &[("x", json!("b"))]).unwrap();
        drain(&mut s, t0);
    }
    assert!(s.stats().log_bytes <= s.config().recovery_total_bytes);
    // Once A's window opens it is owed an event that is gone: closed, never skipped. The
    // confirmation decides it, so its `Closing` is queued before the Close is handed out.
    let _ = events(&mut s);
    s.handle_sent(t0, C1, 1);
    let decided = events(&mut s);
    assert!(decided.iter().any(|e| matches!(
        e,
        ServerEvent::Closing {
            conn: C1,
            code: close::SLOW_CONSUMER,
            ..
        }
    )));
    assert!(decided
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionDetached { session } if *session == a)));
    let out = drain(&mut s, t0);
    assert_eq!(texts_of(&out, C1), Vec::<String>::new());
    assert_eq!(
        close_of(&out, C1),
        Some((close::SLOW_CONSUMER, "slow_consumer".into()))
    );
    // Its resume learns exactly what it lost.
    s.handle_closed(t0, C1);
    let f = resume_v2(&mut s, t0, ConnId(3), &a, 1);
    let end = f.iter().find(|f| f["type"] == "replay_end").unwrap();
    assert_eq!((&end["lost_from"], &end["lost_to"]), (&json!(2), &json!(2)));
}

#[test]
fn a_sessions_byte_bound_evicts_only_its_own_oldest_events() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            recovery_session_bytes: 4 * (60 + log::RECORD_COST),
            ..cfg()
        },
        t0,
    );
    let a = connect_v1(&mut s, t0, C1);
    let b = connect_v1(&mut s, t0, C2);
    s.handle_closed(t0, C1);
    s.handle_closed(t0, C2);
    s.publish(t0, &b, "m", &[("x", json!("b"))]).unwrap();
    for _ in 0..10 {
        s.publish(t0, &a, "m", &[("x", json!("a"))]).unwrap();
    }
    let st = s.stats();
    assert!(st.max_window_bytes <= s.config().recovery_session_bytes);
    assert!(st.max_window_events < 10);
    // B's one event is untouched by A's bound.
    let f = resume_v2(&mut s, t0, ConnId(3), &b, 0);
    assert_eq!(f[0]["resync_required"], false);
    assert_eq!(f.iter().filter(|f| f["type"] == "replay").count(), 1);
    // The log holds what the windows hold, not what A evicted.
    assert_eq!(st.log_events, 1 + st.max_window_events);
}

#[test]
fn a_reader_whose_owed_event_aged_out_behind_a_full_window_is_closed_by_the_publish_that_finds_it_gone(
) {
    // The fuzzer's input: one frame in flight (the hello_ok, never confirmed), an event that
    // waits behind it, three hours, a second publish (its append evicts the first by age),
    // then the confirmation. The close is decided with the publish: its `Closing` is queued
    // before the Close is handed out.
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_queued_frames: 1,
            heartbeat_interval: None,
            ..window_cfg(secs(120))
        },
        t0,
    );
    s.handle_connected(t0, C1, ConnectInfo::default());
    s.handle_text(
        t0,
        C1,
        r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1}"#,
    );
    let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    let hello_ok = texts_of(&out, C1);
    assert_eq!(hello_ok.len(), 1, "the hello_ok fills the window");
    let sid = events(&mut s)
        .into_iter()
        .find_map(|e| match e {
            ServerEvent::SessionCreated { session, .. } => Some(session),
            _ => None,
        })
        .unwrap();
    s.publish(t0, &sid, "m", &[]).unwrap();
    assert!(
        s.poll_transmit().is_none(),
        "the event waits for the window"
    );
    let later = t0 + secs(3 * 3600);
    s.publish(later, &sid, "m", &[]).unwrap();
    assert!(
        events(&mut s).iter().any(|e| matches!(
            e,
            ServerEvent::Closing {
                conn: C1,
                code: close::SLOW_CONSUMER,
                ..
            }
        )),
        "Closing queued by the publish, before the Close is handed out"
    );
    s.handle_sent(later, C1, hello_ok[0].len());
    let out = drain(&mut s, later);
    assert_eq!(
        texts_of(&out, C1),
        Vec::<String>::new(),
        "event 1 never skipped"
    );
    assert_eq!(
        close_of(&out, C1),
        Some((close::SLOW_CONSUMER, "slow_consumer".into()))
    );
}
