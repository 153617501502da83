//! Resuming a session (PROTOCOL.md §3.3, §5, §6; PROTOCOL-v2.md "hello_ok", "Replay",
//! "Live events").

use serde_json::{json, Map, Value};

use std::time::Duration;

use crate::check::control::Producer;
use crate::check::probe::{trim, Got, Probe};
use crate::check::{ensure, replays_until, Ctx, Finding, Session, Step, REPLY};

/// A session with a few events, its connection closed: (session id, head).
async fn session_with_events(ctx: &mut Ctx, n: u32) -> Step<(String, u64)> {
    let (mut a, session) = ctx.start().await?;
    let seqs = ctx.events(&mut a, &session.id, n).await?;
    a.close().await;
    let head = seqs.last().copied().unwrap_or(0);
    Ok((session.id, head))
}

/// Checks a resume's `hello_ok`: the same session, the head as cursor.
fn same_session(resumed: &Session, id: &str, head: u64) -> Step<()> {
    ensure(resumed.id == id, || {
        format!("asked to resume {id}, got session {}", resumed.id)
    })?;
    ensure(resumed.cursor() == head, || {
        format!(
            "hello_ok.cursor is {}, the head is {head}",
            resumed.cursor()
        )
    })
}

/// Checks that `seqs` is exactly `from..=to`.
fn exactly(seqs: &[u64], from: u64, to: u64, what: &str) -> Step<()> {
    let want: Vec<u64> = (from..=to).collect();
    ensure(seqs == want, || {
        format!("{what}: got {seqs:?}, expected {from}..={to}")
    })
}

/// `since: 0` replays every retained event, in order, as `replay` frames whose inner event
/// carries its cursor.
pub(crate) async fn since_zero(ctx: &mut Ctx) -> Step {
    let (id, head) = session_with_events(ctx, 3).await?;
    let (mut b, resumed) = ctx.resume(&id, Some(0)).await?;
    same_session(&resumed, &id, head)?;
    let mut seqs = Vec::new();
    while seqs.last().is_none_or(|s| *s < head) {
        let f = b.frame(REPLY, "the replays").await?;
        ensure(f.is_replay(), || {
            format!("expected replay frames, got {}", trim(&f.text))
        })?;
        let cursor = f.get("event")["data"]["cursor"].as_u64();
        ensure(cursor.is_some() && cursor == f.seq(), || {
            format!(
                "a replay whose event.data.cursor is not its sequence: {}",
                trim(&f.text)
            )
        })?;
        seqs.push(f.seq().unwrap_or(0));
    }
    b.close().await;
    exactly(&seqs, 1, head, "replays after since 0")?;
    Ok(format!("replayed 1..={head}"))
}

/// `since: n` replays exactly the events after n.
pub(crate) async fn since_middle(ctx: &mut Ctx) -> Step {
    let (id, head) = session_with_events(ctx, 3).await?;
    let (mut b, resumed) = ctx.resume(&id, Some(1)).await?;
    same_session(&resumed, &id, head)?;
    let seqs = replays_until(&mut b, head).await?;
    b.close().await;
    exactly(&seqs, 2, head, "replays after since 1")?;
    Ok(format!("replayed 2..={head}"))
}

/// `since` = the head replays nothing: the next tracked frame is the next event, live.
pub(crate) async fn since_head(ctx: &mut Ctx) -> Step {
    let (id, head) = session_with_events(ctx, 2).await?;
    let (mut b, resumed) = ctx.resume(&id, Some(head)).await?;
    same_session(&resumed, &id, head)?;
    let next = next_tracked_after_resume(ctx, &mut b, &id).await?;
    b.close().await;
    ensure(next == head + 1, || {
        format!(
            "the first event after a resume at the head has seq {next}, expected {}",
            head + 1
        )
    })?;
    Ok(format!("nothing replayed; seq {next} live"))
}

/// Makes one event and returns the sequence of the first tracked frame, failing on a replay
/// (a `replay_end` marker is allowed before it).
async fn next_tracked_after_resume(ctx: &mut Ctx, b: &mut Probe, id: &str) -> Step<u64> {
    let producer = ctx.has_producer();
    if producer {
        ctx.producer()?.publish(id, 1, Map::new()).await?;
    } else {
        let rid = ctx.request_id();
        b.send(&json!({"type": "message", "content": "tether check", "request_id": rid}))
            .await?;
    }
    let f = b
        .until(REPLY, "the next tracked frame", |f| {
            f.seq().is_some() && f.ty() != "replay_end"
        })
        .await?;
    ensure(!f.is_replay(), || {
        format!(
            "a replay came although nothing was missed: {}",
            trim(&f.text)
        )
    })?;
    Ok(f.seq().unwrap_or(0))
}

/// `hello_ok.sequence` on a resume is the sequence the replay starts after (`since`), so the
/// first replayed event is `sequence + 1`.
pub(crate) async fn sequence_aligned(ctx: &mut Ctx) -> Step {
    let (id, head) = session_with_events(ctx, 3).await?;
    let (b, resumed) = ctx.resume(&id, Some(1)).await?;
    b.close().await;
    let sequence = resumed.hello_ok.get("sequence");
    ensure(!sequence.is_null(), || {
        "hello_ok has no sequence (a client cannot tell where the replay starts)".into()
    })?;
    ensure(sequence == 1, || {
        format!("resumed since 1 with head {head}: hello_ok.sequence is {sequence}, expected 1")
    })?;
    Ok("sequence 1 for since 1".into())
}

