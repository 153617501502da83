//! Store mode in memory: several server machines in store mode
//! ([`ServerConfig::external_store`]) — the "nodes" — share a [`MemoryStore`], and one client
//! machine fails over between them.
//!
//! [`MemoryStore`] does what the Redis adapter (`tether-redis`) does, so it is also the reference
//! an adapter for another store can be compared with: per session a metadata record (the head is
//! written "set if absent" and advanced only by appends), an event log trimmed to `keep`
//! entries, and a request-id map (seen, then the outcome). [`Cluster`] plays the adapter's
//! part around the machines (their [`StoreRequest`]s): it answers `ReadSession` from the store
//! (then hands in what was appended after the read, closing the race between the read and the
//! notifications), numbers `Append`s, offers every append to every node (`handle_store_event`),
//! filling reported gaps from the log, and answers `CheckRequest`s. Knobs make the store late or unavailable
//! ([`Cluster::lazy`], [`Cluster::hold_lookups`], [`Cluster::failing_lookups`]).
//!
//! What the client's application sees is checked after every step against the simulator's
//! reference model (the same as in [`sim`](crate::sim): delivered sequences strictly increase,
//! nothing twice, every hole delivered or reported, every request update names a request that
//! is still open, one terminal event per connection) and recorded in [`Cluster::seen`] for
//! the test's own assertions. The harness panics on a broken invariant: it is meant for tests.
//!
//! ```
//! use std::time::Instant;
//! use tether_core::version::VersionRange;
//! use tether_testkit::cluster::{client_config, Cluster, ClusterConfig, Via};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let origin = Instant::now(); // the one clock read: the cluster's time is virtual
//! let client = client_config(VersionRange::TETHER, 7);
//! let mut c = Cluster::new(origin, client, ClusterConfig::new(2));
//! c.settle(); // the client is attached to node 0
//! c.publish(0, 10, Via::Publish);
//! c.restart(0); // node 0 dies; node 1 publishes while the client is away
//! c.publish(1, 5, Via::Prepare);
//! c.target = 1;
//! c.settle();
//! c.assert_lossless(); // 15 events, each once, in the store's order
//! assert_eq!(c.wanted.len(), 1, "the resume on node 1 asked the store");
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{
    Client, ClientConfig, DisconnectCause, Event, RequestStatus, SendError, State, Transmit,
};
use tether_core::cursor::ResumeState;
use tether_core::rng::Rng;
use tether_core::server::{
    ConnId, ConnectInfo, Ingest, Outcome, Recorded, Server, ServerConfig, ServerEvent,
    ServerTransmit, SessionId, StoreRequest, StoreUnavailable, StoredSession, Unsequenced,
};
use tether_core::version::VersionRange;
use tether_core::wire::ConnectErrorCode;

use crate::sim::{ClientModel, Req};

mod store;

pub use store::MemoryStore;

/// The shared token every node of a [`Cluster`] accepts.
pub const TOKEN: &str = "t0ken";

/// What the client presents at upgrade time ([`TOKEN`] in the query).
pub fn connect_info() -> ConnectInfo {
    ConnectInfo {
        query_token: Some(TOKEN.into()),
        ..ConnectInfo::default()
    }
}

/// A node's config: store mode, agent `echo`, [`TOKEN`], a window of `ring` events per
/// session, and `seed` for its session ids.
pub fn node_config(ring: usize, seed: u8) -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        seed: Some([seed; 32]),
        auth_token: Some(TOKEN.into()),
        recovery_session_events: ring,
        external_store: true,
        ..ServerConfig::default()
    }
}

/// A client config for agent `echo` offering `versions`, with a short backoff (50 ms to 400 ms,
/// full jitter) so failovers take little virtual time.
pub fn client_config(versions: VersionRange, seed: u64) -> ClientConfig {
    ClientConfig {
        versions,
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            jitter: Jitter::Full,
            ..BackoffConfig::default()
        },
        seed: Some(tether_core::rng::seed_from_u64(seed)),
        ..ClientConfig::new("echo")
    }
}

// ------------------------------------------------------------------------------------------
// Nodes, store and one client

/// How a publish reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Server::publish` (it returns 0 and asks the store with `StoreRequest::Append`).
    Publish,
    /// `Server::prepare`, appended by the caller.
    Prepare,
}

