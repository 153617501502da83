//! Embedding the core: the client and server machines driven by hand over an in-memory link and
//! a virtual clock. The link is cut after three events; three more are published while the
//! client is away, and its resume replays them. Run it: cargo run --example drive_loop
use std::time::Instant;

use serde_json::json;
use tether_core::client::{Client, ClientConfig, Event, Transmit};
use tether_core::server::{ConnId, ConnectInfo, Server, ServerConfig, ServerEvent, ServerTransmit};

fn main() {
    let mut now = Instant::now(); // the application's clock: the core never reads one
    let mut client = Client::new(ClientConfig::new("echo"), now);
    let mut server = Server::new(ServerConfig::default(), now);
    let (mut conn, mut session, mut delivered) = (ConnId(0), None, 0);
    let mut to_publish = vec!["one", "two", "three"];
    while delivered < 6 {
        let mut moved = false;
        // After every input, drain both machines' outputs until they are quiet (the contract).
        while let Some(transmit) = client.poll_transmit() {
            moved = true;
            match transmit {
                Transmit::Open => {
                    conn = ConnId(conn.0 + 1); // a new socket
                    server.handle_connected(now, conn, ConnectInfo::default());
                    client.handle_connected(now);
                }
                Transmit::Frame(text) => server.handle_text(now, conn, &text),
                Transmit::Close { .. } => server.handle_closed(now, conn),
            }
        }
        while let Some((to, transmit)) = server.poll_transmit() {
            moved = true;
            match transmit {
                ServerTransmit::Frame(text) if to == conn => {
                    server.handle_sent(now, to, text.len()); // written: flow control counts it
                    client.handle_text(now, text.as_str());
                }
                ServerTransmit::Close { code, reason } if to == conn => {
                    client.handle_closed(now, Some(code), &reason)
                }
                _ => {} // for a connection that is gone
            }
        }
        while let Some(event) = server.poll_event() {
            moved = true;
            if let ServerEvent::SessionCreated { session: created, .. } = event {
                session = Some(created);
            }
        }
        if let Some(session) = &session {
            for text in to_publish.drain(..) {
                server.publish(now, session, "message", &[("text", json!(text))]).unwrap();
                moved = true;
            }
        }
        while let Some(event) = client.poll_event() {
            moved = true;
            let Event::Delivered(e) = event else { continue }; // state changes, gaps, losses...
            println!("#{} {}{}", e.seq, e.payload, if e.replayed { " (replayed)" } else { "" });
            delivered += 1;
            if delivered == 3 {
                println!("-- link cut; three events are published while the client is away");
                client.handle_closed(now, None, "link cut");
                server.handle_closed(now, conn);
                to_publish = vec!["four", "five", "six"];
            }
        }
        if !moved {
            // Nothing to do until the next deadline (the client's reconnect timer, heartbeats).
            let next = [client.poll_timeout(), server.poll_timeout()].into_iter().flatten().min();
            now = now.max(next.expect("the client always has a deadline"));
            client.handle_timeout(now);
            server.handle_timeout(now);
        }
    }
}
