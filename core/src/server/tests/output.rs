//! Output and flow control: slow consumers, `poll_transmits` against `poll_transmit`.

use super::*;

#[test]
fn a_burst_never_evicts_a_fast_reader_but_a_stalled_one_is_closed_1013_alone() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            recovery_session_events: 100,
            max_queued_frames: 10,
            ..cfg()
        },
        t0,
    );
    let fast = connect_v1(&mut s, t0, C1);
    let slow = connect_v1(&mut s, t0, C2);
    // Burst of 90 without draining: the ring holds it; the window only paces.
    for _ in 0..90 {
        s.publish(t0, &fast, "message", &[]).unwrap();
    }
    let out = drain(&mut s, t0);
    assert_eq!(frames_of(&out, C1).len(), 90);
    assert!(close_of(&out, C1).is_none());
    // The slow one never confirms writes: its window fills at 10 frames.
    let mut got = 0;
    for _ in 0..150 {
        s.publish(t0, &slow, "message", &[]).unwrap();
        while let Some((c, t)) = s.poll_transmit() {
            assert_eq!(c, C2);
            if let ServerTransmit::Close { code, reason } = t {
                assert_eq!((code, reason.as_str()), (1013, "slow_consumer"));
                got = 1000;
            } else {
                got += 1;
            }
        }
    }
    assert_eq!(got, 1000, "slow consumer closed");
    s.publish(t0, &fast, "message", &[]).unwrap();
    assert_eq!(frames_of(&drain(&mut s, t0), C1).len(), 1);
    // The slow session keeps everything it could for a resume.
    assert_eq!(s.session_head(&slow), Some(150));
}

/// What each connection was sent, in order.
type PerConn = BTreeMap<ConnId, Vec<ServerTransmit>>;

/// One scenario on two servers built alike: one drained with `poll_transmit`, the other
/// with `poll_transmits`, after every step; frames are confirmed as written after the drain.
#[test]
fn poll_transmits_gives_each_connection_what_poll_transmit_gives_it() {
    let config = ServerConfig {
        max_queued_frames: 3, // the in-flight window stops a drain midway
        ..cfg()
    };
    let t0 = t0();
    let mut one = (Server::new(config.clone(), t0), PerConn::new());
    let mut batched = (Server::new(config, t0), PerConn::new());
    let step = |(s, seen): &mut (Server, PerConn), batch: bool, now: Instant| loop {
        let mut out = Vec::new();
        if batch {
            s.poll_transmits(&mut out);
        } else {
            while let Some(t) = s.poll_transmit() {
                out.push(t);
            }
        }
        if out.is_empty() {
            break;
        }
        for (c, t) in out {
            if let ServerTransmit::Frame(f) = &t {
                s.handle_sent(now, c, f.len());
            }
            seen.entry(c).or_default().push(t);
        }
    };
    let c3 = ConnId(3);
    let hello = r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2}"#;
    let mut sids = Vec::new();
    for (s, batch) in [(&mut one, false), (&mut batched, true)] {
        let now = t0;
        for c in [C1, C2] {
            s.0.handle_connected(now, c, ConnectInfo::default());
            s.0.handle_text(now, c, hello);
        }
        step(s, batch, now);
        let ids: Vec<SessionId> = [C1, C2]
            .iter()
            .map(|c| {
                let ServerTransmit::Frame(f) = &s.1[c][0] else {
                    panic!("no hello_ok")
                };
                let v: Value = serde_json::from_str(f).unwrap();
                SessionId(v["session_id"].as_str().unwrap().to_owned())
            })
            .collect();
        for i in 0..10 {
            for sid in &ids {
                s.0.publish(now, sid, "message", &[("n", json!(i))])
                    .unwrap();
            }
            if i % 4 == 0 {
                step(s, batch, now);
            }
        }
        step(s, batch, now);
        s.0.handle_closed(now + secs(1), C1);
        for i in 10..15 {
            s.0.publish(now + secs(1), &ids[0], "message", &[("n", json!(i))])
                .unwrap();
        }
        s.0.handle_connected(now + secs(2), c3, ConnectInfo::default());
        let resume = format!(
            r#"{{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2,"session_id":"{}","since":4}}"#,
            ids[0]
        );
        s.0.handle_text(now + secs(2), c3, &resume);
        step(s, batch, now + secs(2));
        s.0.disconnect(now + secs(3), C2, 4000, "bye").unwrap();
        step(s, batch, now + secs(3));
        sids.push(ids);
    }
    assert_eq!(sids[0], sids[1], "the servers are alike");
    assert_eq!(one.1, batched.1);
    // The scenario reached what it meant to: a replay, live frames, a close.
    let c3_frames = batched.1[&c3].len();
    assert!(
        c3_frames > 10,
        "{c3_frames} frames to the resumed connection"
    );
    assert!(batched.1[&C2]
        .iter()
        .any(|t| matches!(t, ServerTransmit::Close { code: 4000, .. })));
}
