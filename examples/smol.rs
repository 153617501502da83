//! cargo run --example smol. On async-std: `AsyncStdRuntime`, `async_std::task::{block_on, spawn}`.
use futures::StreamExt;
use tether_async_std::{connect, serve, ClientConfig, Outcome, RequestOutcome};
use tether_async_std::{ConnectOptions, ServerEvent::Request, ServerOptions, SmolRuntime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let options = ServerOptions::default();
        let mut gateway = serve(SmolRuntime, "127.0.0.1:0", Default::default(), options).await?;
        let url = format!("ws://{}/ws", gateway.local_addr);
        let server = gateway.server.clone();
        smol::spawn(async move {
            while let Some(event) = gateway.events.next().await {
                if let Request { session, request_id: id, content, .. } = event {
                    let server = server.clone();
                    let answer = Outcome::ok(format!("echo: {content}"));
                    smol::spawn(async move { server.respond(&session, &id, answer).await })
                        .detach();
                }
            }
        })
        .detach();
        let options = ConnectOptions::default();
        let (client, _events) = connect(SmolRuntime, url, ClientConfig::new("echo"), options)?;
        if let RequestOutcome::Final { content: Some(answer), .. } = client.send("hello").await? {
            println!("{answer}"); // echo: hello
        }
        client.disconnect().await;
        Ok(())
    })
}
