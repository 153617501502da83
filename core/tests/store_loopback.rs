//! Store mode (`ServerConfig::external_store`) end to end: several server machines ("nodes")
//! share an in-memory fake of the session store, and one client machine fails over between
//! them. The fake does what the Redis adapter does: per session a metadata record (the head is
//! written "set if absent" and advanced only by appends), an event log trimmed to `keep`
//! entries, a request-id map (seen / outcome), and a notification fan-out offering every
//! append to every node (`ingest`), filling reported gaps from the log, plus a catch-up ingest
//! after each `provide_session` (closing the race between the snapshot read and the
//! notifications). The application on the client side must see every event exactly once, in
//! the store's order, or be told what it lost.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{
    Client, ClientConfig, DisconnectCause, Event, RequestStatus, State, Transmit,
};
use tether_core::cursor::ResumeState;
use tether_core::rng::Rng;
use tether_core::server::{
    ConnId, ConnectInfo, Ingest, IngestError, Outcome, Recorded, Server, ServerConfig,
    ServerEvent, ServerTransmit, SessionId, StoreUnavailable, StoredSession, Unsequenced,
};
use tether_core::version::VersionRange;
use tether_core::wire::ConnectErrorCode;

#[allow(clippy::disallowed_methods)] // tests only: an arbitrary origin for the timeline
fn origin() -> Instant {
    Instant::now()
}

const TOKEN: &str = "t0ken";

fn info() -> ConnectInfo {
    ConnectInfo {
        query_token: Some(TOKEN.into()),
        ..ConnectInfo::default()
    }
}

fn node_config(ring: usize, seed: u8) -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        seed: [seed; 32],
        auth_token: Some(TOKEN.into()),
        ring_max_events: ring,
        external_store: true,
        ..ServerConfig::default()
    }
}

fn client_config(versions: VersionRange, seed: u64) -> ClientConfig {
    ClientConfig {
        versions,
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            jitter: Jitter::Full,
            ..BackoffConfig::default()
        },
        seed,
        ..ClientConfig::new("echo")
    }
}

// ------------------------------------------------------------------------------------------
// The fake store

/// What the Redis adapter keeps: metadata hashes, a trimmed stream per session, request ids.
struct Store {
    /// Metadata as last written (`head` and `events` unused: see `heads` and `log`).
    meta: BTreeMap<SessionId, StoredSession>,
    /// The head: created "if absent" by a metadata write, advanced only by appends.
    heads: BTreeMap<SessionId, u64>,
    /// The retained events, trimmed to `keep`.
    log: BTreeMap<SessionId, VecDeque<Recorded>>,
    keep: usize,
    /// Request ids seen, with their outcome once recorded.
    requests: BTreeMap<(SessionId, String), Option<Outcome>>,
    /// Test bookkeeping, never trimmed: the `n` of every `message` by (session, sequence).
    numbered: BTreeMap<(SessionId, u64), u64>,
}

impl Store {
    fn new(keep: usize) -> Self {
        Self {
            meta: BTreeMap::new(),
            heads: BTreeMap::new(),
            log: BTreeMap::new(),
            keep,
            requests: BTreeMap::new(),
            numbered: BTreeMap::new(),
        }
    }

    /// `StoreSession`: metadata written, the head only if absent (HSETNX).
    fn write_meta(&mut self, s: StoredSession) {
        assert!(s.events.is_empty(), "metadata writes carry no events");
        self.heads.entry(s.session_id.clone()).or_insert(s.head);
        let id = s.session_id.clone();
        self.meta.insert(
            id,
            StoredSession {
                head: 0,
                events: Vec::new(),
                ..s
            },
        );
    }

