//! What goes into Redis and comes back: the append script, metadata, log entries and
//! notifications.

use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use tether_core::server::{Principal, Recorded, SessionId, StoredSession, Unsequenced};

use crate::keys::Keys;
use crate::{millis, Limits};

/// Numbers one event and appends it atomically: the next sequence from the session's `head`,
/// the log entry `{seq}-0` (trimmed to the replay bound), TTLs, and the notification
/// `"{seq} {session} {event_id} {timestamp}\n{body}"`. Returns the sequence, or 0 when the
/// session does not exist.
const APPEND: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'head', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], n .. '-0', 'b', ARGV[1], 'i', ARGV[2], 't', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], n .. ' ' .. ARGV[7] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. '\n' .. ARGV[1])
return n
";

/// Adds the append of `event` to `pipe` (its reply is the sequence, 0 = unknown session).
pub(crate) fn append_command(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    limits: &Limits,
    event: &Unsequenced,
) {
    pipe.cmd("EVAL")
        .arg(APPEND)
        .arg(2)
        .arg(keys.meta(&event.session))
        .arg(keys.log(&event.session))
        .arg(&event.body)
        .arg(format!("{:032x}", event.event_id))
        .arg(event.timestamp.to_string())
        .arg(limits.log_max)
        .arg(millis(limits.session_ttl))
        .arg(keys.channel())
        .arg(event.session.as_str());
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
    redis: &mut MultiplexedConnection,
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
    redis: &mut MultiplexedConnection,
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

/// A notification as `(session, frame)`; `None` if it was not written by the append script.
pub(crate) fn parse_notification(payload: &[u8]) -> Option<(SessionId, Recorded)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (header, body) = text.split_once('\n')?;
    let mut parts = header.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let session = SessionId(parts.next()?.to_owned());
    let (event_id, timestamp) = (parts.next()?, parts.next()?);
    let r = recorded(&session, seq, body.to_owned(), event_id, timestamp)?;
    Some((session, r))
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

    #[test]
    fn notification_round_trip() {
        let e = Unsequenced {
            session: SessionId("s-1".into()),
            kind: "a\"b".into(),
            body: r#"{"type":"a\"b","content":"x\ny""#.into(),
            event_id: 0xabc,
            timestamp: 1.5e9,
        };
        let text = format!(
            "7 {} {:032x} {}\n{}",
            e.session, e.event_id, e.timestamp, e.body
        );
        let (session, r) = parse_notification(text.as_bytes()).expect("parses");
        assert_eq!(session, e.session);
        assert_eq!(r, e.clone().into_recorded(7));
        assert!(r.frame.ends_with(r#","cursor":7,"seq":7}"#));
        assert_eq!(r.kind, "a\"b");
        assert!(parse_notification(b"x s 1 2\n{}").is_none());
        assert!(parse_notification(b"garbage").is_none());
    }
}
