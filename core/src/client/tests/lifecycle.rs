//! The connection loop: deadlines, rejections and backoff, close codes, heartbeat, disconnect, the end of the machine.

use super::*;

#[test]
fn the_handshake_deadline_is_a_transient_failure_that_backs_off() {
    let mut h = H::new(config());
    h.connect();
    h.at(secs(9));
    assert!(h.c.poll_timeout().is_some());
    assert!(!h.has(|e| matches!(e, Event::StateChanged(State::Disconnected { .. }))));
    h.at(secs(1));
    assert!(h.has(|e| *e
        == Event::StateChanged(State::Disconnected {
            cause: DisconnectCause::HandshakeTimeout
        })));
    assert!(h.has(|e| *e
        == Event::StateChanged(State::Reconnecting {
            attempt: 1,
            delay: secs(1)
        })));
    assert!(h.tx.iter().any(|t| matches!(t, Transmit::Close { .. })));
}

#[test]
fn terminal_rejections_stop_the_loop_with_code_and_next_step() {
    for reply in [
        json!({"type":"hello_error","code":"auth_required","message":"Authentication required","next_step":"reauthenticate","next":"reauthenticate"}),
        json!({"type":"hello_error","code":"protocol_unsupported","message":"Protocol version 2 is too new","next_step":"downgrade_client","next":"use_older_client"}),
        json!({"type":"hello_error","code":"agent_not_found","message":"Agent not found: x","next_step":"do_not_retry","next":"check_agent_id"}),
    ] {
        let mut h = H::new(config());
        h.connect();
        h.recv(reply.clone());
        let code = ConnectErrorCode::from(reply["code"].as_str().unwrap());
        let step = RecoveryStep::from(reply["next_step"].as_str().unwrap());
        assert!(h.has(|e| matches!(e, Event::Closed(ClosedReason::Rejected(r)) if r.code == code && r.next_step == Some(step.clone()))), "{reply}");
        assert_eq!(h.closed_events(), 1);
        assert!(h.c.is_closed());
        h.c.handle_closed(h.now, Some(4003), "Authentication required");
        h.at(secs(3600));
        assert!(
            !h.tx.contains(&Transmit::Open),
            "no retry after a terminal rejection"
        );
        assert_eq!(h.closed_events(), 1);
    }
    // Legacy join: version_unsupported is terminal too.
    let mut h = H::new(ClientConfig {
        handshake: HandshakeMode::Join,
        ..config()
    });
    assert_eq!(h.connect()["type"], "join");
    h.recv(json!({"type":"error","code":"version_unsupported","message":"Protocol version mismatch","server_min_version":1,"server_max_version":1}));
    assert!(h.has(|e| matches!(e, Event::Closed(ClosedReason::Rejected(r)) if r.code == ConnectErrorCode::VersionUnsupported && r.next_step == Some(RecoveryStep::DowngradeClient))));
}

#[test]
fn rate_limits_and_unknown_codes_are_transient_and_retry_after_is_a_floor() {
    let mut h = H::new(config());
    h.connect();
    h.recv(json!({"type":"hello_error","code":"rate_limited","message":"slow down","next_step":"wait_then_retry","retry_after_seconds":7}));
    h.c.handle_closed(h.now, Some(4008), "slow down");
    h.drain();
    assert!(h.has(
        |e| matches!(e, Event::StateChanged(State::Reconnecting { delay, .. }) if *delay >= secs(7))
    ));
    assert!(!h.c.is_closed());

    let mut h = H::new(config());
    h.connect();
    h.recv(json!({"type":"hello_error","code":"shiny_new_code","message":"?"}));
    assert!(h.has(|e| matches!(e, Event::StateChanged(State::Reconnecting { .. }))));
}

#[test]
fn close_codes_reconnect_and_4001_waits_for_credentials() {
    for code in [Some(4002), Some(1013), Some(1011), None] {
        let mut h = connected();
        h.c.handle_closed(h.now, code, "x");
        h.drain();
        assert!(h.has(|e| matches!(e, Event::StateChanged(State::Reconnecting { attempt: 1, delay }) if *delay == secs(1))), "{code:?}");
    }
    let mut h = connected();
    h.c.handle_closed(h.now, Some(4001), "credentials_rotated");
    h.drain();
    assert!(h.has(|e| *e == Event::StateChanged(State::AwaitingCredentials)));
    h.at(secs(3600));
    assert!(!h.tx.contains(&Transmit::Open));
    h.c.credentials_refreshed(h.now);
    h.drain();
    assert!(h.tx.contains(&Transmit::Open));
}

