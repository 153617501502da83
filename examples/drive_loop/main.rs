//! cargo run --example drive_loop: the link is cut after three events; three more are published
//! while the client is away, and its resume replays them.
mod gateway;

use std::time::Instant;

use gateway::{Gateway, Incoming};
use tether_core::client::{Client, ClientConfig, Event, Transmit};

fn main() {
    let mut now = Instant::now(); // the application's clock: the core never reads one
    let mut client = Client::new(ClientConfig::new("echo"), now);
    let mut socket = Gateway::new(now); // stands for a WebSocket to a tether server
    let mut delivered = 0;
    while delivered < 6 {
        // After every input, drain what the machine wants written, then what it reports.
        while let Some(transmit) = client.poll_transmit() {
            match transmit {
                Transmit::Open => {
                    socket.open(now);
                    client.handle_connected(now);
                }
                Transmit::Frame(text) => socket.send(now, &text), // feed; flush once per batch
                Transmit::Close { .. } => socket.close(now),
            }
        }
        while let Some(event) = client.poll_event() {
            let Event::Delivered(e) = event else { continue }; // state changes, gaps, losses...
            println!("#{} {}{}", e.seq, e.payload, if e.replayed { " (replayed)" } else { "" });
            delivered += 1;
            if delivered == 3 {
                println!("-- link cut; three events are published while the client is away");
                socket.cut(now);
                client.handle_closed(now, None, "link cut");
            }
        }
        // Then wait for the socket or the machine's next deadline, whichever comes first.
        match socket.receive() {
            Some(Incoming::Text(text)) => client.handle_text(now, &text),
            Some(Incoming::Close(code, reason)) => client.handle_closed(now, Some(code), &reason),
            None => {
                // Nothing to read: time passes to the next deadline (a reconnect, a ping...).
                let next = client.poll_timeout().into_iter().chain(socket.poll_timeout()).min();
                now = now.max(next.expect("the client always has a deadline"));
                client.handle_timeout(now);
                socket.handle_timeout(now);
            }
        }
    }
}
