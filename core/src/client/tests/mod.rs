//! Timeline tests of the client machine, written as `t0 + n s`, one topic a module; the
//! helpers they share are here.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::backoff::{BackoffConfig, Jitter};
use crate::cursor::PendingRequest;

use crate::test_origin as t0;

mod gaps;
mod handshake;
mod lifecycle;
mod requests;

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
