//! What goes into Redis and comes back: the append script, metadata, log entries and
//! notifications.

use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use tether_core::server::{Principal, Recorded, SessionId, StoredSession, Unsequenced};

use crate::keys::Keys;
use crate::{millis, Limits};

/// Numbers a run of events of one session and appends them atomically: consecutive sequences
/// from the session's `head`, one log entry `{seq}-0` each (trimmed to the replay bound), TTLs,
/// and one notification for the run (see [`parse_notification`]). Returns the last sequence, or
/// 0 when the session does not exist. ARGV: bound, TTL ms, channel, session, then
/// `body, event id, timestamp` per event.
const APPEND: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local count = (#ARGV - 4) / 3
local last = redis.call('HINCRBY', KEYS[1], 'head', count)
local first = last - count + 1
local parts = {first .. ' ' .. ARGV[4]}
for k = 0, count - 1 do
  local body, id, ts = ARGV[5 + 3 * k], ARGV[6 + 3 * k], ARGV[7 + 3 * k]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], (first + k) .. '-0', 'b', body, 'i', id, 't', ts)
  parts[#parts + 1] = id .. ' ' .. ts .. ' ' .. #body
  parts[#parts + 1] = body
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], table.concat(parts, '\n'))
return last
";

/// Most events numbered by one script call.
pub(crate) const RUN_MAX: usize = 1024;

/// Adds the append of `run` (events of `session`, in order) to `pipe`; its reply is the last
/// sequence (0 = unknown session).
pub(crate) fn append_command(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    limits: &Limits,
    session: &SessionId,
    run: &[&Unsequenced],
) {
    let cmd = pipe
        .cmd("EVAL")
        .arg(APPEND)
        .arg(2)
        .arg(keys.meta(session))
        .arg(keys.log(session))
        .arg(limits.log_max)
        .arg(millis(limits.session_ttl))
        .arg(keys.channel())
        .arg(session.as_str());
    for e in run {
        cmd.arg(&e.body)
            .arg(format!("{:032x}", e.event_id))
            .arg(e.timestamp.to_string());
    }
}

/// Writes a session's metadata; the head only if absent (the append script owns it).
pub(crate) fn meta_pipeline(keys: &Keys, limits: &Limits, s: &StoredSession) -> redis::Pipeline {
    let meta = keys.meta(&s.session_id);
    let caps = serde_json::to_string(&s.capabilities).unwrap_or_else(|_| "[]".into());
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("HSET")
        .arg(&meta)
        .arg("agent")
        .arg(&s.agent_id)
        .arg("owner")
        .arg(&s.owner.0)
        .arg("epoch")
        .arg(s.epoch)
        .arg("epoch_start")
        .arg(s.epoch_start)
        .arg("version")
        .arg(s.protocol_version)
        .arg("caps")
        .arg(caps)
        .ignore()
        .cmd("HSETNX")
        .arg(&meta)
        .arg("head")
        .arg(s.head)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&meta)
        .arg(millis(limits.session_ttl))
        .ignore();
    pipe
}

/// A session's metadata and whole retained log, read atomically; `None` if unknown.
pub(crate) async fn read_session(
    redis: &mut ConnectionManager,
    keys: &Keys,
    session: &SessionId,
) -> redis::RedisResult<Option<StoredSession>> {
    let (meta, log): (std::collections::HashMap<String, String>, StreamRangeReply) = redis::pipe()
        .atomic()
        .cmd("HGETALL")
        .arg(keys.meta(session))
        .cmd("XRANGE")
        .arg(keys.log(session))
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await?;
    let (Some(agent), Some(owner)) = (meta.get("agent"), meta.get("owner")) else {
        return Ok(None);
    };
    let num = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(Some(StoredSession {
        session_id: session.clone(),
        agent_id: agent.clone(),
        owner: Principal(owner.clone()),
        head: num("head"),
        epoch: num("epoch"),
        epoch_start: num("epoch_start"),
        protocol_version: u32::try_from(num("version")).unwrap_or(1),
        capabilities: meta
            .get("caps")
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default(),
        events: entries(session, log),
    }))
}

/// The log entries with sequence ≥ `from`, oldest first.
pub(crate) async fn read_log(
    redis: &mut ConnectionManager,
    keys: &Keys,
    session: &SessionId,
    from: u64,
) -> redis::RedisResult<Vec<Recorded>> {
    let log: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.log(session))
        .arg(format!("{from}-0"))
        .arg("+")
        .query_async(redis)
        .await?;
    Ok(entries(session, log))
}