/// `resumed` is true for a resumed session: when a new socket takes over a session whose
/// socket is still open (a live session never restored from storage), and after the old
/// socket closed.
pub(crate) async fn resumed_flag(ctx: &mut Ctx) -> Step {
    let (mut a, session) = ctx.start().await?;
    let seqs = ctx.events(&mut a, &session.id, 1).await?;
    let head = seqs.last().copied().unwrap_or(0);
    let (b, takeover) = ctx.resume(&session.id, Some(head)).await?;
    let flag = takeover.hello_ok.get("resumed").clone();
    a.abort();
    b.close().await;
    ensure(flag == true, || {
        format!("a takeover of a live session: hello_ok.resumed is {flag}")
    })?;
    let (c, after_close) = ctx.resume(&session.id, Some(head)).await?;
    c.close().await;
    let flag = after_close.hello_ok.get("resumed");
    ensure(flag == true, || {
        format!("resumed after the old socket closed: hello_ok.resumed is {flag}")
    })?;
    Ok("resumed true on a takeover and after a close".into())
}

/// Events published while no client is connected are kept and replayed on resume.
pub(crate) async fn away_events(ctx: &mut Ctx) -> Step {
    let producer = ctx.producer()?;
    let (id, head) = session_with_events(ctx, 2).await?;
    let cursors = producer.publish(&id, 3, Map::new()).await?;
    let recorded: Vec<u64> = cursors.iter().flatten().copied().collect();
    ensure(recorded.len() == 3, || {
        format!(
            "the server did not record events published while the client was away \
             (cursors {cursors:?}): they can never be replayed"
        )
    })?;
    let (mut b, resumed) = ctx.resume(&id, Some(head)).await?;
    same_session(&resumed, &id, head + 3)?;
    let seqs = replays_until(&mut b, head + 3).await?;
    b.close().await;
    exactly(
        &seqs,
        head + 1,
        head + 3,
        "replays of the events published while away",
    )?;
    Ok(format!("replayed {}..={}", head + 1, head + 3))
}

/// After a resume the replay and the live events join without a duplicate or a hole.
pub(crate) async fn no_duplicates(ctx: &mut Ctx) -> Step {
    let (id, head) = session_with_events(ctx, 3).await?;
    let (mut b, _) = ctx.resume(&id, Some(1)).await?;
    let mut seqs = replays_until(&mut b, head).await?;
    let live = ctx.events(&mut b, &id, 2).await?;
    b.close().await;
    let last = live.last().copied().unwrap_or(head);
    seqs.extend(live);
    exactly(&seqs, 2, last, "replays then live events")?;
    Ok(format!("2..={last} once each"))
}

/// `since` beyond the head (the server lost state): accepted with `cursor` below `since`,
/// which is how a client sees the reset, and nothing replayed; or refused with a typed error.
pub(crate) async fn beyond_head(ctx: &mut Ctx) -> Step {
    let (id, head) = session_with_events(ctx, 2).await?;
    let since = head + 100;
    let mut b = ctx.open().await?;
    let hello = ctx.hello(json!({"session_id": id, "since": since}));
    let reply = ctx.handshake(&mut b, hello).await?;
    match reply.ty() {
        "hello_error" => {
            b.close().await;
            return Ok(format!("refused: {}", reply.get("code")));
        }
        "hello_ok" => {}
        _ => {
            return Err(Finding::Fail(format!(
                "expected hello_ok or hello_error, got {}",
                trim(&reply.text)
            )))
        }
    }
    let cursor = reply.get("cursor").as_u64().unwrap_or(u64::MAX);
    ensure(cursor < since, || {
        format!(
            "since {since} beyond the head {head}: hello_ok.cursor is {cursor}, not below since"
        )
    })?;
    let next = next_tracked_after_resume(ctx, &mut b, &id).await?;
    b.close().await;
    ensure(next == cursor + 1, || {
        format!(
            "after the reset the next event has seq {next}, expected {}",
            cursor + 1
        )
    })?;
    Ok(format!("cursor {cursor} < since {since}; next seq {next}"))
}

/// Rounds of events published (padded) until a resume from 0 shows the oldest ones gone.
const ROUNDS: [u32; 7] = [64, 128, 256, 512, 1024, 2048, 4096];
/// Padding per event, so byte-bounded windows end within the budget too.
const PAD: usize = 2048;

