//! Heartbeats and reaping (PROTOCOL.md §7, §14.15, §15).

use std::time::{Duration, Instant};

use serde_json::{json, Map};

use crate::check::probe::{Ended, Got};
use crate::check::{Ctx, Finding, Step, REPLY};

/// `{"type":"ping"}` is answered with `{"type":"pong"}`.
pub(crate) async fn ping_answered(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    a.send(&json!({"type": "ping"})).await?;
    let pong = a.until(REPLY, "pong", |f| f.ty() == "pong").await?;
    a.close().await;
    Ok(pong.text)
}

/// The server pings within its advertised `heartbeat_ms`.
pub(crate) async fn server_pings(ctx: &mut Ctx) -> Step {
    let beat = ctx.heartbeat(2)?;
    let (mut a, _) = ctx.start().await?;
    a.auto_pong = false;
    let since = Instant::now();
    let within = beat * 2 + Duration::from_millis(500);
    a.until(within, "a ping from the server", |f| f.ty() == "ping")
        .await?;
    let after = since.elapsed();
    a.send(&json!({"type": "pong"})).await?;
    a.close().await;
    Ok(format!(
        "first ping after {} ms (heartbeat_ms {})",
        after.as_millis(),
        beat.as_millis()
    ))
}

/// A client that sends nothing (not even pongs) is closed after a few heartbeats.
pub(crate) async fn reaps_silent(ctx: &mut Ctx) -> Step {
    let beat = ctx.heartbeat(4)?;
    let (mut a, _) = ctx.start().await?;
    a.auto_pong = false;
    let since = Instant::now();
    let (_, ended) = a
        .until_end(beat * 4 + Duration::from_secs(1))
        .await
        .map_err(|_| {
            Finding::Fail(format!(
                "a silent client was still connected after {} ms (heartbeat_ms {})",
                (beat * 4 + Duration::from_secs(1)).as_millis(),
                beat.as_millis()
            ))
        })?;
    reaped(ended, since, beat)
}

/// A silent client is reaped even while the server keeps sending it events: only inbound
/// traffic proves the client is alive.
pub(crate) async fn inbound_only(ctx: &mut Ctx) -> Step {
    let beat = ctx.heartbeat(4)?;
    let producer = ctx.producer()?;
    let (mut a, session) = ctx.start().await?;
    a.auto_pong = false;
    a.set_quiet(true);
    let since = Instant::now();
    let limit = beat * 4 + Duration::from_secs(1);
    let mut tick = tokio::time::interval(beat / 4);
    let ended = loop {
        tokio::select! {
            _ = tick.tick() => {
                if since.elapsed() > limit {
                    a.set_quiet(false);
                    return Err(Finding::Fail(format!(
                        "a silent client that was sent events every {} ms was still connected \
                         after {} ms (heartbeat_ms {}): outbound traffic kept it alive",
                        (beat / 4).as_millis(),
                        limit.as_millis(),
                        beat.as_millis()
                    )));
                }
                // A refused publish (the session is being reaped) is not the point here.
                let _ = producer.publish(&session.id, 1, Map::new()).await;
            }
            got = a.recv(limit, "the end of the connection") => match got? {
                Got::Frame(_) => {}
                Got::Ended(e) => break e,
            },
        }
    };
    a.set_quiet(false);
    reaped(ended, since, beat)
}

fn reaped(ended: Ended, since: Instant, beat: Duration) -> Step {
    match ended {
        Ended::Closed { code, reason } => Ok(format!(
            "closed {code} {reason:?} after {} ms (heartbeat_ms {})",
            since.elapsed().as_millis(),
            beat.as_millis()
        )),
        dropped => Err(Finding::Fail(format!(
            "reaped without a close frame: {dropped}"
        ))),
    }
}
