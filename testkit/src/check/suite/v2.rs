//! What only v2 adds (PROTOCOL-v2.md "hello_ok", "Replay", "In-band repair").

use serde_json::json;

use crate::check::probe::trim;
use crate::check::{ensure, replays_until, Ctx, Step, REPLY};

/// A v2 resume ends its replay with `replay_end {cursor: head, replayed: n}`.
pub(crate) async fn replay_end(ctx: &mut Ctx) -> Step {
    ctx.v2_only()?;
    let (mut a, session) = ctx.start().await?;
    let seqs = ctx.events(&mut a, &session.id, 3).await?;
    a.close().await;
    let head = seqs.last().copied().unwrap_or(0);
    let (mut b, _) = ctx.resume(&session.id, Some(1)).await?;
    replays_until(&mut b, head).await?;
    let end = b.frame(REPLY, "replay_end").await?;
    b.close().await;
    ensure(end.ty() == "replay_end", || {
        format!(
            "after the last replay: {}, expected replay_end",
            trim(&end.text)
        )
    })?;
    ensure(
        end.get("cursor") == head && end.get("replayed") == head - 1,
        || {
            format!(
                "replay_end {}, expected cursor {head}, replayed {}",
                end.text,
                head - 1
            )
        },
    )?;
    ensure(end.get("lost_from").is_null(), || {
        format!(
            "replay_end reports a loss that did not happen: {}",
            end.text
        )
    })?;
    Ok(format!("replay_end cursor {head}, replayed {}", head - 1))
}

/// A v2 `hello_ok` carries `oldest_cursor` (`head + 1` when nothing is retained) and
/// `resync_required` (false when nothing was lost).
pub(crate) async fn oldest_cursor(ctx: &mut Ctx) -> Step {
    ctx.v2_only()?;
    let (mut a, session) = ctx.start().await?;
    let fresh = &session.hello_ok;
    ensure(
        fresh.get("oldest_cursor") == 1 && fresh.get("resync_required") == false,
        || {
            format!(
                "a new session: oldest_cursor {}, resync_required {} (expected 1, false)",
                fresh.get("oldest_cursor"),
                fresh.get("resync_required")
            )
        },
    )?;
    ctx.events(&mut a, &session.id, 2).await?;
    a.close().await;
    let (b, resumed) = ctx.resume(&session.id, Some(0)).await?;
    b.close().await;
    let h = &resumed.hello_ok;
    ensure(
        h.get("oldest_cursor") == 1 && h.get("resync_required") == false,
        || {
            format!(
                "resumed since 0: oldest_cursor {}, resync_required {} (expected 1, false)",
                h.get("oldest_cursor"),
                h.get("resync_required")
            )
        },
    )?;
    Ok("oldest_cursor 1, resync_required false".into())
}

/// `resync` replays the events already sent after `since`, then `replay_end`; the
/// connection stays up.
pub(crate) async fn resync(ctx: &mut Ctx) -> Step {
    ctx.v2_only()?;
    let (mut a, session) = ctx.start().await?;
    let seqs = ctx.events(&mut a, &session.id, 3).await?;
    let (first, head) = (seqs[0], seqs.last().copied().unwrap_or(0));
    a.send(&json!({"type": "resync", "since": first})).await?;
    let replayed = replays_until(&mut a, head).await?;
    let end = a.frame(REPLY, "replay_end").await?;
    a.close().await;
    let want: Vec<u64> = (first + 1..=head).collect();
    ensure(replayed == want, || {
        format!("resync since {first}: replayed {replayed:?}, expected {want:?}")
    })?;
    ensure(
        end.ty() == "replay_end" && end.get("cursor") == head,
        || {
            format!(
                "after the resync replays: {}, expected replay_end cursor {head}",
                trim(&end.text)
            )
        },
    )?;
    Ok(format!(
        "resync since {first}: {}..={head}, replay_end",
        first + 1
    ))
}