    /// `StoreAppend`: the next sequence, atomically; the log keeps the newest `keep`.
    fn append(&mut self, u: Unsequenced) -> (SessionId, Recorded) {
        let sid = u.session.clone();
        let head = self.heads.entry(sid.clone()).or_insert(0);
        *head += 1;
        let rec = u.into_recorded(*head);
        let v: Value = serde_json::from_str(&rec.frame).expect("a numbered frame is JSON");
        assert_eq!(v["cursor"], rec.cursor, "numbered frame: {}", rec.frame);
        assert_eq!(v["seq"], rec.cursor, "numbered frame: {}", rec.frame);
        if rec.kind == "message" {
            let n = v["n"].as_u64().expect("test messages carry n");
            self.numbered.insert((sid.clone(), rec.cursor), n);
        }
        let log = self.log.entry(sid.clone()).or_default();
        log.push_back(rec.clone());
        while log.len() > self.keep {
            log.pop_front();
        }
        (sid, rec)
    }

    /// `SessionWanted`: metadata plus the retained events, or unknown.
    fn read(&self, id: &SessionId) -> Option<StoredSession> {
        let m = self.meta.get(id)?;
        Some(StoredSession {
            head: self.heads.get(id).copied().unwrap_or(0),
            events: self.log.get(id).map_or_else(Vec::new, |l| l.iter().cloned().collect()),
            ..m.clone()
        })
    }

    fn head(&self, id: &SessionId) -> u64 {
        self.heads.get(id).copied().unwrap_or(0)
    }

    /// XRANGE from `from`: what is still retained.
    fn since(&self, id: &SessionId, from: u64) -> Vec<Recorded> {
        self.log.get(id).map_or_else(Vec::new, |l| {
            l.iter().filter(|r| r.cursor >= from).cloned().collect()
        })
    }

    /// `RequestCheck`: marks the id seen (SETNX), or reads what is stored for it.
    fn check_request(&mut self, sid: &SessionId, rid: &str) -> Option<Option<Outcome>> {
        let key = (sid.clone(), rid.to_owned());
        if let Some(o) = self.requests.get(&key) {
            return Some(o.clone());
        }
        self.requests.insert(key, None);
        None
    }
}

// ------------------------------------------------------------------------------------------
// Nodes, store and one client, in memory

/// How a publish reaches the store.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// `Server::publish` (returns 0 and emits `StoreAppend`).
    Publish,
    /// `Server::prepare`, appended by the caller.
    Prepare,
}

/// A store lookup waiting to be answered: the snapshot was read when it was asked for.
type HeldLookup = (
    usize,
    ConnId,
    SessionId,
    Result<Option<StoredSession>, StoreUnavailable>,
);

struct Cluster {
    now: Instant,
    store: Store,
    nodes: Vec<Server>,
    ring: usize,
    /// Seeds of the node machines (each new machine gets a new one).
    generation: u8,
    client: Client,
    /// The node and connection carrying the client, if the link is up.
    link: Option<(usize, ConnId)>,
    /// The node the client's next connection lands on (the load balancer's choice).
    target: usize,
    next_conn: u64,
    /// Notifications are queued per node until `deliver` (else offered at once).
    lazy: bool,
    pending: Vec<Vec<(SessionId, Recorded)>>,
    /// Lookups are answered later, by `release_lookups` (else at once).
    hold_lookups: bool,
    held: Vec<HeldLookup>,
    /// This many next lookups fail with `StoreUnavailable`.
    failing_lookups: u32,
    /// Every `SessionWanted`, by node.
    wanted: Vec<(usize, SessionId)>,
    /// The application answers each request at once on the node that handed it out.
    auto_respond: bool,
    app_requests: Vec<(usize, SessionId, String, Value)>,
    /// Gaps whose range the store had already trimmed (the connection was closed to resume).
    unfillable_gaps: u64,
    published: u64,
    // What the client's application saw.
    seqs: Vec<u64>,
    messages: Vec<(u64, u64)>,
    lost: Vec<(u64, u64)>,
    resets: u64,
    replaced: u64,
    gaps_seen: u64,
    updates: Vec<(String, RequestStatus)>,
    rejections: Vec<ConnectErrorCode>,
    responses: Vec<Value>,
    last_cursor: Option<u64>,
    last_sequence: Option<u64>,
}

impl Cluster {
    fn new(versions: VersionRange, seed: u64, nodes: usize, ring: usize, keep: usize) -> Self {
        Self::with_client(Client::new(client_config(versions, seed), origin()), nodes, ring, keep)
    }

