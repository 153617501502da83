//! Timers and bad input: pings and reaping, the handshake deadline, garbage, floods, shutdown.

use super::*;

#[test]
fn pings_on_schedule_and_reaping_after_inbound_silence() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_timeout(t0 + secs(29));
    assert!(drain(&mut s, t0 + secs(29)).is_empty());
    s.handle_timeout(t0 + secs(30));
    assert_eq!(
        texts_of(&drain(&mut s, t0 + secs(30)), C1),
        [r#"{"type":"ping"}"#]
    );
    s.handle_timeout(t0 + secs(30));
    assert!(
        drain(&mut s, t0 + secs(30)).is_empty(),
        "twice does nothing"
    );
    s.handle_text(t0 + secs(40), C1, r#"{"type":"pong"}"#);
    // Our own traffic is no proof of life.
    s.publish(t0 + secs(90), &sid, "message", &[]).unwrap();
    s.handle_timeout(t0 + secs(100));
    let out = drain(&mut s, t0 + secs(100));
    assert!(close_of(&out, C1).is_none());
    s.handle_timeout(t0 + secs(101));
    let out = drain(&mut s, t0 + secs(101));
    assert_eq!(close_of(&out, C1), Some((4002, "liveness_timeout".into())));
    assert_eq!(s.health(t0 + secs(101)).liveness.reaped_connections, 1);
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionDetached { .. })));
}

#[test]
fn a_silent_connection_is_closed_at_the_handshake_deadline() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    s.handle_connected(t0, C1, ConnectInfo::default());
    s.handle_text(t0 + secs(5), C1, r#"{"type":"ping"}"#);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(10)));
    drain(&mut s, t0 + secs(5));
    s.handle_timeout(t0 + secs(10));
    assert_eq!(
        close_of(&drain(&mut s, t0 + secs(10)), C1),
        Some((1008, "handshake_timeout".into()))
    );
}

#[test]
fn garbage_binary_and_oversize_frames_get_typed_errors_and_clean_closes() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_frame_bytes: 100,
            ..cfg()
        },
        t0,
    );
    let other = connect_v1(&mut s, t0, ConnId(9));
    type Feed<'a> = &'a dyn Fn(&mut Server, ConnId);
    let cases: [(Feed, u16, &str); 4] = [
        (
            &|s, c| s.handle_text(t0, c, "{not json"),
            1007,
            "invalid_frame",
        ),
        (
            &|s, c| s.handle_text(t0, c, "[1,2,3]"),
            1007,
            "invalid_frame",
        ),
        (&|s, c| s.handle_binary(t0, c, 12), 1003, "invalid_frame"),
        (
            &|s, c| s.handle_text(t0, c, &"x".repeat(101)),
            1009,
            "payload_too_large",
        ),
    ];
    for (i, (feed, code, err)) in cases.into_iter().enumerate() {
        let c = ConnId(100 + i as u64);
        connect_v1(&mut s, t0, c);
        feed(&mut s, c);
        let out = drain(&mut s, t0);
        let f = frames_of(&out, c);
        assert_eq!(
            (f[0]["type"].clone(), f[0]["code"].clone()),
            (json!("error"), json!(err))
        );
        assert_eq!(close_of(&out, c).map(|x| x.0), Some(code));
        assert!(
            out.iter().all(|(to, _)| *to == c),
            "other connections untouched"
        );
    }
    s.publish(t0, &other, "message", &[]).unwrap();
    assert_eq!(frames_of(&drain(&mut s, t0), ConnId(9)).len(), 1);
}

#[test]
fn unknown_types_are_ignored_then_a_flood_is_closed_4028() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_unknown_frames: 3,
            ..cfg()
        },
        t0,
    );
    connect_v1(&mut s, t0, C1);
    for _ in 0..3 {
        s.handle_text(t0, C1, r#"{"type":"subscribe"}"#);
        assert!(drain(&mut s, t0).is_empty());
    }
    s.handle_text(t0, C1, r#"{"type":"subscribe"}"#);
    assert_eq!(
        close_of(&drain(&mut s, t0), C1),
        Some((4028, String::new()))
    );
}

#[test]
fn shutdown_flushes_queued_frames_then_closes_1001() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_queued_frames: 2,
            ..cfg()
        },
        t0,
    );
    let sid = connect_v1(&mut s, t0, C1);
    for _ in 0..5 {
        s.publish(t0, &sid, "message", &[]).unwrap();
    }
    s.shutdown(t0);
    let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert_eq!(
        frames_of(&out, C1).len(),
        5,
        "the window no longer paces a graceful close"
    );
    assert_eq!(close_of(&out, C1), Some((1001, "server_shutdown".into())));
    assert_eq!(s.health(t0).status, "stopped");
}