/// `since` older than the retained window: the loss is signalled — v2: `resync_required` and
/// `replay_end.lost_from/lost_to`; v1: `resync_required`, or a `hello_ok.sequence` below the
/// first replayed event (the hole a client's gap check then reports).
pub(crate) async fn older_than_window(ctx: &mut Ctx) -> Step {
    let producer = ctx.producer()?;
    let budget = ctx.options.window_budget;
    let (mut live, session) = ctx.start().await?;
    let id = session.id;
    let mut published = 0u64;
    let mut data = Map::new();
    data.insert("pad".into(), Value::String("x".repeat(PAD)));
    for round in ROUNDS {
        if published + u64::from(round) > budget {
            break;
        }
        // Publish while reading: a server that evicts slow readers must not evict this one.
        live.set_quiet(true);
        let cursors = publish_while_reading(&producer, &mut live, &id, round, &data).await;
        live.set_quiet(false);
        let cursors = cursors?;
        published += u64::from(round);
        let Some(Some(head)) = cursors.last().copied() else {
            return Err(Finding::Fail(format!(
                "the server did not record events published to a connected session \
                 (cursors {:?}…)",
                &cursors[..cursors.len().min(4)]
            )));
        };
        live.close().await;
        let (mut probe, resumed) = ctx.resume(&id, Some(0)).await?;
        probe.set_quiet(true);
        let verdict = window_verdict(ctx, &mut probe, &resumed, head).await;
        probe.set_quiet(false);
        match verdict? {
            Some(detail) => {
                probe.close().await;
                return detail;
            }
            None => live = probe,
        }
    }
    live.close().await;
    Err(Finding::NotApplicable(format!(
        "the server still held every one of {published} events of {PAD} bytes (raise \
         --window-budget, or run the server with a smaller replay window)"
    )))
}

/// Publishes `n` events to `id` while reading them on `live`, then reads up to the last one
/// (or the end of the connection: a server may evict a reader, the events stay recorded).
async fn publish_while_reading(
    producer: &Producer,
    live: &mut Probe,
    id: &str,
    n: u32,
    data: &Map<String, Value>,
) -> Step<Vec<Option<u64>>> {
    let publish = producer.publish(id, n, data.clone());
    tokio::pin!(publish);
    let mut open = true;
    // The events may all arrive before the producer's answer does (a loaded machine): what was
    // read meanwhile counts.
    let mut highest = 0;
    let cursors = loop {
        tokio::select! {
            cursors = &mut publish => break cursors?,
            got = live.recv(Duration::from_secs(120), "events"), if open => {
                if let Ok(Got::Frame(f)) = &got {
                    highest = highest.max(f.seq().unwrap_or(0));
                }
                open = matches!(got, Ok(Got::Frame(_)));
            }
        }
    };
    if let (true, Some(Some(last))) = (open, cursors.last().copied()) {
        while highest < last && live.ended().is_none() {
            match live
                .recv(REPLY, &format!("the event with seq {last}"))
                .await?
            {
                Got::Frame(f) if f.seq().is_some_and(|s| s >= last) => break,
                _ => {}
            }
        }
    }
    Ok(cursors)
}

/// `None` while the window still holds event 1; else the verdict on how the loss was told.
async fn window_verdict(
    ctx: &mut Ctx,
    probe: &mut Probe,
    resumed: &Session,
    head: u64,
) -> Step<Option<Step>> {
    let h = &resumed.hello_ok;
    if ctx.version >= 2 {
        let oldest = h
            .get("oldest_cursor")
            .as_u64()
            .ok_or_else(|| Finding::Fail("a v2 hello_ok without oldest_cursor".into()))?;
        if oldest <= 1 {
            return Ok(None);
        }
        let end = probe
            .until(REPLY, "replay_end", |f| f.ty() == "replay_end")
            .await?;
        ctx.note(format!("{} ← {}", probe.name(), end.text));
        let flagged = h.get("resync_required") == true;
        let range = (end.get("lost_from").as_u64(), end.get("lost_to").as_u64());
        let verdict = if flagged && range == (Some(1), Some(oldest - 1)) {
            Ok(format!(
                "events 1..={} gone (oldest {oldest}, head {head}): resync_required, lost 1..={}",
                oldest - 1,
                oldest - 1
            ))
        } else {
            Err(Finding::Fail(format!(
                "events 1..={} are gone: resync_required is {}, replay_end lost range {range:?}",
                oldest - 1,
                h.get("resync_required")
            )))
        };
        return Ok(Some(verdict));
    }
    let first = probe
        .until(REPLY, "the first replay", |f| f.is_replay())
        .await?;
    let first_seq = first.seq().unwrap_or(0);
    if first_seq <= 1 {
        return Ok(None);
    }
    ctx.note(format!(
        "{} ← (first replay) {}",
        probe.name(),
        trim(&first.text)
    ));
    let sequence = h.get("sequence").as_u64();
    let flagged = h.get("resync_required") == true || sequence.is_some_and(|s| s + 1 < first_seq);
    Ok(Some(if flagged {
        Ok(format!(
            "events 1..={} gone: hello_ok.sequence {} before the first replay {first_seq}",
            first_seq - 1,
            sequence.map_or("-".into(), |s| s.to_string())
        ))
    } else {
        Err(Finding::Fail(format!(
            "events 1..={} are gone (head {head}, the replay starts at {first_seq}) and nothing \
             says so: hello_ok.sequence {}, no resync_required",
            first_seq - 1,
            sequence.map_or("absent".into(), |s| s.to_string())
        )))
    }))
}
