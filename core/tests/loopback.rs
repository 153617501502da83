//! The client machine and the server machine against each other in a plain in-memory loop (no
//! sockets): publishes, drops, resumes while events keep coming, a restart from a snapshot, and
//! requests. The application on the client side must see every event exactly once, in order.

use std::time::{Duration, Instant};

use serde_json::json;
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{Client, ClientConfig, Event, RequestStatus, Transmit};
use tether_core::rng::Rng;
use tether_core::server::{
    ConnId, ConnectInfo, Outcome, OutcomeStatus, Server, ServerConfig, ServerEvent, ServerSnapshot,
    ServerTransmit, SessionId,
};
use tether_core::version::VersionRange;

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

struct Loop {
    now: Instant,
    client: Client,
    server: Server,
    server_config: ServerConfig,
    /// The connection currently carrying the client, if the link is up.
    conn: Option<ConnId>,
    next_conn: u64,
    session: Option<SessionId>,
    delivered: Vec<u64>,
    lost: Vec<(u64, u64)>,
    requests_seen_by_app: Vec<String>,
    outcomes: Vec<(String, RequestStatus)>,
    published: u64,
}

impl Loop {
    fn new(client_versions: VersionRange, seed: u64) -> Self {
        let now = origin();
        let server_config = ServerConfig {
            agents: vec!["echo".into()],
            seed: Some([seed as u8; 32]),
            auth_token: Some("t0ken".into()),
            recovery_session_events: 100_000,
            ..ServerConfig::default()
        };
        let client_config = ClientConfig {
            versions: client_versions,
            backoff: BackoffConfig {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(400),
                jitter: Jitter::Full,
                ..BackoffConfig::default()
            },
            seed: Some(tether_core::rng::seed_from_u64(seed)),
            ..ClientConfig::new("echo")
        };
        let mut l = Self {
            now,
            client: Client::new(client_config, now),
            server: Server::new(server_config.clone(), now),
            server_config,
            conn: None,
            next_conn: 1,
            session: None,
            delivered: vec![],
            lost: vec![],
            requests_seen_by_app: vec![],
            outcomes: vec![],
            published: 0,
        };
        l.pump();
        l
    }

    /// Moves frames both ways until both machines are quiet.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut busy = false;
            while let Some(t) = self.client.poll_transmit() {
                busy = true;
                match t {
                    Transmit::Open => {
                        let conn = ConnId(self.next_conn);
                        self.next_conn += 1;
                        self.conn = Some(conn);
                        let info = ConnectInfo {
                            query_token: Some("t0ken".into()),
                            ..ConnectInfo::default()
                        };
                        self.server.handle_connected(self.now, conn, info);
                        self.client.handle_connected(self.now);
                    }
                    Transmit::Frame(text) => {
                        if let Some(conn) = self.conn {
                            self.server.handle_text(self.now, conn, &text);
                        }
                    }
                    Transmit::Close { .. } => {
                        if let Some(conn) = self.conn.take() {
                            self.server.handle_closed(self.now, conn);
                        }
                    }
                }
            }
            while let Some((conn, t)) = self.server.poll_transmit() {
                busy = true;
                if Some(conn) != self.conn {
                    continue; // a dead connection's leftovers
                }
                match t {
                    ServerTransmit::Frame(text) => {
                        self.server.handle_sent(self.now, conn, text.len());
                        self.client.handle_text(self.now, &text);
                    }
                    ServerTransmit::Close { code, reason } => {
                        self.conn = None;
                        self.server.handle_closed(self.now, conn);
                        self.client.handle_closed(self.now, Some(code), &reason);
                    }
                }
            }
            while let Some(e) = self.server.poll_event() {
                busy = true;
                match e {
                    ServerEvent::SessionCreated { session, .. } => self.session = Some(session),
                    ServerEvent::Request {
                        session,
                        request_id,
                        content,
                        ..
                    } => {
                        self.requests_seen_by_app.push(request_id.clone());
                        let outcome = Outcome {
                            content: json!(format!("echo: {}", content.as_str().unwrap_or(""))),
                            status: OutcomeStatus::Ok,
                            error: None,
                        };
                        self.server
                            .respond(self.now, &session, &request_id, outcome)
                            .unwrap();
                    }
                    _ => {}
                }
            }
            while let Some(e) = self.client.poll_event() {
                busy = true;
                match e {
                    Event::Delivered(d) if d.kind == "message" => self.delivered.push(d.seq),
                    Event::Lost { from, to } => self.lost.push((from, to)),
                    Event::Request(u) if !matches!(u.status, RequestStatus::Accepted) => {
                        self.outcomes.push((u.request_id, u.status))
                    }
                    _ => {}
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the machines never went quiet");
    }

    /// Lets virtual time pass up to the next deadline of either machine.
    fn advance(&mut self) {
        let next = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next {
            self.now = self.now.max(t);
        }
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.pump();
    }

    fn settle(&mut self) {
        for _ in 0..50 {
            if self.client.is_connected() && self.conn.is_some() {
                return;
            }
            self.advance();
        }
        panic!("client did not reconnect");
    }

    fn publish(&mut self, n: u64) {
        let session = self.session.clone().expect("a session");
        for _ in 0..n {
            self.published += 1;
            let seq = self
                .server
                .publish(
                    self.now,
                    &session,
                    "message",
                    &[("content", json!(format!("event {}", self.published)))],
                )
                .unwrap();
            // Only `message` frames are counted; responses also consume sequence numbers.
            let _ = seq;
        }
        self.pump();
    }

    fn cut(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.server.handle_closed(self.now, conn);
            self.client.handle_closed(self.now, None, "cut");
        }
        self.pump();
    }

