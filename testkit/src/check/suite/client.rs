//! tether's own client against the server through the fault proxy: the end-to-end promise
//! (PROTOCOL.md §6.5; PROTOCOL-v2.md "Replay", "In-band repair").

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Map;
use tether_core::backoff::{BackoffConfig, Jitter};
use tether_core::client::{ClientConfig, Event, State};
use tether_core::version::VersionRange;

use crate::check::{Ctx, Finding, Step};
use crate::proxy::{Fault, FaultKind, FaultProxy, Schedule};

/// Events published, one at a time.
const EVENTS: u64 = 16;
/// Longest wait for one event after a fault (a resume included).
const AFTER_FAULT: Duration = Duration::from_secs(5);

/// Through two cuts mid-frame, a duplicated frame and (in v2) a dropped one, tether's client
/// gets every published event exactly once, in order, and nothing is reported lost.
///
/// A v1 client repairs a dropped frame by resuming on a new socket at once, while the server
/// may still be closing the old one: the PraisonAI gateway then orphans the session
/// (PROTOCOL.md §5.3, §14.2, checked on its own by `takeover.not-orphaned`). So v1 gets no
/// drop, and the client waits a fixed 100 ms before each reconnect, so that this check's
/// verdict is about the client's delivery, not about that race.
pub(crate) async fn exactly_once(ctx: &mut Ctx) -> Step {
    let producer = ctx.producer()?;
    let upstream = upstream(ctx.url())?;
    let v2 = ctx.version >= 2;
    let schedule = Schedule::new(1)
        .at(4, FaultKind::Cut)
        .and_then(|s| match v2 {
            true => s.at(7, FaultKind::Drop),
            false => Ok(s),
        })
        .and_then(|s| s.at(10, FaultKind::Duplicate))
        .and_then(|s| s.at(13, FaultKind::Cut))
        .map_err(|e| Finding::Fail(e.to_string()))?;
    let faults = if v2 { 4 } else { 3 };
    let dropped = |seq: u64| matches!(schedule.planned(seq), Some(Fault::Drop));
    let plan = schedule.clone();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, plan)
        .await
        .map_err(|e| Finding::Fail(format!("cannot start the fault proxy: {e}")))?;
    let url = through(ctx.url(), proxy.local_addr());
    ctx.note(format!(
        "client → {url}: tether's client through a proxy that cuts seq 4 and 13 mid-frame, \
         duplicates 10{}",
        if v2 { ", drops 7" } else { "" }
    ));
    let config = ClientConfig {
        versions: VersionRange::new(ctx.offer.0, ctx.offer.1)
            .map_err(|e| Finding::Fail(e.to_string()))?,
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
            jitter: Jitter::None,
            ..BackoffConfig::default()
        },
        seed: Some(tether_core::rng::seed_from_u64(1)),
        ..ClientConfig::new(ctx.options.agent_id.clone())
    };
    let mut options = tether_tokio::ConnectOptions::default();
    options.token = ctx.options.token.clone();
    let (client, mut events) =
        tether_tokio::connect(tether_tokio::TokioRuntime, url.as_str(), config, options)
            .map_err(|e| Finding::Fail(format!("the client did not start: {e}")))?;
    let mut seen = Seen::default();
    let session = loop {
        match tokio::time::timeout(AFTER_FAULT, events.next()).await {
            Ok(Some(Event::StateChanged(State::Connected { session_id, .. }))) => break session_id,
            Ok(Some(e)) => seen.note(ctx, &e)?,
            Ok(None) | Err(_) => {
                return Err(Finding::Fail("tether's client did not connect".into()))
            }
        }
    };
    let mut published = Vec::new();
    for _ in 0..EVENTS {
        let cursors = producer.publish(&session, 1, Map::new()).await?;
        let Some(Some(cursor)) = cursors.first().copied() else {
            return Err(Finding::Fail(format!(
                "an event published to the client's session was not recorded ({cursors:?})"
            )));
        };
        published.push(cursor);
        if dropped(cursor) {
            continue; // only the next event reveals the gap
        }
        while seen.delivered.last().is_none_or(|d| *d < cursor) {
            match tokio::time::timeout(AFTER_FAULT, events.next()).await {
                Ok(Some(e)) => seen.note(ctx, &e)?,
                Ok(None) => return Err(Finding::Fail("the client's events ended".into())),
                Err(_) => {
                    return Err(Finding::Fail(format!(
                        "event {cursor} was not delivered within {} ms (delivered so far {:?})",
                        AFTER_FAULT.as_millis(),
                        seen.delivered
                    )))
                }
            }
        }
    }
    client.disconnect().await;
    let injected: Vec<String> = proxy.injected().iter().map(ToString::to_string).collect();
    for line in &injected {
        ctx.note(format!("proxy: {line}"));
    }
    if seen.delivered != published {
        return Err(Finding::Fail(format!(
            "published {published:?}, delivered {:?}",
            seen.delivered
        )));
    }
    if !seen.reported.is_empty() {
        return Err(Finding::Fail(format!(
            "every event arrived, yet the client reported {}",
            seen.reported.join(", ")
        )));
    }
    if injected.len() != faults {
        return Err(Finding::Fail(format!(
            "the proxy injected {} of its {faults} faults",
            injected.len()
        )));
    }
    Ok(format!(
        "{EVENTS} events once each, in order, through {faults} faults and {} connections",
        proxy.connections()
    ))
}

/// What the client told the application.
#[derive(Default)]
struct Seen {
    delivered: Vec<u64>,
    /// Losses and resets reported (none may be, every event being retained).
    reported: Vec<String>,
}

impl Seen {
    fn note(&mut self, ctx: &Ctx, event: &Event) -> Step<()> {
        match event {
            Event::Delivered(d) => self.delivered.push(d.seq),
            Event::Lost { from, to } => self.reported.push(format!("lost {from}..={to}")),
            Event::ServerReset { cursor, head } => self
                .reported
                .push(format!("server reset (cursor {cursor}, head {head})")),
            Event::SessionReplaced { previous, current } => self
                .reported
                .push(format!("session replaced ({previous} → {current})")),
            Event::Closed(reason) => {
                return Err(Finding::Fail(format!("the client stopped: {reason:?}")))
            }
            Event::StateChanged(state) => ctx.note(format!("client: {state:?}")),
            Event::Gap { expected, received } => ctx.note(format!(
                "client: gap, expected {expected}, received {received}"
            )),
            _ => {}
        }
        Ok(())
    }
}

/// The server's address from its URL.
fn upstream(url: &str) -> Step<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Finding::Fail(format!("cannot resolve the server address {authority:?}")))
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    let path = rest.find(['/', '?']).map_or("", |i| &rest[i..]);
    format!("{scheme}://{addr}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_url_goes_through_the_proxy() {
        let proxy: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            through("ws://127.0.0.1:8765/ws", proxy),
            "ws://127.0.0.1:9/ws"
        );
        assert_eq!(
            through("ws://localhost:1/ws?x=1", proxy),
            "ws://127.0.0.1:9/ws?x=1"
        );
        assert_eq!(
            upstream("ws://127.0.0.1:8765/ws").unwrap(),
            "127.0.0.1:8765".parse().unwrap()
        );
    }
}
