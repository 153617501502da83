//! Requests (PROTOCOL.md §6.3, §8.1, §8.2, §14.11, §14.13, §14.14; PROTOCOL-v2.md
//! "Requests").

use std::time::Duration;

use serde_json::{json, Map};

use crate::check::probe::{trim, Frame, Got, Probe};
use crate::check::{ensure, live_until, Ctx, Finding, Step, REPLY};

/// How long an accepted request may take to get its final (the suite's own requests are
/// trivial turns).
const TURN: Duration = Duration::from_secs(3);

/// Sends a request; returns its `accepted` and `final` responses.
async fn request(ctx: &mut Ctx, a: &mut Probe, content: &str) -> Step<(String, Frame, Frame)> {
    let id = ctx.request_id();
    a.send(&json!({"type": "message", "content": content, "request_id": id}))
        .await?;
    let accepted = a
        .until(REPLY, "response accepted", |f| f.ty() == "response")
        .await?;
    ensure(accepted.status() == "accepted", || {
        format!(
            "the first response is {}, expected accepted",
            trim(&accepted.text)
        )
    })?;
    ensure(accepted.seq().is_some(), || {
        format!("accepted is not tracked (no seq): {}", trim(&accepted.text))
    })?;
    let fin = a
        .until(TURN, "response final", |f| f.ty() == "response")
        .await?;
    ensure(fin.status() == "final", || {
        format!("after accepted: {}, expected final", trim(&fin.text))
    })?;
    Ok((id, accepted, fin))
}

/// `message` with `request_id` gets a tracked `accepted`, then a tracked `final` with an
/// `outcome`.
pub(crate) async fn accepted_final(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    let (_, accepted, fin) = request(ctx, &mut a, "tether check").await?;
    a.close().await;
    ensure(fin.seq().is_some(), || {
        format!("final is not tracked: {}", trim(&fin.text))
    })?;
    ensure(fin.get("outcome")["status"].is_string(), || {
        format!("final has no outcome.status: {}", trim(&fin.text))
    })?;
    Ok(format!(
        "accepted seq {}, final seq {} ({})",
        accepted.get("seq"),
        fin.get("seq"),
        fin.get("outcome")["status"]
    ))
}

/// `final` echoes the `request_id` (without it a client can only correlate by order).
pub(crate) async fn final_request_id(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    let (id, _, fin) = request(ctx, &mut a, "tether check").await?;
    a.close().await;
    ensure(fin.get("request_id") == id.as_str(), || {
        format!(
            "final carries request_id {}, expected {id:?}",
            fin.get("request_id")
        )
    })?;
    Ok(format!("final request_id {id}"))
}

/// Resending a `request_id` gets `duplicate` with the original outcome, not a second turn.
pub(crate) async fn duplicate_outcome(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    let (id, _, fin) = request(ctx, &mut a, "tether check").await?;
    a.send(&json!({"type": "message", "content": "tether check", "request_id": id}))
        .await?;
    let dup = a
        .until(REPLY, "response duplicate", |f| f.ty() == "response")
        .await?;
    a.close().await;
    ensure(dup.status() == "duplicate", || {
        format!(
            "a resent request_id got {}, expected duplicate",
            trim(&dup.text)
        )
    })?;
    let same = (!fin.get("outcome").is_null() && dup.get("outcome") == fin.get("outcome"))
        || (!fin.get("content").is_null() && dup.get("content") == fin.get("content"));
    ensure(same, || {
        format!(
            "duplicate without the original outcome: {} (the final had outcome {} and content {})",
            trim(&dup.text),
            fin.get("outcome"),
            trim(&fin.get("content").to_string())
        )
    })?;
    Ok("duplicate with the original outcome".into())
}

