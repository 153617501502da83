//! Authentication and the handshake (PROTOCOL.md §1.1, §1.2, §3, §5.1, §15).

use serde_json::json;

use crate::check::probe::{trim, Ended, Got};
use crate::check::{accepted, ensure, Ctx, Finding, Step, REPLY};

/// No token: `hello_error` `auth_required` before any client frame, then close 4003.
pub(crate) async fn missing_token(ctx: &mut Ctx) -> Step {
    refused_credentials(ctx, None).await
}

/// A wrong token: the same.
pub(crate) async fn wrong_token(ctx: &mut Ctx) -> Step {
    let wrong = format!("{}-wrong", ctx.options.token.clone().unwrap_or_default());
    refused_credentials(ctx, Some(&wrong)).await
}

async fn refused_credentials(ctx: &mut Ctx, token: Option<&str>) -> Step {
    if ctx.options.token.is_none() {
        return Err(Finding::NotApplicable(
            "no token given: the suite assumes the server admits anyone".into(),
        ));
    }
    let mut probe = ctx.open_with(token).await?;
    // Nothing is sent: the rejection must come on its own.
    let first = probe.frame(REPLY, "hello_error auth_required").await?;
    ensure(
        first.ty() == "hello_error" && first.get("code") == "auth_required",
        || {
            format!(
                "expected hello_error auth_required, got {}",
                trim(&first.text)
            )
        },
    )?;
    let (_, ended) = probe.until_end(REPLY).await?;
    match ended {
        Ended::Closed { code: 4003, .. } => Ok("hello_error auth_required, close 4003".into()),
        other => Err(Finding::Fail(format!(
            "after hello_error auth_required: {other}, expected close 4003"
        ))),
    }
}

/// `hello_ok` is the first frame after `hello` and has the reference keys and types, for a
/// new session: `resumed` false, `cursor` 0.
pub(crate) async fn hello_ok(ctx: &mut Ctx) -> Step {
    let reply = ctx.hello_reply(json!({})).await?;
    ensure(reply.ty() == "hello_ok", || {
        format!("the first frame after hello is {}", trim(&reply.text))
    })?;
    let v = &reply.value;
    let mut wrong = Vec::new();
    if !v["protocol"].is_u64() {
        wrong.push("protocol is not an integer");
    }
    let strings = |a: &serde_json::Value| {
        a.as_array()
            .is_some_and(|a| a.iter().all(serde_json::Value::is_string))
    };
    if !strings(&v["features"]["methods"]) {
        wrong.push("features.methods is not a list of strings");
    } else if !v["features"]["methods"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == "message"))
    {
        wrong.push("features.methods lacks message");
    }
    if !strings(&v["features"]["events"]) {
        wrong.push("features.events is not a list of strings");
    }
    if !v["policy"]["max_payload"].is_u64() || !v["policy"]["heartbeat_ms"].is_u64() {
        wrong.push("policy lacks integer max_payload and heartbeat_ms");
    }
    if v["session_id"].as_str().is_none_or(str::is_empty) {
        wrong.push("session_id is not a non-empty string");
    }
    if v["resumed"] != false {
        wrong.push("resumed is not false for a new session");
    }
    if v["cursor"] != 0 {
        wrong.push("cursor is not 0 for a new session");
    }
    ensure(wrong.is_empty(), || wrong.join("; "))?;
    Ok(format!(
        "protocol {}, session {}",
        v["protocol"],
        v["session_id"].as_str().unwrap_or("")
    ))
}

/// `hello_ok` carries `sequence` (equal to `cursor` for a new session), which a client needs
/// to check the first replayed sequence against.
pub(crate) async fn sequence(ctx: &mut Ctx) -> Step {
    let (probe, session) = ctx.start().await?;
    probe.close().await;
    let seq = session.hello_ok.get("sequence");
    ensure(!seq.is_null(), || "hello_ok has no sequence".into())?;
    ensure(seq.as_u64() == Some(session.cursor()), || {
        format!("hello_ok.sequence is {seq}, cursor is {}", session.cursor())
    })?;
    Ok(format!("sequence {seq}"))
}

/// An unknown agent id: `hello_error` `agent_not_found` (n/a when the server takes any id).
pub(crate) async fn unknown_agent(ctx: &mut Ctx) -> Step {
    let reply = ctx
        .hello_reply(json!({"agent_id": "tether-check-no-such-agent"}))
        .await?;
    match reply.ty() {
        "hello_error" if reply.get("code") == "agent_not_found" => {
            Ok("hello_error agent_not_found".into())
        }
        "hello_ok" => Err(Finding::NotApplicable(
            "the server accepts any agent id".into(),
        )),
        _ => Err(Finding::Fail(format!(
            "expected hello_error agent_not_found, got {}",
            trim(&reply.text)
        ))),
    }
}

/// No agent id at all: `hello_error` `agent_not_found`.
pub(crate) async fn missing_agent(ctx: &mut Ctx) -> Step {
    let reply = match ctx.hello_once(json!({"agent_id": null})).await? {
        Got::Frame(f) => f,
        Got::Ended(e) => {
            return Err(Finding::Fail(format!(
                "no hello_error, the connection ended: {e}"
            )))
        }
    };
    ensure(
        reply.ty() == "hello_error" && reply.get("code") == "agent_not_found",
        || {
            format!(
                "expected hello_error agent_not_found, got {}",
                trim(&reply.text)
            )
        },
    )?;
    Ok("hello_error agent_not_found".into())
}

/// A `session_id` the server does not know gets a new session under an id the server chose
/// (taking the client's would let anyone plant a session id), and two new sessions differ.
pub(crate) async fn server_chosen_ids(ctx: &mut Ctx) -> Step {
    let chosen = format!("tether-check-chosen-{}", ctx.request_id());
    let reply = ctx
        .hello_reply(json!({"session_id": chosen, "since": 0}))
        .await?;
    let session = accepted(reply)?;
    ensure(session.id != chosen, || {
        format!("the server adopted the client's session id {chosen:?}")
    })?;
    ensure(
        session.hello_ok.get("resumed") == false && session.cursor() == 0,
        || "an unknown session was reported as resumed or with a cursor".into(),
    )?;
    let (b, other) = ctx.start().await?;
    b.close().await;
    ensure(other.id != session.id, || {
        format!("two new sessions got the same id {}", other.id)
    })?;
    ensure(session.id.len() >= 16, || {
        format!("session id {:?} is too short to be unguessable", session.id)
    })?;
    Ok(format!("new session {} instead of {chosen}", session.id))
}