fn entries(session: &SessionId, log: StreamRangeReply) -> Vec<Recorded> {
    log.ids
        .into_iter()
        .filter_map(|e| {
            let seq = e.id.split_once('-')?.0.parse().ok()?;
            recorded(
                session,
                seq,
                e.get::<String>("b")?,
                &e.get::<String>("i")?,
                &e.get::<String>("t")?,
            )
        })
        .collect()
}

/// A notification: `"{first} {session}"`, then per event a line `"{event id} {timestamp}
/// {body bytes}"` and the body, each followed by a newline but the last. The frames, in order;
/// stops at the first part not written by the append script.
pub(crate) fn parse_notification(payload: &[u8]) -> Vec<(SessionId, Recorded)> {
    let mut out = Vec::new();
    let Ok(text) = std::str::from_utf8(payload) else {
        return out;
    };
    let Some((header, mut rest)) = text.split_once('\n') else {
        return out;
    };
    let Some((first, session)) = header.split_once(' ') else {
        return out;
    };
    let (Ok(mut seq), session) = (first.parse::<u64>(), SessionId(session.to_owned())) else {
        return out;
    };
    loop {
        let Some((line, after)) = rest.split_once('\n') else {
            return out;
        };
        let mut parts = line.split(' ');
        let (Some(id), Some(ts), Some(Ok(len))) = (
            parts.next(),
            parts.next(),
            parts.next().map(str::parse::<usize>),
        ) else {
            return out;
        };
        let Some(body) = after.get(..len) else {
            return out;
        };
        let Some(r) = recorded(&session, seq, body.to_owned(), id, ts) else {
            return out;
        };
        out.push((session.clone(), r));
        seq += 1;
        match after.get(len..) {
            Some(next) if next.starts_with('\n') => rest = &next[1..],
            _ => return out,
        }
    }
}

/// Rebuilds the numbered frame from a stored body; its kind is the body's first value.
fn recorded(
    session: &SessionId,
    seq: u64,
    body: String,
    event_id: &str,
    timestamp: &str,
) -> Option<Recorded> {
    let kind_json = body.strip_prefix("{\"type\":")?;
    let kind = serde_json::Deserializer::from_str(kind_json)
        .into_iter::<String>()
        .next()?
        .ok()?;
    let pending = Unsequenced {
        session: session.clone(),
        kind,
        body,
        event_id: u128::from_str_radix(event_id, 16).ok()?,
        timestamp: timestamp.parse().ok()?,
    };
    Some(pending.into_recorded(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(body: &str, id: u128) -> Unsequenced {
        Unsequenced {
            session: SessionId("s-1".into()),
            kind: "a\"b".into(),
            body: body.into(),
            event_id: id,
            timestamp: 1.5e9,
        }
    }

    /// The notification as the append script writes it.
    fn notification(first: u64, events: &[Unsequenced]) -> String {
        let mut parts = vec![format!("{first} s-1")];
        for e in events {
            parts.push(format!(
                "{:032x} {} {}",
                e.event_id,
                e.timestamp,
                e.body.len()
            ));
            parts.push(e.body.clone());
        }
        parts.join("\n")
    }

    #[test]
    fn notifications_round_trip_bodies_with_newlines_and_multibyte_text() {
        let events = [
            pending(r#"{"type":"a\"b","content":"x\ny""#, 0xabc),
            pending("{\"type\":\"a\\\"b\",\"content\":\"é\n\n\"", 0xdef),
        ];
        let parsed = parse_notification(notification(7, &events).as_bytes());
        assert_eq!(parsed.len(), 2);
        for (k, (session, r)) in parsed.iter().enumerate() {
            assert_eq!(session.as_str(), "s-1");
            assert_eq!(*r, events[k].clone().into_recorded(7 + k as u64));
            assert_eq!(r.kind, "a\"b");
        }
        assert!(parsed[1].1.frame.ends_with(r#","cursor":8,"seq":8}"#));
    }

    #[test]
    fn foreign_notifications_yield_nothing_or_their_valid_prefix() {
        assert!(parse_notification(b"garbage").is_empty());
        assert!(parse_notification(b"x s\n1 2 2\n{}").is_empty());
        assert!(parse_notification(&[0xff, 0xfe]).is_empty());
        let ok = notification(1, &[pending(r#"{"type":"a\"b""#, 1)]);
        let truncated = format!("{ok}\n{:032x} 1.0 99\nshort", 2);
        assert_eq!(parse_notification(truncated.as_bytes()).len(), 1);
    }
}
