//! cargo run --example tokio: a request answered, then three events delivered once, in order.
use futures::StreamExt;
use tether_tokio::ServerEvent::{Request, SessionCreated};
use tether_tokio::{connect, serve, ClientConfig, ConnectOptions, Event, Outcome, RequestOutcome};
use tether_tokio::{ServerConfig, TokioRuntime};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: agent "echo", one token, a free port (ws://127.0.0.1:PORT/ws).
    let token = Some("secret".to_owned());
    let config =
        ServerConfig { agents: vec!["echo".into()], auth_token: token, ..Default::default() };
    let mut gateway = serve(TokioRuntime, "127.0.0.1:0", config, Default::default()).await?;
    let url = format!("ws://{}/ws", gateway.local_addr);
    let server = gateway.server.clone();
    tokio::spawn(async move {
        // The application side: keep consuming these events (the server waits for this loop)
        // and do the work (publishing, answering) in tasks of its own.
        while let Some(event) = gateway.events.next().await {
            let server = server.clone();
            match event {
                SessionCreated { session: sid, .. } => {
                    let batch = (1..=3).map(|n| vec![("text", format!("event {n}").into())]);
                    let batch = batch.collect(); // one round trip to the server for three events
                    tokio::spawn(async move { server.publish_many(&sid, "message", batch).await });
                }
                Request { session, request_id: id, content, .. } => {
                    let answer = Outcome::ok(format!("echo: {content}"));
                    tokio::spawn(async move { server.respond(&session, &id, answer).await });
                }
                _ => {} // sessions resumed, detached, expired; presence changes; bad input...
            }
        }
    });

    // The client: reconnects by itself, resumes its session, delivers each event once.
    let options = ConnectOptions::default().token("secret");
    let (client, mut events) = connect(TokioRuntime, url, ClientConfig::new("echo"), options)?;
    if let RequestOutcome::Final { content: Some(answer), .. } = client.send("hello").await? {
        println!("{answer}"); // echo: hello
    }
    let mut received = 0;
    while let Some(event) = events.next().await {
        match event {
            Event::Delivered(e) if e.kind == "message" => {
                println!("#{} {}", e.seq, e.payload); // each sequence once, in order
                received += 1;
                if received == 3 {
                    client.disconnect().await;
                }
            }
            Event::Lost { from, to } => eprintln!("lost {from}..={to}"), // never silently
            Event::Closed(reason) => {
                println!("closed: {reason:?}");
                break;
            }
            _ => {} // connecting, connected, reconnecting, responses, gaps repaired...
        }
    }
    Ok(())
}
