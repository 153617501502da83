//! Bad input (PROTOCOL.md §2.1, §3.4, §10, §14.8, §14.9; PROTOCOL-v2.md "Errors and closes").

use serde_json::json;

use crate::check::probe::{trim, Ended, Got, Probe};
use crate::check::{ensure, Ctx, Finding, Step, REPLY};

/// What a bad frame must get: a typed `error` frame, then a close frame. A `pong` means the
/// frame (a padded ping) was let through.
async fn typed_error_then_close(mut a: Probe, what: &str) -> Step {
    let mut error = None;
    let ended = loop {
        match a.recv(REPLY, "an error frame and a close").await {
            Ok(Got::Ended(e)) => break e,
            Ok(Got::Frame(f)) if f.ty() == "pong" => {
                a.close().await;
                return Err(Finding::Fail(format!(
                    "{what} was processed (answered {})",
                    f.text
                )));
            }
            Ok(Got::Frame(f)) => {
                if error.is_none() && f.ty() == "error" && f.get("code").is_string() {
                    error = Some(f);
                }
            }
            Err(_) => {
                return Err(Finding::Fail(format!(
                    "after {what} the connection stayed open without a close"
                )))
            }
        }
    };
    match (&ended, error) {
        (Ended::Closed { code, .. }, Some(e)) => {
            Ok(format!("error {}, then close {code}", e.get("code")))
        }
        (Ended::Closed { code, .. }, None) => Err(Finding::Fail(format!(
            "{what}: closed {code} without a typed error frame first"
        ))),
        (Ended::Dropped(_), _) => Err(Finding::Fail(format!("{what}: {ended}"))),
    }
}

/// Malformed JSON: a typed error, then a close (not a dropped socket).
pub(crate) async fn invalid_json(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    a.send_text(r#"{"type":"message","content":"#.into())
        .await?;
    typed_error_then_close(a, "malformed JSON").await
}

/// JSON that is not an object: a typed error, then a close.
pub(crate) async fn non_object(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    a.send_text("[1,2,3]".into()).await?;
    typed_error_then_close(a, "a JSON array").await
}

/// A binary frame: a typed error, then a close.
pub(crate) async fn binary(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    a.send_binary(br#"{"type":"ping"}"#.to_vec()).await?;
    typed_error_then_close(a, "a binary frame").await
}

/// A frame over the advertised `policy.max_payload`: a typed error, then a close.
pub(crate) async fn oversized(ctx: &mut Ctx) -> Step {
    let Some(max) = ctx.policy["max_payload"].as_u64() else {
        return Err(Finding::NotApplicable(
            "the server advertises no policy.max_payload".into(),
        ));
    };
    let (mut a, _) = ctx.start().await?;
    // A ping padded to one byte over the limit: answered with a pong if it is let through.
    let head = r#"{"type":"ping","pad":""#;
    let pad = (max as usize + 1).saturating_sub(head.len() + 2);
    a.send_text(format!("{head}{}\"}}", "x".repeat(pad)))
        .await?;
    typed_error_then_close(
        a,
        &format!("a frame of {} bytes (max_payload {max})", max + 1),
    )
    .await
}

/// Bad input on one connection leaves another one, on its own session, untouched.
pub(crate) async fn neighbour_unaffected(ctx: &mut Ctx) -> Step {
    let (mut n, neighbour) = ctx.start().await?;
    let (mut x, _) = ctx.start().await?;
    x.send_text("{not json".into()).await?;
    // Whatever X gets, the neighbour must not feel it.
    let _ = x.until_end(REPLY).await;
    n.send(&json!({"type": "ping"})).await?;
    n.until(REPLY, "pong", |f| f.ty() == "pong").await?;
    let seqs = ctx.events(&mut n, &neighbour.id, 1).await?;
    n.close().await;
    Ok(format!("neighbour answered and got seq {:?}", seqs.last()))
}

/// An unknown frame type is ignored or refused with an error; the connection stays up.
pub(crate) async fn unknown_type(ctx: &mut Ctx) -> Step {
    let (mut a, _) = ctx.start().await?;
    a.send(&json!({"type": "tether-check-unknown-type"}))
        .await?;
    a.send(&json!({"type": "ping"})).await?;
    let pong = a.until(REPLY, "pong", |f| f.ty() == "pong").await?;
    a.close().await;
    Ok(format!("still answering ({})", pong.text))
}

/// A `message` before the handshake gets an `error` (not a dropped socket), and the handshake
/// can follow on the same connection.
pub(crate) async fn before_handshake(ctx: &mut Ctx) -> Step {
    let mut a = ctx.open().await?;
    a.send(&json!({"type": "message", "content": "tether check"}))
        .await?;
    let first = a.frame(REPLY, "an error frame").await?;
    ensure(first.ty() == "error", || {
        format!("a message before hello got {}", trim(&first.text))
    })?;
    let hello = ctx.hello(json!({}));
    let reply = ctx.handshake(&mut a, hello).await?;
    a.close().await;
    ensure(reply.ty() == "hello_ok", || {
        format!("the hello after it got {}", trim(&reply.text))
    })?;
    Ok(format!("{}; then hello_ok", trim(&first.text)))
}