    fn with_client(client: Client, nodes: usize, ring: usize, keep: usize) -> Self {
        let now = origin();
        let mut c = Self {
            now,
            store: Store::new(keep),
            nodes: (0..nodes)
                .map(|i| Server::new(node_config(ring, i as u8 + 1), now))
                .collect(),
            ring,
            generation: nodes as u8,
            client,
            link: None,
            target: 0,
            next_conn: 1,
            lazy: false,
            pending: vec![Vec::new(); nodes],
            hold_lookups: false,
            held: Vec::new(),
            failing_lookups: 0,
            wanted: Vec::new(),
            auto_respond: true,
            app_requests: Vec::new(),
            unfillable_gaps: 0,
            published: 0,
            seqs: Vec::new(),
            messages: Vec::new(),
            lost: Vec::new(),
            resets: 0,
            replaced: 0,
            gaps_seen: 0,
            updates: Vec::new(),
            rejections: Vec::new(),
            responses: Vec::new(),
            last_cursor: None,
            last_sequence: None,
        };
        c.pump();
        c
    }

    fn session(&self) -> SessionId {
        SessionId(self.client.session_id().expect("a session").to_owned())
    }

    /// Moves frames, events and store traffic until everything is quiet.
    fn pump(&mut self) {
        let now = self.now;
        for _ in 0..1_000_000 {
            let mut busy = false;
            while let Some(t) = self.client.poll_transmit() {
                busy = true;
                match t {
                    Transmit::Open => {
                        let conn = ConnId(self.next_conn);
                        self.next_conn += 1;
                        self.link = Some((self.target, conn));
                        self.nodes[self.target].handle_connected(now, conn, info());
                        self.client.handle_connected(now);
                    }
                    Transmit::Frame(text) => {
                        if let Some((n, conn)) = self.link {
                            self.nodes[n].handle_text(now, conn, &text);
                        }
                    }
                    Transmit::Close { .. } => {
                        if let Some((n, conn)) = self.link.take() {
                            self.nodes[n].handle_closed(now, conn);
                        }
                    }
                }
            }
            for i in 0..self.nodes.len() {
                while let Some((conn, t)) = self.nodes[i].poll_transmit() {
                    busy = true;
                    if let ServerTransmit::Frame(f) = &t {
                        self.nodes[i].handle_sent(now, conn, f.len());
                    }
                    let linked = self.link == Some((i, conn));
                    match t {
                        ServerTransmit::Frame(text) if linked => {
                            self.client.handle_text(now, &text);
                        }
                        ServerTransmit::Frame(_) => {} // a displaced connection's leftovers
                        ServerTransmit::Close { code, reason } => {
                            self.nodes[i].handle_closed(now, conn);
                            if linked {
                                self.link = None;
                                self.client.handle_closed(now, Some(code), &reason);
                            }
                        }
                    }
                }
                let events: Vec<ServerEvent> =
                    std::iter::from_fn(|| self.nodes[i].poll_event()).collect();
                busy |= !events.is_empty();
                for e in events {
                    self.on_node_event(i, e);
                }
            }
            while let Some(e) = self.client.poll_event() {
                busy = true;
                self.on_client_event(e);
            }
            if !busy {
                self.check_no_regression();
                return;
            }
        }
        panic!("the machines never went quiet");
    }

    fn check_no_regression(&mut self) {
        let cursor = self.client.cursor();
        let sequence = self.client.resume_state().sequence;
        assert!(
            cursor >= self.last_cursor,
            "cursor regressed: {:?} -> {cursor:?}",
            self.last_cursor
        );
        assert!(
            sequence >= self.last_sequence,
            "sequence regressed: {:?} -> {sequence:?}",
            self.last_sequence
        );
        self.last_cursor = cursor;
        self.last_sequence = sequence;
    }