#[test]
fn a_completed_handshake_forgives_the_outage_and_a_drop_before_it_climbs() {
    let mut h = connected();
    let delays = |h: &H| -> Vec<Duration> {
        h.ev.iter()
            .filter_map(|e| match e {
                Event::StateChanged(State::Reconnecting { delay, .. }) => Some(*delay),
                _ => None,
            })
            .collect()
    };
    // Cuts a second apart, each after a handshake that completed (a resume): every retry
    // starts again from the first delay.
    for _ in 0..4 {
        h.at(secs(1));
        drop_and_reconnect(&mut h);
        h.recv(hello_ok("s1", 0));
    }
    assert_eq!(delays(&h), vec![secs(1); 4]);
    // A server that accepts sockets and drops them before `hello_ok`: the delays climb.
    h.ev.clear();
    h.at(secs(1));
    drop_and_reconnect(&mut h); // the connection that had completed its handshake
    for _ in 0..3 {
        drop_and_reconnect(&mut h); // dropped while the hello waits for its answer
    }
    h.c.handle_closed(h.now, None, "");
    h.drain();
    assert_eq!(
        delays(&h),
        vec![secs(1), secs(2), secs(4), secs(8), secs(16)]
    );
    // Its `hello_ok` at last: the next cut retries after the first delay again.
    h.at(secs(16));
    assert!(h.tx.contains(&Transmit::Open));
    h.tx.clear();
    h.connect();
    h.recv(hello_ok("s1", 0));
    h.ev.clear();
    drop_and_reconnect(&mut h);
    assert_eq!(delays(&h), vec![secs(1)]);
}

#[test]
fn attempt_cap_ends_with_gave_up() {
    let mut cfg = config();
    cfg.backoff.max_attempts = Some(2);
    let mut h = H::new(cfg);
    for _ in 0..3 {
        h.c.handle_connect_failed(h.now, "refused");
        h.at(secs(60));
    }
    assert!(h.has(|e| matches!(e, Event::Closed(ClosedReason::GaveUp { .. }))));
    assert_eq!(h.closed_events(), 1);
}

#[test]
fn heartbeat_pings_answers_pongs_and_detects_silence() {
    let mut h = H::new(config());
    h.connect();
    let mut ok = hello_ok("s1", 0);
    ok["policy"]["heartbeat_ms"] = json!(2000);
    h.recv(ok);
    h.take();
    h.recv(json!({"type":"ping"}));
    assert_eq!(h.frames(), vec![json!({"type":"pong"})]);
    h.at(secs(2));
    assert_eq!(h.frames(), vec![json!({"type":"ping"})]);
    h.recv(json!({"type":"pong"}));
    h.at(secs(2));
    h.at(secs(2)); // 4 s of silence: exactly the limit, still alive
    assert!(!h.has(|e| matches!(e, Event::StateChanged(State::Disconnected { .. }))));
    h.at(Duration::from_millis(1));
    assert!(h.has(|e| *e
        == Event::StateChanged(State::Disconnected {
            cause: DisconnectCause::HeartbeatTimeout
        })));
}

#[test]
fn disconnect_is_clean_and_ends_with_exactly_one_closed() {
    let mut h = connected();
    h.recv(json!({"type":"hello_error","code":"rate_limited","message":"x"}));
    h.c.disconnect(h.now);
    h.c.disconnect(h.now);
    h.c.handle_closed(h.now, Some(1000), "");
    h.recv(live(1));
    h.at(secs(100));
    h.drain();
    assert_eq!(h.closed_events(), 1);
    assert!(matches!(
        h.ev.last(),
        Some(Event::Closed(ClosedReason::Requested))
    ));
    assert_eq!(h.c.poll_timeout(), None);
}

// Regressions found by the fuzzer (fuzz/corpus/client/crash-*).

#[test]
fn nothing_follows_closed_not_even_a_binary_frame() {
    let mut h = connected();
    h.c.disconnect(h.now);
    h.c.handle_binary(h.now);
    h.drain();
    assert!(matches!(h.ev.last(), Some(Event::Closed(_))));
    assert_eq!(h.c.stats().bad_frames, 0);
}

#[test]
fn a_huge_retry_after_is_capped_instead_of_overflowing_the_clock() {
    let mut h = H::new(config());
    h.connect();
    h.recv(json!({"type":"hello_error","code":"rate_limited","message":"x","retry_after_seconds":u64::MAX}));
    assert!(h.has(|e| matches!(e, Event::StateChanged(State::Reconnecting { delay, .. }) if *delay == MAX_WAIT)));
    assert!(h.c.poll_timeout().is_some());
}

#[test]
fn the_legacy_join_path_still_detects_a_half_open_socket() {
    // Found by the simulator: `joined` carries no heartbeat interval.
    let mut h = H::new(ClientConfig {
        handshake: HandshakeMode::Join,
        ..config()
    });
    h.connect();
    h.recv(json!({"type":"joined","session_id":"s1","cursor":0,"sequence":0,"protocol_version":1}));
    h.at(secs(30));
    assert_eq!(h.frames(), vec![json!({"type":"ping"})]);
    h.at(secs(30));
    h.at(Duration::from_millis(1));
    assert!(h.has(|e| *e
        == Event::StateChanged(State::Disconnected {
            cause: DisconnectCause::HeartbeatTimeout
        })));
}
