//! Shared helpers of the adapter integration suite.
#![allow(dead_code)]

pub mod kits;
pub mod proxy;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{ClientConfig, ClosedReason, Event, State};
use tether_core::server::{ServerConfig, ServerEvent, ServerSnapshot, SessionId};
use tether_driver::{BoxFuture, ClientEvents, Server, ServerEvents};

#[allow(unused_imports)] // each test binary uses a different part
pub use kits::{background, fixtures, Gateway, Kit, ASYNC_STD, SMOL, TOKIO};

pub const TOKEN: &str = "integration-test-token";

/// Fails the test instead of hanging it (runtime-neutral timer).
pub async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    before(limit, f)
        .await
        .unwrap_or_else(|| panic!("test timed out after {limit:?}"))
}

/// `f`'s output if it finishes within `limit`, else `None` (runtime-neutral timer).
pub async fn before<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    let timer = async {
        async_io::Timer::after(limit).await;
    };
    futures::pin_mut!(f);
    futures::pin_mut!(timer);
    match futures::future::select(f, timer).await {
        futures::future::Either::Left((out, _)) => Some(out),
        futures::future::Either::Right(_) => None,
    }
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        auth_token: Some(TOKEN.into()),
        recovery_session_events: 200_000,
        recovery_session_bytes: 256 << 20,
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

impl Gateway {
    pub async fn start(kit: &'static dyn Kit, config: ServerConfig) -> Self {
        kit.serve("127.0.0.1:0".into(), config, None).await
    }

    pub async fn start_at(
        kit: &'static dyn Kit,
        addr: &str,
        config: ServerConfig,
        snapshot: Option<ServerSnapshot>,
    ) -> Self {
        kit.serve(addr.to_owned(), config, snapshot).await
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

    /// Publishes `count` numbered `message` events to `session` in a helper task.
    pub fn publisher(&self, session: SessionId, count: u64) -> BoxFuture<()> {
        publish_range(self.server.clone(), session, 1, count)
    }

    /// Graceful shutdown; returns the final snapshot once the port is free.
    pub async fn shutdown(self) -> ServerSnapshot {
        let snapshot = self.server.shutdown().await.expect("shutdown");
        self.accepting.await;
        snapshot
    }

    /// Moves the server's event stream out (e.g. into a helper task).
    pub fn take_events(&mut self) -> ServerEvents {
        std::mem::replace(&mut self.events, ServerEvents::closed())
    }
}

pub fn publish_range(server: Server, session: SessionId, first: u64, last: u64) -> BoxFuture<()> {
    background(async move {
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

/// Connecting attempts seen and the terminal reason.
pub async fn until_closed(mut events: ClientEvents) -> (usize, ClosedReason) {
    let mut attempts = 0;
    loop {
        match events.next().await.expect("events ended before Closed") {
            Event::StateChanged(State::Connecting { .. }) => attempts += 1,
            Event::Closed(reason) => return (attempts, reason),
            _ => {}
        }
    }
}

pub async fn wait_connected(events: &mut ClientEvents) {
    loop {
        if let Event::StateChanged(State::Connected { .. }) =
            events.next().await.expect("events ended")
        {
            return;
        }
    }
}

pub async fn wait_disconnected(events: &mut ClientEvents) {
    loop {
        if let Event::StateChanged(State::Disconnected { .. }) =
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