    fn on_node_event(&mut self, i: usize, e: ServerEvent) {
        let now = self.now;
        match e {
            ServerEvent::SessionWanted { conn, session } => {
                self.wanted.push((i, session.clone()));
                let answer = if self.failing_lookups > 0 {
                    self.failing_lookups -= 1;
                    Err(StoreUnavailable("connection refused".into()))
                } else {
                    Ok(self.store.read(&session))
                };
                if self.hold_lookups {
                    self.held.push((i, conn, session, answer));
                } else {
                    self.answer(i, conn, &session, answer);
                }
            }
            ServerEvent::StoreSession(s) => self.store.write_meta(*s),
            ServerEvent::StoreAppend(u) => self.append(u),
            ServerEvent::RequestCheck {
                conn,
                session,
                request_id,
                content,
            } => {
                let seen = self.store.check_request(&session, &request_id);
                self.nodes[i].admit_request(now, conn, &session, &request_id, content, seen);
            }
            ServerEvent::OutcomeRecorded {
                session,
                request_id,
                outcome,
            } => {
                self.store
                    .requests
                    .insert((session, request_id), Some(outcome));
            }
            ServerEvent::Request {
                session,
                request_id,
                content,
                ..
            } => {
                self.app_requests
                    .push((i, session.clone(), request_id.clone(), content.clone()));
                if self.auto_respond {
                    let outcome = Outcome::ok(json!(format!("answer to {content}")));
                    self.nodes[i]
                        .respond(now, &session, &request_id, outcome)
                        .unwrap();
                }
            }
            _ => {}
        }
    }

    /// `provide_session`, then the catch-up ingest of what was appended after the read.
    fn answer(
        &mut self,
        i: usize,
        conn: ConnId,
        session: &SessionId,
        answer: Result<Option<StoredSession>, StoreUnavailable>,
    ) {
        let head = answer.as_ref().ok().and_then(|s| s.as_ref().map(|s| s.head));
        self.nodes[i].provide_session(self.now, conn, answer);
        if let Some(head) = head {
            for r in self.store.since(session, head + 1) {
                self.offer(i, session, r);
            }
        }
    }

    fn release_lookups(&mut self) {
        for (i, conn, session, answer) in std::mem::take(&mut self.held) {
            self.answer(i, conn, &session, answer);
        }
        self.pump();
    }

    fn append(&mut self, u: Unsequenced) {
        let (sid, rec) = self.store.append(u);
        for j in 0..self.nodes.len() {
            if self.lazy {
                self.pending[j].push((sid.clone(), rec.clone()));
            } else {
                self.offer(j, &sid, rec.clone());
            }
        }
    }

    /// One notification to node `j`; a reported gap is filled from the log, in order.
    fn offer(&mut self, j: usize, sid: &SessionId, rec: Recorded) {
        match self.nodes[j].ingest(self.now, sid, rec) {
            Ok(Ingest::Gap { expected }) => self.fill(j, sid, expected),
            Ok(_) => {}
            Err(e) => panic!("a frame numbered by the store was refused: {e}"),
        }
    }

    fn fill(&mut self, j: usize, sid: &SessionId, expected: u64) {
        let missing = self.store.since(sid, expected);
        if missing.first().map(|r| r.cursor) != Some(expected) {
            // Trimmed from the log: this connection cannot catch up in place. Close it; the
            // client's resume reads the store, which reports the loss.
            self.unfillable_gaps += 1;
            if let Some((n, conn)) = self.link.filter(|(n, _)| *n == j) {
                let _ = n;
                self.nodes[j].disconnect(self.now, conn, 1012, "store_gap").unwrap();
            }
            return;
        }
        for r in missing {
            match self.nodes[j].ingest(self.now, sid, r) {
                Ok(Ingest::Gap { expected }) => panic!("gap at {expected} while filling in order"),
                Ok(_) => {}
                Err(e) => panic!("a frame numbered by the store was refused: {e}"),
            }
        }
    }

    /// Delivers up to `k` queued notifications to node `j`, in an order drawn from `rng`
    /// (late and out of order).
    fn deliver(&mut self, j: usize, k: usize, rng: &mut Rng) {
        for _ in 0..k {
            if self.pending[j].is_empty() {
                break;
            }
            let idx = (rng.next_u64() % self.pending[j].len() as u64) as usize;
            let (sid, rec) = self.pending[j].remove(idx);
            self.offer(j, &sid, rec);
        }
        self.pump();
    }