/// A store lookup waiting to be answered ([`Cluster::hold_lookups`]): the store was read when
/// the node asked.
#[derive(Debug, Clone)]
pub struct HeldLookup {
    /// The node that asked.
    pub node: usize,
    /// The connection whose handshake waits.
    pub conn: ConnId,
    /// The session asked for.
    pub session: SessionId,
    /// The answer, as read at the time.
    pub answer: Result<Option<StoredSession>, StoreUnavailable>,
}

/// A request the server application received: (node, session, request id, content).
pub type AppRequest = (usize, SessionId, String, Value);

/// What the client's application saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Delivered sequences of the current session, in order.
    pub seqs: Vec<u64>,
    /// Delivered `message`s: (sequence, `n`).
    pub messages: Vec<(u64, u64)>,
    /// `Lost { from, to }` ranges.
    pub lost: Vec<(u64, u64)>,
    /// `ServerReset` events.
    pub resets: u64,
    /// `SessionReplaced` events.
    pub replaced: u64,
    /// `Gap` events.
    pub gaps: u64,
    /// Request updates: (request id, status).
    pub updates: Vec<(String, RequestStatus)>,
    /// Rejection codes of refused handshakes.
    pub rejections: Vec<ConnectErrorCode>,
    /// Delivered `response` frames, as JSON.
    pub responses: Vec<Value>,
}

impl Seen {
    /// The statuses one request went through.
    pub fn updates_of(&self, id: &str) -> Vec<&RequestStatus> {
        self.updates
            .iter()
            .filter(|(r, _)| r == id)
            .map(|(_, s)| s)
            .collect()
    }
}

/// How many nodes, and their bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Server machines in store mode.
    pub nodes: usize,
    /// Each node's recovery window per session, in events.
    pub ring: usize,
    /// Events the store's log retains per session.
    pub keep: usize,
}

impl ClusterConfig {
    /// `nodes` nodes with roomy bounds (1,024 events in the window, 4,096 in the log).
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes,
            ring: 1024,
            keep: 4096,
        }
    }
}

