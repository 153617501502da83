//! Version negotiation (PROTOCOL.md §3.1, §13, §14.7; PROTOCOL-v2.md "Negotiation").

use serde_json::{json, Value};

use crate::check::probe::{trim, Got};
use crate::check::{ensure, Ctx, Finding, Step};

/// The highest version both ranges hold is chosen: probe the server's top with a wide range,
/// then check it is kept for a range that ends there and lowered for one that ends below.
pub(crate) async fn highest_common(ctx: &mut Ctx) -> Step {
    let top = negotiated(ctx, json!(1), json!(99)).await?;
    ensure((1..=99).contains(&top), || {
        format!("offered 1..=99, the server chose {top}")
    })?;
    let same = negotiated(ctx, json!(top), json!(top)).await?;
    ensure(same == top, || {
        format!("offered {top}..={top}, the server chose {same}")
    })?;
    if top > 1 {
        let below = negotiated(ctx, json!(1), json!(top - 1)).await?;
        ensure(below == top - 1, || {
            format!("offered 1..={}, the server chose {below}", top - 1)
        })?;
        return Ok(format!(
            "v{top} for 1..=99 and {top}..={top}, v{below} for 1..={below}"
        ));
    }
    Ok(format!("v{top} for 1..=99 and {top}..={top}"))
}

/// A hello with these version fields; the version of the `hello_ok` that answers it.
async fn negotiated(ctx: &mut Ctx, min: Value, max: Value) -> Step<u64> {
    let reply = ctx
        .hello_reply(json!({"protocol_min": min, "protocol_max": max}))
        .await?;
    ensure(reply.ty() == "hello_ok", || {
        format!("offered {min}..={max}: {}", trim(&reply.text))
    })?;
    reply.get("protocol").as_u64().ok_or_else(|| {
        Finding::Fail(format!(
            "hello_ok.protocol is not an integer: {}",
            reply.get("protocol")
        ))
    })
}

/// A range entirely above the server's: `protocol_unsupported` with `downgrade_client`.
pub(crate) async fn too_new(ctx: &mut Ctx) -> Step {
    let (code, step) = refused(ctx, json!(1000), json!(1000)).await?;
    ensure(
        code == "protocol_unsupported" && step == "downgrade_client",
        || format!("refused with {code}/{step}, expected protocol_unsupported/downgrade_client"),
    )?;
    Ok(format!("{code}/{step}"))
}

/// A range entirely below the server's (0..=0): `protocol_unsupported` with `upgrade_client`,
/// or `invalid_protocol_hello` (0 is no version).
pub(crate) async fn too_old(ctx: &mut Ctx) -> Step {
    let (code, step) = refused(ctx, json!(0), json!(0)).await?;
    let ok = (code == "protocol_unsupported" && step == "upgrade_client")
        || code == "invalid_protocol_hello";
    ensure(ok, || {
        format!(
            "refused with {code}/{step}, expected protocol_unsupported/upgrade_client \
             (or invalid_protocol_hello)"
        )
    })?;
    Ok(format!("{code}/{step}"))
}

/// `"1"`, `"2"`: refused with a typed `hello_error`.
pub(crate) async fn strings(ctx: &mut Ctx) -> Step {
    refused_any(ctx, json!("1"), json!("2")).await
}

/// `1`, `1.5`: refused with a typed `hello_error`.
pub(crate) async fn floats(ctx: &mut Ctx) -> Step {
    refused_any(ctx, json!(1), json!(1.5)).await
}

/// `true`, `true`: refused (a server comparing loosely takes `true` for 1 and echoes it).
pub(crate) async fn booleans(ctx: &mut Ctx) -> Step {
    refused_any(ctx, json!(true), json!(true)).await
}

/// `-1`, `1`: refused.
pub(crate) async fn negatives(ctx: &mut Ctx) -> Step {
    refused_any(ctx, json!(-1), json!(1)).await
}

/// `2`, `1` (min > max): refused.
pub(crate) async fn inverted(ctx: &mut Ctx) -> Step {
    refused_any(ctx, json!(2), json!(1)).await
}

async fn refused_any(ctx: &mut Ctx, min: Value, max: Value) -> Step {
    let (code, step) = refused(ctx, min, max).await?;
    Ok(format!("{code}/{step}"))
}

/// Offers `min..=max`; the `hello_error` code and next step, or a failure describing what
/// the server did instead (accepted it, dropped the connection, sent something else).
async fn refused(ctx: &mut Ctx, min: Value, max: Value) -> Step<(String, String)> {
    let reply = match ctx
        .hello_once(json!({"protocol_min": min, "protocol_max": max}))
        .await?
    {
        Got::Frame(f) => f,
        Got::Ended(e) => {
            return Err(Finding::Fail(format!(
                "offered {min}..={max}: no hello_error, the connection ended: {e}"
            )))
        }
    };
    match reply.ty() {
        "hello_error" => {
            let code = reply.get("code").as_str().unwrap_or("").to_owned();
            ensure(!code.is_empty(), || {
                format!("hello_error without a code: {}", trim(&reply.text))
            })?;
            let step = reply.get("next_step").as_str().unwrap_or("-").to_owned();
            Ok((code, step))
        }
        "hello_ok" => Err(Finding::Fail(format!(
            "offered {min}..={max}: accepted, hello_ok.protocol = {}",
            reply.get("protocol")
        ))),
        _ => Err(Finding::Fail(format!(
            "offered {min}..={max}: expected hello_error, got {}",
            trim(&reply.text)
        ))),
    }
}
