//! Property: whatever the interleaving of in-order, duplicate, stale and lost frames, cuts and
//! resumes against a server with a bounded replay window, the application sees each sequence at
//! most once, in increasing order, and every hole is either repaired or reported as lost.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{Client, ClientConfig, Event, Transmit};
use tether_core::version::VersionRange;

#[derive(Debug, Clone)]
enum Step {
    /// Produce an event and send it live.
    Live,
    /// Produce an event that is lost on the wire (a gap for the client).
    LoseOnWire,
    /// Re-send an older event live (a duplicate or stale frame).
    Resend(u64),
    /// Cut the connection; the client resumes.
    Cut,
    /// Produce events while the client is away (next cut only).
    ProduceAway(u8),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            6 => Just(Step::Live),
            1 => Just(Step::LoseOnWire),
            2 => (0u64..10).prop_map(Step::Resend),
            1 => Just(Step::Cut),
            1 => (1u8..20).prop_map(Step::ProduceAway),
        ],
        1..120,
    )
}

struct World {
    client: Client,
    now: Instant,
    /// Events the server produced: 1..=head.
    head: u64,
    /// The server retains only the last `window` events.
    window: u64,
    v2: bool,
    connected: bool,
    delivered: Vec<u64>,
    lost: Vec<(u64, u64)>,
}

fn frame(seq: u64) -> String {
    json!({"type":"message","content":seq,"session_id":"s","cursor":seq,"seq":seq}).to_string()
}

impl World {
    fn oldest(&self) -> u64 {
        self.head.saturating_sub(self.window) + 1
    }

    fn pump(&mut self) {
        // Loop until the machine is quiet: transmits may trigger server answers.
        for _ in 0..1000 {
            let mut progressed = false;
            while let Some(t) = self.client.poll_transmit() {
                progressed = true;
                match t {
                    Transmit::Open => self.client.handle_connected(self.now),
                    Transmit::Frame(text) => self.server_receives(&text),
                    Transmit::Close { .. } => self.connected = false,
                }
            }
            while let Some(e) = self.client.poll_event() {
                progressed = true;
                match e {
                    Event::Delivered(d) => self.delivered.push(d.seq),
                    Event::Lost { from, to } => self.lost.push((from, to)),
                    _ => {}
                }
            }
            if !self.connected && !self.client.is_closed() {
                if let Some(t) = self.client.poll_timeout() {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("the client never went quiet");
    }

    fn server_receives(&mut self, text: &str) {
        let v: Value = serde_json::from_str(text).unwrap();
        match v["type"].as_str().unwrap() {
            "hello" => {
                self.connected = true;
                let since = v["since"].as_u64();
                let first = since.map_or(self.head + 1, |s| (s + 1).max(self.oldest()));
                let mut ok = json!({"type":"hello_ok","protocol": if self.v2 {2} else {1},
                    "session_id":"s","resumed":true,"cursor":self.head});
                if self.v2 {
                    ok["sequence"] = json!(first - 1);
                }
                self.send(&ok.to_string());
                self.replay_from(first);
            }
            "resync" => {
                let since = v["since"].as_u64().unwrap();
                self.replay_from((since + 1).max(self.oldest()));
            }
            _ => {}
        }
    }

    fn replay_from(&mut self, first: u64) {
        for seq in first..=self.head {
            let data: Value = serde_json::from_str(&frame(seq)).unwrap();
            let r = json!({"type":"replay","event":{"type":"message","data":data,"source":"gateway","target":null,"sequence":seq}});
            self.send(&r.to_string());
        }
        if self.v2 {
            self.send(&json!({"type":"replay_end","cursor":self.head}).to_string());
        }
    }

    fn send(&mut self, text: &str) {
        if self.connected {
            self.client.handle_text(self.now, text);
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Live => {
                self.head += 1;
                let f = frame(self.head);
                self.send(&f);
            }
            Step::LoseOnWire => self.head += 1,
            Step::Resend(back) => {
                if self.head > 0 {
                    let f = frame(self.head.saturating_sub(back).max(1));
                    self.send(&f);
                }
            }
            Step::Cut => {
                if self.connected {
                    self.connected = false;
                    self.client.handle_closed(self.now, None, "cut");
                }
            }
            Step::ProduceAway(n) => {
                if !self.connected {
                    self.head += u64::from(n);
                }
            }
        }
        self.pump();
    }
}

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn run(script: Vec<Step>, window: u64, v2: bool, seed: u64) -> World {
    let config = ClientConfig {
        versions: if v2 {
            VersionRange::TETHER
        } else {
            VersionRange::V1_ONLY
        },
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            jitter: Jitter::Full,
            ..BackoffConfig::default()
        },
        seed: Some(tether_core::rng::seed_from_u64(seed)),
        ..ClientConfig::new("echo")
    };
    let now = origin();
    let mut w = World {
        client: Client::new(config, now),
        now,
        head: 0,
        window,
        v2,
        connected: false,
        delivered: vec![],
        lost: vec![],
    };
    w.pump();
    for s in script {
        w.step(s);
    }
    // A last clean cut and resume: every hole must now be repaired or reported.
    w.step(Step::Cut);
    w
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn each_sequence_at_most_once_in_order_and_every_hole_repaired_or_reported(
        script in steps(), window in 1u64..40, v2 in any::<bool>(), seed in any::<u64>()
    ) {
        let w = run(script, window, v2, seed);
        prop_assert!(w.delivered.windows(2).all(|p| p[0] < p[1]), "order/duplicates: {:?}", w.delivered);
        for seq in 1..=w.head {
            let delivered = w.delivered.binary_search(&seq).is_ok();
            let lost = w.lost.iter().any(|(a, b)| (*a..=*b).contains(&seq));
            prop_assert!(delivered ^ lost, "seq {} delivered={} lost={} (delivered {:?}, lost {:?})", seq, delivered, lost, w.delivered, w.lost);
        }
        for (a, b) in &w.lost {
            prop_assert!(a <= b);
        }
    }

    #[test]
    fn with_a_window_that_holds_everything_nothing_is_ever_lost(
        script in steps(), v2 in any::<bool>(), seed in any::<u64>()
    ) {
        let script: Vec<Step> = script.into_iter().filter(|s| !matches!(s, Step::LoseOnWire)).collect();
        let w = run(script, u64::MAX / 4, v2, seed);
        prop_assert!(w.lost.is_empty(), "lost {:?}", w.lost);
        prop_assert_eq!(w.delivered, (1..=w.head).collect::<Vec<_>>());
    }
}