    fn deliver_all(&mut self) {
        for j in 0..self.nodes.len() {
            for (sid, rec) in std::mem::take(&mut self.pending[j]) {
                self.offer(j, &sid, rec);
            }
        }
        self.pump();
    }

    fn on_client_event(&mut self, e: Event) {
        match e {
            Event::Delivered(d) => {
                if let Some(last) = self.seqs.last() {
                    assert!(*last < d.seq, "delivered {} after {last}", d.seq);
                }
                self.seqs.push(d.seq);
                let v: Value = serde_json::from_str(&d.payload).expect("payload is JSON");
                if d.kind == "message" {
                    let n = v["n"].as_u64().expect("n");
                    let numbered = self.store.numbered.get(&(self.session(), d.seq));
                    assert_eq!(numbered, Some(&n), "seq {} carries the wrong event", d.seq);
                    self.messages.push((d.seq, n));
                } else if d.kind == "response" {
                    self.responses.push(v);
                }
            }
            Event::Lost { from, to } => self.lost.push((from, to)),
            Event::Gap { .. } => self.gaps_seen += 1,
            Event::ServerReset { .. } => self.resets += 1,
            Event::SessionReplaced { .. } => self.replaced += 1,
            Event::Request(u) => self.updates.push((u.request_id, u.status)),
            Event::StateChanged(State::Disconnected {
                cause: DisconnectCause::Rejected(r),
            }) => self.rejections.push(r.code),
            Event::Closed(reason) => panic!("the client stopped: {reason:?}"),
            _ => {}
        }
    }

    /// Lets virtual time pass up to the next deadline of any machine.
    fn advance(&mut self) {
        let next = self
            .nodes
            .iter()
            .map(Server::poll_timeout)
            .chain([self.client.poll_timeout()])
            .flatten()
            .min();
        if let Some(t) = next {
            self.now = self.now.max(t);
        }
        self.client.handle_timeout(self.now);
        for n in &mut self.nodes {
            n.handle_timeout(self.now);
        }
        self.pump();
    }

    fn connected(&self) -> bool {
        self.client.is_connected() && self.link.is_some()
    }

    /// Until the client is attached again (through `target`).
    fn settle(&mut self) {
        for _ in 0..200 {
            if self.connected() {
                return;
            }
            self.advance();
        }
        panic!("the client did not reconnect");
    }

    /// Publishes `count` messages through node `node`, then lets everything flow.
    fn publish(&mut self, node: usize, count: u64, via: Via) {
        let sid = self.session();
        for _ in 0..count {
            self.published += 1;
            let fields = [("n", json!(self.published))];
            match via {
                Via::Publish => {
                    let r = self.nodes[node].publish(self.now, &sid, "message", &fields);
                    assert_eq!(r, Ok(0), "store mode numbers nothing itself");
                }
                Via::Prepare => {
                    let u = self.nodes[node]
                        .prepare(self.now, &sid, "message", &fields)
                        .unwrap();
                    self.append(u);
                }
            }
        }
        self.pump();
    }

    /// The client's connection drops (network); the node keeps running.
    fn cut(&mut self) {
        if let Some((n, conn)) = self.link.take() {
            self.nodes[n].handle_closed(self.now, conn);
            self.client.handle_closed(self.now, None, "cut");
        }
        self.pump();
    }

    /// Node `j` dies: its connections drop, its machine (and its queued notifications) are
    /// gone; a fresh machine takes its place.
    fn restart(&mut self, j: usize) {
        if let Some((n, _)) = self.link.filter(|(n, _)| *n == j) {
            let _ = n;
            self.link = None;
            self.client.handle_closed(self.now, None, "node died");
        }
        self.generation = self.generation.wrapping_add(1);
        self.nodes[j] = Server::new(node_config(self.ring, self.generation), self.now);
        self.pending[j].clear();
        self.pump();
    }

    /// The messages the store numbered, in its order: `(seq, n)`.
    fn numbered(&self) -> Vec<(u64, u64)> {
        let sid = self.session();
        self.store
            .numbered
            .iter()
            .filter(|((s, _), _)| *s == sid)
            .map(|((_, seq), n)| (*seq, *n))
            .collect()
    }

