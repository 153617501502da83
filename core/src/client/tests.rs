//! Timeline tests of the client machine, written as `t0 + n s`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::backoff::{BackoffConfig, Jitter};
use crate::cursor::PendingRequest;

use crate::test_origin as t0;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            initial: secs(1),
            max: secs(30),
            multiplier: 2.0,
            jitter: Jitter::None,
            ..BackoffConfig::default()
        },
        ..ClientConfig::new("echo")
    }
}

struct H {
    c: Client,
    now: Instant,
    tx: Vec<Transmit>,
    ev: Vec<Event>,
}

impl H {
    fn new(cfg: ClientConfig) -> Self {
        let now = t0();
        Self::with_state(cfg, ResumeState::default(), now)
    }
    fn with_state(cfg: ClientConfig, state: ResumeState, now: Instant) -> Self {
        let mut h = Self {
            c: Client::with_resume_state(cfg, state, now),
            now,
            tx: vec![],
            ev: vec![],
        };
        h.drain();
        h
    }
    fn drain(&mut self) {
        let (had, before) = (self.c.has_transmit(), self.tx.len());
        while let Some(t) = self.c.poll_transmit() {
            self.tx.push(t);
        }
        assert_eq!(
            had,
            self.tx.len() > before,
            "has_transmit agrees with poll_transmit"
        );
        assert!(!self.c.has_transmit());
        while let Some(e) = self.c.poll_event() {
            self.ev.push(e);
        }
    }
    fn take(&mut self) -> (Vec<Transmit>, Vec<Event>) {
        self.drain();
        (std::mem::take(&mut self.tx), std::mem::take(&mut self.ev))
    }
    fn frames(&mut self) -> Vec<Value> {
        self.drain();
        let frames = self
            .tx
            .iter()
            .filter_map(|t| match t {
                Transmit::Frame(f) => Some(serde_json::from_str(f).unwrap()),
                _ => None,
            })
            .collect();
        self.tx.clear();
        frames
    }
    fn connect(&mut self) -> Value {
        self.c.handle_connected(self.now);
        let mut f = self.frames();
        assert_eq!(f.len(), 1, "one handshake frame");
        f.remove(0)
    }
    fn recv(&mut self, v: Value) {
        self.c.handle_text(self.now, &v.to_string());
        self.drain();
    }
    fn at(&mut self, d: Duration) {
        self.now += d;
        self.c.handle_timeout(self.now);
        self.drain();
    }
    fn delivered(&self) -> Vec<u64> {
        self.ev
            .iter()
            .filter_map(|e| match e {
                Event::Delivered(d) => Some(d.seq),
                _ => None,
            })
            .collect()
    }
    fn has(&self, pred: impl Fn(&Event) -> bool) -> bool {
        self.ev.iter().any(pred)
    }
    fn closed_events(&self) -> usize {
        self.ev
            .iter()
            .filter(|e| matches!(e, Event::Closed(_)))
            .count()
    }
}

fn hello_ok(session: &str, cursor: u64) -> Value {
    json!({"type":"hello_ok","protocol":1,"features":{"methods":[],"events":[]},
           "policy":{"heartbeat_ms":30000},"session_id":session,"resumed":false,"cursor":cursor})
}

fn live(seq: u64) -> Value {
    json!({"type":"message","content":format!("event {seq}"),"session_id":"s1","cursor":seq,"seq":seq})
}

fn replay(seq: u64) -> Value {
    json!({"type":"replay","event":{"type":"message","data":live(seq),"event_id":"e","timestamp":1.0,
           "source":"gateway","target":"c","sequence":seq}})
}

/// Connected to session s1 at head 0, transcripts cleared.
fn connected() -> H {
    let mut h = H::new(config());
    h.connect();
    h.recv(hello_ok("s1", 0));
    h.take();
    h
}

/// Drop the socket and reconnect at once (zero backoff), returning the resume hello.
fn drop_and_reconnect(h: &mut H) -> Value {
    h.c.handle_closed(h.now, None, "");
    h.drain();
    let delay =
        h.ev.iter()
            .rev()
            .find_map(|e| match e {
                Event::StateChanged(State::Reconnecting { delay, .. }) => Some(*delay),
                _ => None,
            })
            .expect("reconnecting");
    h.at(delay);
    assert!(h.tx.contains(&Transmit::Open));
    h.tx.clear();
    h.connect()
}

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
fn a_version_outside_the_offered_range_is_a_protocol_violation() {
    let mut h = H::new(config());
    h.connect();
    let mut ok = hello_ok("s1", 0);
    ok["protocol"] = json!(3);
    h.recv(ok);
    assert!(h.has(|e| matches!(e, Event::Closed(ClosedReason::ProtocolViolation(_)))));
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
