//! Who holds a session: takeover, ownership, leave, a second hello (PROTOCOL.md §3.1, §3.4,
//! §5.3, §8.6, §14.2, §14.7, §14.18; PROTOCOL-v2.md "Errors and closes").

use std::time::Duration;

use serde_json::{json, Map};

use crate::check::probe::{trim, Got};
use crate::check::{accepted, ensure, live_until, Ctx, Finding, Step, REPLY};

/// A second socket resuming a session closes the first one (which still answers nothing).
pub(crate) async fn old_socket_closed(ctx: &mut Ctx) -> Step {
    let (mut a, session) = ctx.start().await?;
    let (b, _) = ctx.resume(&session.id, Some(session.cursor())).await?;
    // A still holding the session would answer this ping.
    let _ = a.send(&json!({"type": "ping"})).await;
    let verdict = loop {
        match a.recv(REPLY, "a close of the old socket").await {
            Ok(Got::Ended(e)) => break Ok(format!("the old socket got {e}")),
            Ok(Got::Frame(f)) if f.ty() == "pong" => {
                break Err(Finding::Fail(
                    "after another socket resumed the session, the old one is still open (it \
                     answered a ping)"
                        .into(),
                ))
            }
            Ok(Got::Frame(_)) => {}
            Err(e) => break Err(e),
        }
    };
    a.abort();
    b.close().await;
    verdict
}

/// After a takeover, the old socket closing does not take the session with it: the new one
/// still gets its requests answered and its events.
pub(crate) async fn not_orphaned(ctx: &mut Ctx) -> Step {
    let (a, session) = ctx.start().await?;
    let (mut b, _) = ctx.resume(&session.id, Some(session.cursor())).await?;
    // The old socket goes away for good, cleanly (the server has processed it once closed).
    a.close().await;
    let id = ctx.request_id();
    b.send(&json!({"type": "message", "content": "tether check", "request_id": id}))
        .await?;
    b.until(
        Duration::from_secs(3),
        "the final of a request on the new socket",
        |f| f.ty() == "response" && f.status() == "final",
    )
    .await
    .map_err(|_| {
        Finding::Fail(
            "after the old socket closed, a request on the new one got no final: the session \
             went with the old socket"
                .into(),
        )
    })?;
    if ctx.has_producer() {
        let cursors = ctx.producer()?.publish(&session.id, 1, Map::new()).await?;
        let Some(Some(last)) = cursors.last().copied() else {
            return Err(Finding::Fail(format!(
                "an event published to the session after the old socket closed was not \
                 recorded (cursors {cursors:?})"
            )));
        };
        live_until(&mut b, last).await?;
    }
    b.close().await;
    Ok("the new socket keeps the session".into())
}

/// A session cannot be resumed under another agent id.
pub(crate) async fn other_agent(ctx: &mut Ctx) -> Step {
    let other = ctx
        .options
        .other_agent
        .clone()
        .unwrap_or_else(|| "tether-check-other-agent".into());
    let (a, session) = ctx.start().await?;
    a.close().await;
    let reply = ctx
        .hello_reply(json!({"agent_id": other, "session_id": session.id, "since": 0}))
        .await?;
    match reply.ty() {
        "hello_error" if reply.get("code") == "agent_not_found" => {
            Err(Finding::NotApplicable(format!(
                "the server does not know agent {other:?} (give another one with --other-agent)"
            )))
        }
        "hello_error" => Ok(format!("refused: {}", reply.get("code"))),
        "hello_ok" if reply.get("session_id") != session.id.as_str() => {
            Ok("a new session instead".into())
        }
        _ => Err(Finding::Fail(format!(
            "agent {other:?} was handed the session of agent {:?}: {}",
            ctx.options.agent_id,
            trim(&reply.text)
        ))),
    }
}

/// Another principal (another token) cannot resume a session.
pub(crate) async fn other_principal(ctx: &mut Ctx) -> Step {
    let Some(other) = ctx.options.other_token.clone() else {
        return Err(Finding::NotApplicable(
            "needs a token of another principal (--other-token)".into(),
        ));
    };
    let (mut a, session) = ctx.start().await?;
    ctx.events(&mut a, &session.id, 1).await?;
    a.close().await;
    let mut b = ctx.open_with(Some(&other)).await?;
    let hello = ctx.hello(json!({"session_id": session.id, "since": 0}));
    let reply = ctx.handshake(&mut b, hello).await?;
    b.close().await;
    match reply.ty() {
        "hello_error" => Ok(format!("refused: {}", reply.get("code"))),
        "hello_ok" if reply.get("session_id") != session.id.as_str() => {
            Ok("a new session instead".into())
        }
        "hello_ok" => Err(Finding::Fail(
            "another principal resumed the session (and was sent its replay)".into(),
        )),
        _ => Err(Finding::Fail(format!(
            "expected hello_error, got {}",
            trim(&reply.text)
        ))),
    }
}

/// `leave` is acknowledged with `left` naming the session.
pub(crate) async fn leave(ctx: &mut Ctx) -> Step {
    let (mut a, session) = ctx.start().await?;
    a.send(&json!({"type": "leave"})).await?;
    let left = a.until(REPLY, "left", |f| f.ty() == "left").await?;
    a.close().await;
    ensure(left.get("session_id") == session.id.as_str(), || {
        format!(
            "left names {}, expected {}",
            left.get("session_id"),
            session.id
        )
    })?;
    Ok(left.text)
}

/// A second `hello` on a socket is answered and the socket stays usable; the first session
/// stays resumable.
pub(crate) async fn second_hello(ctx: &mut Ctx) -> Step {
    let (mut a, first) = ctx.start().await?;
    let hello = ctx.hello(json!({}));
    let reply = ctx.handshake(&mut a, hello).await?;
    ensure(matches!(reply.ty(), "hello_ok" | "hello_error"), || {
        format!("a second hello got {}", trim(&reply.text))
    })?;
    a.send(&json!({"type": "ping"})).await?;
    a.until(REPLY, "pong", |f| f.ty() == "pong").await?;
    a.close().await;
    let resumed = accepted(
        ctx.hello_reply(json!({"session_id": first.id, "since": 0}))
            .await?,
    )?;
    ensure(resumed.id == first.id, || {
        format!(
            "the first session could not be resumed after a second hello (got {})",
            resumed.id
        )
    })?;
    Ok(format!(
        "answered with {}; the first session resumed",
        reply.ty()
    ))
}