/// Twelve resends of an answered request are answered, and never count as abuse.
pub(crate) async fn duplicates_not_abuse(ctx: &mut Ctx) -> Step {
    const RESENDS: usize = 12;
    let (mut a, _) = ctx.start().await?;
    let (id, _, _) = request(ctx, &mut a, "tether check").await?;
    for _ in 0..RESENDS {
        a.send(&json!({"type": "message", "content": "tether check", "request_id": id}))
            .await?;
    }
    let mut duplicates = 0;
    while duplicates < RESENDS {
        match a.recv(REPLY, "response duplicate").await? {
            Got::Frame(f) if f.ty() == "response" && f.status() == "duplicate" => duplicates += 1,
            Got::Frame(_) => {}
            Got::Ended(e) => {
                return Err(Finding::Fail(format!(
                    "the connection was closed ({e}) after {duplicates} of {RESENDS} duplicates"
                )))
            }
        }
    }
    a.send(&json!({"type": "ping"})).await?;
    a.until(REPLY, "pong", |f| f.ty() == "pong").await?;
    a.close().await;
    Ok(format!("{RESENDS} duplicates answered, connection up"))
}

/// An empty `content` is refused with a typed error, or answered to the end; never accepted
/// and left without a `final`. The session is not stalled: the next request completes.
pub(crate) async fn empty_content(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    let empty = ctx.request_id();
    a.send(&json!({"type": "message", "content": "", "request_id": empty}))
        .await?;
    let first = a
        .until(REPLY, "a reply to the empty request", |f| {
            f.ty() == "response" || f.ty() == "error"
        })
        .await?;
    let how = match (first.ty(), first.status()) {
        ("error", _) => {
            ensure(first.get("code").is_string(), || {
                format!("an error without a code: {}", trim(&first.text))
            })?;
            format!("refused: {}", first.get("code"))
        }
        ("response", "accepted") => {
            // Accepted: then it must be answered.
            a.until(TURN, "the final of the empty request", |f| {
                f.ty() == "response" && f.status() == "final"
            })
            .await
            .map_err(|_| {
                Finding::Fail(format!(
                    "the empty request was accepted and got no final within {} ms",
                    TURN.as_millis()
                ))
            })?;
            "accepted and answered".into()
        }
        _ => {
            return Err(Finding::Fail(format!(
                "the empty request got {}",
                trim(&first.text)
            )))
        }
    };
    request(ctx, &mut a, "tether check after empty").await?;
    a.close().await;
    Ok(format!("{how}; the next request completed"))
}

/// `error` frames are not tracked: no `cursor`/`seq`, no sequence number used up.
pub(crate) async fn errors_untracked(ctx: &mut Ctx) -> Step {
    let (mut a, session) = ctx.start().await?;
    let before = ctx.events(&mut a, &session.id, 1).await?;
    let last = before.last().copied().unwrap_or(0);
    // Two ways to provoke an error: a server_reply without its fields, an empty message.
    a.send(&json!({"type": "server_reply"})).await?;
    let rid = ctx.request_id();
    a.send(&json!({"type": "message", "content": "", "request_id": rid}))
        .await?;
    a.send(&json!({"type": "ping"})).await?;
    let mut errors = Vec::new();
    let mut tracked = Vec::new();
    loop {
        let f = a.frame(REPLY, "pong").await?;
        match f.ty() {
            "pong" => break,
            "error" => errors.push(f),
            _ => tracked.extend(f.seq()),
        }
    }
    if let Some(e) = errors.iter().find(|e| e.seq().is_some()) {
        return Err(Finding::Fail(format!(
            "an error frame is tracked: {}",
            trim(&e.text)
        )));
    }
    if errors.is_empty() {
        a.close().await;
        return Err(Finding::NotApplicable(
            "neither a bare server_reply nor an empty message provoked an error frame".into(),
        ));
    }
    // The next event continues the sequence where the tracked frames left it.
    let expected = tracked.last().copied().unwrap_or(last) + 1;
    let next = if ctx.has_producer() {
        let cursors = ctx.producer()?.publish(&session.id, 1, Map::new()).await?;
        live_until(
            &mut a,
            cursors.last().copied().flatten().unwrap_or(expected),
        )
        .await?
    } else {
        ctx.events(&mut a, &session.id, 1).await?
    };
    a.close().await;
    let got = next.iter().copied().find(|s| *s > last).unwrap_or(0);
    ensure(got == expected, || {
        format!(
            "after {} error frame(s) the next event has seq {got}, expected {expected}",
            errors.len()
        )
    })?;
    Ok(format!(
        "{} untracked error frame(s); next seq {got}",
        errors.len()
    ))
}
