//! Shared helpers of the adapter integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_tokio::{
    serve, Bound, ClientConfig, ClientEvents, Event, Server, ServerConfig, ServerEvent,
    ServerEvents, SessionId,
};

pub const TOKEN: &str = "integration-test-token";

/// Fails the test instead of hanging it.
pub async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .expect("test timed out")
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        auth_token: Some(TOKEN.into()),
        ring_max_events: 200_000,
        ring_max_bytes: 256 << 20,
        ..ServerConfig::default()
    }
}

pub fn client_config() -> ClientConfig {
    ClientConfig {
        backoff: BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
            jitter: Jitter::Full,
            ..BackoffConfig::default()
        },
        ..ClientConfig::new("echo")
    }
}

pub struct Gateway {
    pub server: Server,
    pub events: ServerEvents,
    pub addr: std::net::SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(config: ServerConfig) -> Self {
        Self::start_at("127.0.0.1:0", config, None).await
    }

    pub async fn start_at(
        addr: &str,
        config: ServerConfig,
        snapshot: Option<tether_tokio::ServerSnapshot>,
    ) -> Self {
        let Bound {
            server,
            events,
            local_addr,
            accepting,
        } = serve(addr, config, snapshot).await.expect("serve");
        Self {
            server,
            events,
            addr: local_addr,
            accepting,
        }
    }

    /// Graceful shutdown; returns the final snapshot once the port is free.
    pub async fn shutdown(self) -> tether_tokio::ServerSnapshot {
        let snapshot = self.server.shutdown().await.expect("shutdown");
        self.accepting.await.expect("accept loop");
        snapshot
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The next session created on this server.
    pub async fn next_session(&mut self) -> SessionId {
        loop {
            match self.events.next().await.expect("server events ended") {
                ServerEvent::SessionCreated { session, .. } => return session,
                _ => continue,
            }
        }
    }

    /// Publishes `count` numbered `message` events to `session` in a background task.
    pub fn publisher(&self, session: SessionId, count: u64) -> tokio::task::JoinHandle<()> {
        publish_range(self.server.clone(), session, 1, count)
    }
}

pub fn publish_range(
    server: Server,
    session: SessionId,
    first: u64,
    last: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in first..=last {
            server
                .publish(&session, "message", vec![("n".into(), json!(n))])
                .await
                .expect("publish");
        }
    })
}

/// The `n` field of delivered `message` events, until `count` of them; panics on a loss.
pub async fn collect_delivered(events: &mut ClientEvents, count: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match events.next().await.expect("client events ended") {
            Event::Delivered(d) if d.kind == "message" => {
                let v: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
                out.push(v["n"].as_u64().expect("n"));
            }
            Event::Lost { from, to } => panic!("lost {from}..={to} after {} events", out.len()),
            Event::Closed(reason) => panic!("closed: {reason:?}"),
            _ => {}
        }
    }
    out
}
pub mod proxy;

/// A server-event stream placeholder for when a test moves the real one into a task.
pub fn empty_events() -> ServerEvents {
    // Starting a throwaway hub is the only way to build one; it is never used.
    let (_, events) =
        tether_driver::Server::start(tether_tokio::TokioRuntime, ServerConfig::default(), None)
            .unwrap();
    events
}

/// Connecting attempts seen and the terminal reason.
pub async fn until_closed(mut events: ClientEvents) -> (usize, tether_core::client::ClosedReason) {
    let mut attempts = 0;
    loop {
        match events.next().await.expect("events ended before Closed") {
            Event::StateChanged(tether_core::client::State::Connecting { .. }) => attempts += 1,
            Event::Closed(reason) => return (attempts, reason),
            _ => {}
        }
    }
}

pub async fn wait_connected(events: &mut ClientEvents) {
    loop {
        if let Event::StateChanged(tether_core::client::State::Connected { .. }) =
            events.next().await.expect("events ended")
        {
            return;
        }
    }
}

pub async fn wait_disconnected(events: &mut ClientEvents) {
    loop {
        if let Event::StateChanged(tether_core::client::State::Disconnected { .. }) =
            events.next().await.expect("events ended")
        {
            return;
        }
    }
}

/// Reads a raw socket until it closes: the last `error` frame's code and the close code.
pub async fn read_until_close<S>(ws: &mut S) -> (Option<String>, Option<u16>)
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use tokio_tungstenite::tungstenite::Message;
    let mut code = None;
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    code = v["code"].as_str().map(str::to_owned);
                }
            }
            Ok(Message::Close(frame)) => return (code, frame.map(|f| u16::from(f.code))),
            Ok(_) => {}
            Err(_) => return (code, None),
        }
    }
    (code, None)
}