/// Store-mode nodes, a [`MemoryStore`] and one client, in memory, on a virtual clock. See the
/// [module docs](self).
pub struct Cluster {
    /// The virtual time.
    pub now: Instant,
    /// The shared store.
    pub store: MemoryStore,
    /// The nodes' machines.
    pub nodes: Vec<Server>,
    /// The client's machine.
    pub client: Client,
    /// The node and connection carrying the client, if the link is up.
    pub link: Option<(usize, ConnId)>,
    /// The node the client's next connection lands on (the load balancer's choice).
    pub target: usize,
    /// Notifications wait in [`Cluster::pending`] until [`Cluster::deliver`] (else they are
    /// offered at once).
    pub lazy: bool,
    /// Notifications not yet offered, per node (with [`Cluster::lazy`]).
    pub pending: Vec<Vec<(SessionId, Recorded)>>,
    /// Lookups wait in [`Cluster::held`] until [`Cluster::release_lookups`] (else they are
    /// answered at once).
    pub hold_lookups: bool,
    /// Lookups not yet answered (with [`Cluster::hold_lookups`]).
    pub held: Vec<HeldLookup>,
    /// This many next lookups fail with `StoreUnavailable`.
    pub failing_lookups: u32,
    /// Every `SessionWanted`: (node, session).
    pub wanted: Vec<(usize, SessionId)>,
    /// The server application answers each request at once on the node that handed it out.
    pub auto_respond: bool,
    /// Every request the server application received.
    pub app_requests: Vec<AppRequest>,
    /// Gaps whose range the store had already trimmed (the connection was closed to resume).
    pub unfillable_gaps: u64,
    /// `message`s published so far (their `n` runs from 1).
    pub published: u64,
    /// What the client's application saw.
    pub seen: Seen,
    ring: usize,
    /// Seed of the next node machine (each new machine gets a new one).
    generation: u8,
    next_conn: u64,
    model: ClientModel,
    last_cursor: Option<u64>,
    last_sequence: Option<u64>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes.len())
            .field("link", &self.link)
            .field("target", &self.target)
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster at virtual time `origin`: nodes built from [`node_config`], a new client on its
    /// way to node 0.
    pub fn new(origin: Instant, client: ClientConfig, config: ClusterConfig) -> Self {
        Self::resuming(origin, client, ResumeState::default(), config)
    }

    /// Like [`Cluster::new`] with a client restarted from a persisted `state` (it rejoins its
    /// session and resends the saved requests).
    pub fn resuming(
        origin: Instant,
        client: ClientConfig,
        state: ResumeState,
        config: ClusterConfig,
    ) -> Self {
        // The application continues what it saw before the restart.
        let mut model = ClientModel::new(client.backoff.max);
        model.session.clone_from(&state.session_id);
        model.pos = state.sequence.unwrap_or(0);
        for p in &state.outbox {
            model.requests.insert(p.request_id.clone(), Req::Pending);
        }
        let client = Client::with_resume_state(client, state, origin);
        let mut c = Self {
            now: origin,
            store: MemoryStore::new(config.keep),
            nodes: (0..config.nodes)
                .map(|i| Server::new(node_config(config.ring, i as u8 + 1), origin))
                .collect(),
            client,
            link: None,
            target: 0,
            lazy: false,
            pending: vec![Vec::new(); config.nodes],
            hold_lookups: false,
            held: Vec::new(),
            failing_lookups: 0,
            wanted: Vec::new(),
            auto_respond: true,
            app_requests: Vec::new(),
            unfillable_gaps: 0,
            published: 0,
            seen: Seen::default(),
            ring: config.ring,
            generation: config.nodes as u8,
            next_conn: 1,
            model,
            last_cursor: None,
            last_sequence: None,
        };
        c.pump();
        c
    }

    /// The client's session.
    ///
    /// # Panics
    /// If the client has none yet.
    pub fn session(&self) -> SessionId {
        SessionId(self.client.session_id().expect("a session").to_owned())
    }

    /// Moves frames, events and store traffic until everything is quiet, checking the client's
    /// events against the reference model.
    ///
    /// # Panics
    /// On a broken invariant, or if the machines never go quiet.
    pub fn pump(&mut self) {
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
                        self.nodes[self.target].handle_connected(now, conn, connect_info());
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
                let requests: Vec<StoreRequest> =
                    std::iter::from_fn(|| self.nodes[i].poll_store_request()).collect();
                busy |= !requests.is_empty();
                for r in requests {
                    self.on_store_request(i, r);
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

    /// Plays the store adapter's part for one request of node `i`.
    pub fn on_store_request(&mut self, i: usize, r: StoreRequest) {
        let now = self.now;
        match r {
            StoreRequest::ReadSession { conn, session } => {
                self.wanted.push((i, session.clone()));
                let answer = if self.failing_lookups > 0 {
                    self.failing_lookups -= 1;
                    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
                    Err(StoreUnavailable::new(refused))
                } else {
                    Ok(self.store.read(&session))
                };
                if self.hold_lookups {
                    self.held.push(HeldLookup {
                        node: i,
                        conn,
                        session,
                        answer,
                    });
                } else {
                    self.answer(i, conn, &session, answer);
                }
            }
            StoreRequest::WriteSession { session: s, .. } => {
                let session = s.session_id.clone();
                self.store.write_meta(*s);
                self.nodes[i].handle_store_written(now, &session);
            }
            StoreRequest::Append(u) => self.append(u),
            StoreRequest::CheckRequest {
                conn,
                session,
                request_id,
                content,
            } => {
                let seen = self.store.check_request(&session, &request_id);
                self.nodes[i].handle_store_check(now, conn, &session, &request_id, content, seen);
            }
            StoreRequest::WriteOutcome {
                session,
                request_id,
                outcome,
            } => {
                self.store
                    .requests
                    .insert((session, request_id), Some(outcome));
            }
            _ => {}
        }
    }

    /// Plays the server application's part for one event of node `i`.
    pub fn on_node_event(&mut self, i: usize, e: ServerEvent) {
        let ServerEvent::Request {
            session,
            request_id,
            content,
            ..
        } = e
        else {
            return;
        };
        let now = self.now;
        self.app_requests.push((
            i,
            session.clone(),
            request_id.clone(),
            content.clone().into(),
        ));
        if self.auto_respond {
            let outcome = Outcome::ok(json!(format!("answer to {content}")));
            if let Err(e) = self.nodes[i].respond(now, &session, &request_id, outcome) {
                panic!("respond({request_id}) on node {i}: {e}");
            }
        }
    }

    /// `handle_store_session`, then the catch-up of what was appended after the read.
    fn answer(
        &mut self,
        i: usize,
        conn: ConnId,
        session: &SessionId,
        answer: Result<Option<StoredSession>, StoreUnavailable>,
    ) {
        let head = answer
            .as_ref()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.head));
        self.nodes[i].handle_store_session(self.now, conn, answer);
        if let Some(head) = head {
            for r in self.store.since(session, head + 1) {
                self.offer(i, session, r);
            }
        }
    }

    /// Answers every held lookup (as read when it was asked), then pumps.
    pub fn release_lookups(&mut self) {
        for h in std::mem::take(&mut self.held) {
            self.answer(h.node, h.conn, &h.session, h.answer);
        }
        self.pump();
    }

    /// Numbers `u` in the store and notifies every node (or queues the notifications, with
    /// [`Cluster::lazy`]).
    pub fn append(&mut self, u: Unsequenced) {
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
        match self.nodes[j].handle_store_event(self.now, sid, rec) {
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
            if let Some((_, conn)) = self.link.filter(|(n, _)| *n == j) {
                if let Err(e) = self.nodes[j].disconnect(self.now, conn, 1012, "store_gap") {
                    panic!("disconnect on node {j}: {e}");
                }
            }
            return;
        }
        for r in missing {
            match self.nodes[j].handle_store_event(self.now, sid, r) {
                Ok(Ingest::Gap { expected }) => panic!("gap at {expected} while filling in order"),
                Ok(_) => {}
                Err(e) => panic!("a frame numbered by the store was refused: {e}"),
            }
        }
    }

    /// Delivers up to `k` queued notifications to node `j`, in an order drawn from `rng`
    /// (late and out of order), then pumps.
    pub fn deliver(&mut self, j: usize, k: usize, rng: &mut Rng) {
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

    /// Delivers every queued notification, in order, then pumps.
    pub fn deliver_all(&mut self) {
        for j in 0..self.nodes.len() {
            for (sid, rec) in std::mem::take(&mut self.pending[j]) {
                self.offer(j, &sid, rec);
            }
        }
        self.pump();
    }

    fn on_client_event(&mut self, e: Event) {
        if let Err(what) = self.model.observe(&e) {
            panic!("the client's application saw a broken promise: {what}");
        }
        let session = self.client.session_id().map(|s| SessionId(s.to_owned()));
        let seen = &mut self.seen;
        match e {
            Event::Delivered(d) => {
                seen.seqs.push(d.seq);
                let v: Value = serde_json::from_str(&d.payload).expect("payload is JSON");
                if d.kind == "message" {
                    let n = v["n"].as_u64().expect("n");
                    let numbered = session.and_then(|s| self.store.numbered.get(&(s, d.seq)));
                    assert_eq!(numbered, Some(&n), "seq {} carries the wrong event", d.seq);
                    seen.messages.push((d.seq, n));
                } else if d.kind == "response" {
                    seen.responses.push(v);
                }
            }
            Event::Lost { from, to } => seen.lost.push((from, to)),
            Event::Gap { .. } => seen.gaps += 1,
            Event::ServerReset { .. } => seen.resets += 1,
            Event::SessionReplaced { .. } => {
                // A new numbering begins (the assertions still count the replacement).
                seen.replaced += 1;
                seen.seqs.clear();
                self.last_cursor = None;
                self.last_sequence = None;
            }
            Event::Request(u) => seen.updates.push((u.request_id, u.status)),
            Event::StateChanged(State::Disconnected {
                cause: DisconnectCause::Rejected(r),
            }) => seen.rejections.push(r.code),
            Event::Closed(reason) => panic!("the client stopped: {reason:?}"),
            _ => {}
        }
    }

    /// The client sends a request with this id (a resend if the id was used before), then
    /// everything flows.
    pub fn send(&mut self, id: &str, content: impl Into<Value>) -> Result<(), SendError> {
        self.client.send_with_id(self.now, id, content.into())?;
        self.model.requests.insert(id.to_owned(), Req::Pending);
        self.pump();
        Ok(())
    }

    /// Lets virtual time pass up to the next deadline of any machine.
    pub fn advance(&mut self) {
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

    /// Whether the client is connected and its link is up.
    pub fn connected(&self) -> bool {
        self.client.is_connected() && self.link.is_some()
    }

    /// Lets time pass until the client is attached again (through [`Cluster::target`]).
    ///
    /// # Panics
    /// If it does not reconnect within 200 deadlines.
    pub fn settle(&mut self) {
        for _ in 0..200 {
            if self.connected() {
                return;
            }
            self.advance();
        }
        panic!("the client did not reconnect");
    }

    /// Answers held lookups, lets the client reach [`Cluster::target`] and every queued
    /// notification land.
    ///
    /// # Panics
    /// If that does not happen within a few rounds.
    pub fn finish(&mut self) {
        self.hold_lookups = false;
        self.release_lookups();
        for _ in 0..10 {
            self.deliver_all();
            self.settle();
            self.deliver_all();
            if self.connected() && self.pending.iter().all(Vec::is_empty) {
                return;
            }
        }
        panic!("the cluster did not settle");
    }

    /// Publishes `count` messages (`{"n": 1, 2, ...}` across the run) into the client's
    /// session through node `node`, then lets everything flow.
    ///
    /// # Panics
    /// If the node refuses the publish.
    pub fn publish(&mut self, node: usize, count: u64, via: Via) {
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
                        .unwrap_or_else(|e| panic!("prepare on node {node}: {e}"));
                    self.append(u);
                }
            }
        }
        self.pump();
    }

    /// The client's connection drops (network); the node keeps running.
    pub fn cut(&mut self) {
        if let Some((n, conn)) = self.link.take() {
            self.nodes[n].handle_closed(self.now, conn);
            self.client.handle_closed(self.now, None, "cut");
        }
        self.pump();
    }

    /// The client's side of the connection dies but the node never hears of it (its
    /// connection stays attached).
    pub fn half_open(&mut self) {
        if self.link.take().is_some() {
            self.client.handle_closed(self.now, None, "half-open");
            self.pump();
        }
    }

    /// Node `j` dies: its connections drop, its machine (and its queued notifications) are
    /// gone; a fresh machine takes its place.
    pub fn restart(&mut self, j: usize) {
        if self.link.is_some_and(|(n, _)| n == j) {
            self.link = None;
            self.client.handle_closed(self.now, None, "node died");
        }
        self.generation = self.generation.wrapping_add(1);
        self.nodes[j] = Server::new(node_config(self.ring, self.generation), self.now);
        self.pending[j].clear();
        self.pump();
    }

    /// The messages the store numbered in the client's session, in its order: `(seq, n)`.
    pub fn numbered(&self) -> Vec<(u64, u64)> {
        let sid = self.session();
        self.store
            .numbered
            .iter()
            .filter(|((s, _), _)| *s == sid)
            .map(|((_, seq), n)| (*seq, *n))
            .collect()
    }

    /// Exactly once, in order, nothing lost, reset or replaced.
    ///
    /// # Panics
    /// Otherwise.
    pub fn assert_lossless(&self) {
        let seen = &self.seen;
        assert!(seen.lost.is_empty(), "lost {:?}", seen.lost);
        assert_eq!(seen.resets, 0, "server reset reported");
        assert_eq!(seen.replaced, 0, "session replaced");
        assert_eq!(
            seen.messages,
            self.numbered(),
            "every event once, in the store's order"
        );
        let ns: Vec<u64> = seen.messages.iter().map(|(_, n)| *n).collect();
        assert_eq!(ns, (1..=self.published).collect::<Vec<_>>());
    }

    /// Every numbered message delivered once or inside a reported loss, never both; the
    /// client ends at the store's head.
    ///
    /// # Panics
    /// Otherwise.
    pub fn assert_delivered_or_reported(&self) {
        let seen = &self.seen;
        assert_eq!(seen.resets, 0, "server reset reported");
        assert_eq!(seen.replaced, 0, "session replaced");
        let in_lost = |seq: u64| seen.lost.iter().any(|(a, b)| (*a..=*b).contains(&seq));
        let delivered: BTreeMap<u64, u64> = seen.messages.iter().copied().collect();
        assert_eq!(
            delivered.len(),
            seen.messages.len(),
            "a message delivered twice"
        );
        for (seq, n) in self.numbered() {
            match (delivered.get(&seq), in_lost(seq)) {
                (Some(d), false) => assert_eq!(*d, n),
                (None, true) => {}
                (Some(_), true) => panic!("seq {seq} delivered and reported lost"),
                (None, false) => panic!(
                    "seq {seq} (message {n}) silently missing; lost {:?}",
                    seen.lost
                ),
            }
        }
        let head = self.store.head(&self.session());
        assert_eq!(self.client.cursor(), Some(head), "the client caught up");
    }
}