    /// Exactly once, in order, nothing lost or reset.
    fn assert_lossless(&self) {
        assert!(self.lost.is_empty(), "lost {:?}", self.lost);
        assert_eq!(self.resets, 0, "server reset reported");
        assert_eq!(self.replaced, 0, "session replaced");
        assert_eq!(self.messages, self.numbered(), "every event once, in the store's order");
        let ns: Vec<u64> = self.messages.iter().map(|(_, n)| *n).collect();
        assert_eq!(ns, (1..=self.published).collect::<Vec<_>>());
    }

    /// Every numbered message delivered once or inside a reported loss, never both; the
    /// client ends at the store's head.
    fn assert_delivered_or_reported(&self) {
        assert_eq!(self.resets, 0, "server reset reported");
        assert_eq!(self.replaced, 0, "session replaced");
        let in_lost = |seq: u64| self.lost.iter().any(|(a, b)| (*a..=*b).contains(&seq));
        let delivered: BTreeMap<u64, u64> = self.messages.iter().copied().collect();
        assert_eq!(delivered.len(), self.messages.len(), "a message delivered twice");
        for (seq, n) in self.numbered() {
            match (delivered.get(&seq), in_lost(seq)) {
                (Some(d), false) => assert_eq!(*d, n),
                (None, true) => {}
                (Some(_), true) => panic!("seq {seq} delivered and reported lost"),
                (None, false) => panic!(
                    "seq {seq} (message {n}) silently missing; lost {:?}",
                    self.lost
                ),
            }
        }
        let head = self.store.head(&self.session());
        assert_eq!(self.client.cursor(), Some(head), "the client caught up");
    }
}

// ------------------------------------------------------------------------------------------
// 1. Failovers over 20,000 events

fn failovers(versions: VersionRange, seed: u64) {
    const A: usize = 0;
    const B: usize = 1;
    let mut c = Cluster::new(versions, seed, 2, 4096, 4096);
    c.settle();
    let mut rng = Rng::from_u64(seed);
    let mut stream = |c: &mut Cluster, total: u64| {
        let mut left = total;
        while left > 0 {
            let k = left.min(1 + rng.next_u64() % 200);
            let node = (rng.next_u64() % 2) as usize;
            let via = if rng.next_u64() % 2 == 0 {
                Via::Publish
            } else {
                Via::Prepare
            };
            c.publish(node, k, via);
            left -= k;
        }
    };
    let attached = 4250;
    let away = 1000;
    // Leg 1 on A.
    stream(&mut c, attached);
    assert_eq!(c.link.map(|l| l.0), Some(A));
    // Failover 1: A dies (A' replaces it); B publishes while the client is away.
    c.restart(A);
    c.publish(B, away, Via::Publish);
    c.target = B;
    c.settle();
    stream(&mut c, attached);
    // Failover 2: the connection to B drops (B lives on, holding a stale copy); to A'.
    c.cut();
    c.publish(A, away / 2, Via::Publish);
    c.publish(B, away / 2, Via::Prepare);
    c.target = A;
    c.settle();
    stream(&mut c, attached);
    // Failover 3: A' dies; back to B, whose detached copy is 5,250 events old.
    c.restart(A);
    c.publish(B, away, Via::Publish);
    c.target = B;
    c.settle();
    assert_eq!(c.link.map(|l| l.0), Some(B));
    stream(&mut c, attached);
    assert_eq!(c.published, 20_000);
    c.assert_lossless();
    assert_eq!(c.gaps_seen, 0, "no live gap: every node appended in order");
    assert_eq!(c.client.stats().connections, 4, "one handshake per leg");
    assert_eq!(
        c.wanted.len(),
        3,
        "each resume (and only a resume) asked the store"
    );
    assert_eq!(c.unfillable_gaps, 0);
    assert_eq!(c.client.cursor(), Some(20_000));
}

#[test]
fn v2_client_fails_over_between_nodes_without_losing_or_repeating_an_event() {
    failovers(VersionRange::TETHER, 7);
}

#[test]
fn v1_client_fails_over_between_nodes_without_losing_or_repeating_an_event() {
    failovers(VersionRange::V1_ONLY, 8);
}
