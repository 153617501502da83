//! The other end of the example's socket: a tether server machine driven by hand, with an
//! application that publishes three events to each new session and three more when the link
//! is cut.
use std::collections::VecDeque;
use std::time::Instant;

use serde_json::json;
use tether_core::server::{ConnId, ConnectInfo, Server, ServerConfig, ServerEvent};
use tether_core::server::{ServerTransmit, SessionId};

/// What the client's side of the socket reads.
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// A close frame: code and reason.
    Close(u16, String),
}

/// A server machine behind one in-memory socket at a time.
pub struct Gateway {
    server: Server,
    conn: ConnId,
    session: Option<SessionId>,
    to_client: VecDeque<Incoming>,
}

impl Gateway {
    pub fn new(now: Instant) -> Self {
        let server = Server::new(ServerConfig::default(), now);
        Self { server, conn: ConnId(0), session: None, to_client: VecDeque::new() }
    }

    /// A new socket: a new connection id.
    pub fn open(&mut self, now: Instant) {
        self.conn = ConnId(self.conn.0 + 1);
        self.server.handle_connected(now, self.conn, ConnectInfo::default());
        self.drain(now);
    }

    pub fn send(&mut self, now: Instant, text: &str) {
        self.server.handle_text(now, self.conn, text);
        self.drain(now);
    }

    pub fn close(&mut self, now: Instant) {
        self.server.handle_closed(now, self.conn);
        self.drain(now);
    }

    /// The link dies under both ends; the application goes on publishing.
    pub fn cut(&mut self, now: Instant) {
        self.to_client.clear();
        self.close(now);
        self.publish(now, &["four", "five", "six"]);
    }

    pub fn receive(&mut self) -> Option<Incoming> {
        self.to_client.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
        self.drain(now);
    }

    fn publish(&mut self, now: Instant, texts: &[&str]) {
        let session = self.session.as_ref().expect("a session");
        for text in texts {
            self.server
                .publish(now, session, "message", &[("text", json!(text))])
                .expect("published");
        }
        self.drain(now);
    }

    /// The drive contract: after every input, drain the transmits and the events.
    fn drain(&mut self, now: Instant) {
        loop {
            while let Some((conn, transmit)) = self.server.poll_transmit() {
                if conn != self.conn {
                    continue; // for a socket that is gone
                }
                match transmit {
                    ServerTransmit::Frame(text) => {
                        self.server.handle_sent(now, conn, text.len()); // written: flow control
                        self.to_client.push_back(Incoming::Text(text.as_str().to_owned()));
                    }
                    ServerTransmit::Close { code, reason } => {
                        self.to_client.push_back(Incoming::Close(code, reason));
                    }
                }
            }
            let Some(event) = self.server.poll_event() else { return };
            if let ServerEvent::SessionCreated { session, .. } = event {
                self.session = Some(session);
                self.publish(now, &["one", "two", "three"]);
            }
        }
    }
}