    fn restart_server_from_snapshot(&mut self) {
        self.cut();
        let snapshot: ServerSnapshot = self.server.snapshot(self.now);
        let json = serde_json::to_string(&snapshot).unwrap();
        let restored: ServerSnapshot = serde_json::from_str(&json).unwrap();
        self.server = Server::restore(self.server_config.clone(), restored, self.now).unwrap();
        self.pump();
    }

    fn message_seqs_delivered_once_in_order(&self) {
        assert!(self.lost.is_empty(), "lost {:?}", self.lost);
        assert!(
            self.delivered.windows(2).all(|w| w[0] < w[1]),
            "order: {:?}",
            self.delivered
        );
        assert_eq!(
            self.delivered.len() as u64,
            self.published,
            "every published event delivered once"
        );
    }
}

fn scenario(versions: VersionRange, seed: u64) {
    let mut l = Loop::new(versions, seed);
    l.settle();
    let mut rng = Rng::from_u64(seed);
    let mut sent = vec![];
    for round in 0..30 {
        l.publish(rng.next_u64() % 20);
        match rng.next_u64() % 5 {
            0 => {
                l.cut();
                l.publish(rng.next_u64() % 10); // produced while the client is away: kept
                l.settle();
            }
            1 if round % 7 == 3 => {
                l.publish(3);
                l.restart_server_from_snapshot();
                l.publish(2);
                l.settle();
            }
            2 => {
                let id = format!("req-{round}");
                l.client.send_with_id(l.now, id.clone(), "hi").unwrap();
                sent.push(id);
                l.pump();
                if rng.next_u64() % 2 == 0 {
                    l.cut(); // maybe before the answer: resent with the same id
                    l.settle();
                }
            }
            _ => l.advance(),
        }
    }
    l.cut();
    l.settle();
    l.message_seqs_delivered_once_in_order();
    let stats = l.client.stats();
    eprintln!(
        "seed {seed}: published {} delivered {} connections {} duplicates dropped {} requests {}",
        l.published,
        l.delivered.len(),
        stats.connections,
        stats.duplicates,
        sent.len()
    );
    assert!(
        stats.connections >= 2,
        "the scenario must reconnect at least once"
    );
    // Every request reached the server application exactly once and got its outcome once.
    let mut seen = l.requests_seen_by_app.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        l.requests_seen_by_app.len(),
        "a request reached the app twice"
    );
    assert_eq!(seen.len(), sent.len());
    let mut resolved: Vec<&String> = l.outcomes.iter().map(|(id, _)| id).collect();
    resolved.sort();
    resolved.dedup();
    assert_eq!(resolved.len(), sent.len(), "outcomes: {:?}", l.outcomes);
    assert!(l.outcomes.iter().all(|(_, s)| matches!(
        s,
        RequestStatus::Final { .. }
            | RequestStatus::Duplicate {
                outcome: Some(_),
                ..
            }
    )));
}

#[test]
fn v2_client_and_server_deliver_everything_once_through_drops_resumes_and_a_restart() {
    for seed in 0..40 {
        scenario(VersionRange::TETHER, seed);
    }
}

#[test]
fn v1_client_against_tether_server_also_delivers_everything_once() {
    for seed in 100..140 {
        scenario(VersionRange::V1_ONLY, seed);
    }
}
