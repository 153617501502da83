//! Connects to a gateway, sends one message, and prints every event until `count` delivered
//! events or a terminal error.
//!
//! `cargo run -p tether-tokio --example follow -- ws://127.0.0.1:8765/ws TOKEN AGENT COUNT`

use futures::StreamExt;
use tether_tokio::{connect, ClientConfig, ConnectOptions, Event, TokioRuntime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).map_or("ws://127.0.0.1:8765/ws", String::as_str);
    let mut options = ConnectOptions::default();
    options.token = args.get(2).cloned();
    let agent = args.get(3).map_or("echo", String::as_str);
    let count: usize = args.get(4).and_then(|c| c.parse().ok()).unwrap_or(10);
    let (client, mut events) = connect(TokioRuntime, url, ClientConfig::new(agent), options)?;
    let sender = client.clone();
    tokio::spawn(async move {
        let outcome = sender.send("hello from tether").await;
        eprintln!("send outcome: {outcome:?}");
    });
    let mut delivered = 0;
    while let Some(event) = events.next().await {
        match &event {
            Event::Delivered(d) => {
                delivered += 1;
                println!("{} #{} {}", d.kind, d.seq, d.payload);
                if delivered >= count {
                    client.disconnect().await;
                }
            }
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
