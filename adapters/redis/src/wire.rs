//! What goes into Redis and comes back: the scripts (sent by their SHA1, `EVALSHA`, and as
//! text only when Redis does not know them yet), metadata, log entries and notifications.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::streams::StreamRangeReply;
use tether_core::server::{Principal, Recorded, SessionId, StoredSession, Unsequenced};

use crate::keys::Keys;
use crate::node::Limits;

/// A Lua script, called by its SHA1.
pub(crate) struct Script {
    text: &'static str,
    sha: String,
}

impl Script {
    fn new(text: &'static str) -> Self {
        Self {
            text,
            sha: redis::Script::new(text).get_hash().to_owned(),
        }
    }

    /// `EVALSHA sha` (or `EVAL text` when Redis answered `NOSCRIPT`: after a restart or on a
    /// new cluster master; Redis caches it then) with `keys`; arguments follow.
    pub(crate) fn call(&self, by_text: bool, keys: &[String]) -> redis::Cmd {
        let mut cmd = if by_text {
            let mut c = redis::cmd("EVAL");
            c.arg(self.text);
            c
        } else {
            let mut c = redis::cmd("EVALSHA");
            c.arg(&self.sha);
            c
        };
        cmd.arg(keys.len()).arg(keys);
        cmd
    }
}

/// Numbers a run of events of one session and appends them atomically, at most once per run
/// id: consecutive sequences from the session's `head`, one log entry `{seq}-0` each (trimmed
/// to the replay bound), TTLs, the run's range recorded under its id, and one notification
/// for the run on the session's shard channel (see [`parse_notification`]). Returns the last
/// sequence; a run already applied (its reply was lost, the node sent it again) returns the
/// recorded one and changes nothing. Returns 0 when the session does not exist, after
/// notifying its channel (`"0 {session}"`): the node holding it learns at once that the store
/// lost it. KEYS: meta, log, run. ARGV: bound, TTL ms, channel, session, then
/// `body, event id, timestamp` per event.
const APPEND: &str = r"
local done = redis.call('GET', KEYS[3])
if done then return tonumber(done) end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SPUBLISH', ARGV[3], '0 ' .. ARGV[4])
  return 0
end
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
redis.call('SET', KEYS[3], last, 'PX', ARGV[2])
redis.call('SPUBLISH', ARGV[3], table.concat(parts, '\n'))
return last
";

/// Writes a session's metadata; its head only if absent (the append script owns it). A
/// session that already has events (`head > 0`) and is not being created must still exist:
/// if the store lost it, nothing is written and 0 comes back (writing it again would revive
/// it without the events it lost). KEYS: meta. ARGV: TTL ms, created (1/0), head, agent,
/// owner, epoch, epoch start, version, capabilities.
const META: &str = r"
if ARGV[2] == '0' and tonumber(ARGV[3]) > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'agent', ARGV[4], 'owner', ARGV[5], 'epoch', ARGV[6],
  'epoch_start', ARGV[7], 'version', ARGV[8], 'caps', ARGV[9])
redis.call('HSETNX', KEYS[1], 'head', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// The scripts, hashed once.
pub(crate) struct Scripts {
    append: Script,
    meta: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            append: Script::new(APPEND),
            meta: Script::new(META),
        }
    }
}

/// Most events numbered by one script call (a publish call's events always share one).
pub(crate) const RUN_MAX: usize = tether_driver::PUBLISH_MANY_MAX;

/// The append of `run` (events of `session`, in order) under the id `run_id`; its reply is
/// the last sequence (0 = unknown session).
pub(crate) fn append_command(
    scripts: &Scripts,
    by_text: bool,
    keys: &Keys,
    limits: &Limits,
    run_id: u128,
    run: &[&Unsequenced],
) -> redis::Cmd {
    let session = &run[0].session;
    let mut cmd = scripts.append.call(
        by_text,
        &[
            keys.meta(session),
            keys.log(session),
            keys.run(session, run_id),
        ],
    );
    cmd.arg(limits.log_max)
        .arg(millis(limits.session_ttl))
        .arg(keys.channel(session))
        .arg(session.as_str());
    for e in run {
        cmd.arg(&e.body)
            .arg(format!("{:032x}", e.event_id))
            .arg(e.timestamp.to_string());
    }
    cmd
}

/// The metadata write of `s` (`created`: it was just created here); its reply is 0 when the
/// store lost the session.
pub(crate) fn meta_command(
    scripts: &Scripts,
    by_text: bool,
    keys: &Keys,
    limits: &Limits,
    s: &StoredSession,
    created: bool,
) -> redis::Cmd {
    let caps = serde_json::to_string(&s.capabilities).unwrap_or_else(|_| "[]".into());
    let mut cmd = scripts.meta.call(by_text, &[keys.meta(&s.session_id)]);
    cmd.arg(millis(limits.session_ttl))
        .arg(u8::from(created))
        .arg(s.head)
        .arg(&s.agent_id)
        .arg(&s.owner.0)
        .arg(s.epoch)
        .arg(s.epoch_start)
        .arg(s.protocol_version)
        .arg(caps);
    cmd
}

/// A session's metadata and whole retained log, read atomically; `None` if unknown.
pub(crate) async fn read_session(
    redis: &mut impl ConnectionLike,
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
    redis: &mut impl ConnectionLike,
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

/// What a notification says.
#[derive(Debug, PartialEq)]
pub(crate) enum Note {
    /// New events of the session, in order.
    Events(SessionId, Vec<Recorded>),
    /// An append found the session gone from the store.
    Gone(SessionId),
}

/// A notification: `"{first} {session}"`, then per event a line `"{event id} {timestamp}
/// {body bytes}"` and the body, each followed by a newline but the last; `first` 0 (and no
/// event) when an append found the session gone. Stops at the first part not written by the
/// append script (keeping the frames before it).
pub(crate) fn parse_notification(payload: &[u8]) -> Option<Note> {
    let text = std::str::from_utf8(payload).ok()?;
    let (header, mut rest) = text.split_once('\n').unwrap_or((text, ""));
    let (first, session) = header.split_once(' ')?;
    let (mut seq, session) = (first.parse::<u64>().ok()?, SessionId(session.to_owned()));
    if seq == 0 {
        return Some(Note::Gone(session));
    }
    let mut out = Vec::new();
    while let Some((line, after)) = rest.split_once('\n') {
        let mut parts = line.split(' ');
        let (Some(id), Some(ts), Some(Ok(len))) = (
            parts.next(),
            parts.next(),
            parts.next().map(str::parse::<usize>),
        ) else {
            break;
        };
        let Some(body) = after.get(..len) else {
            break;
        };
        let Some(r) = recorded(&session, seq, body.to_owned(), id, ts) else {
            break;
        };
        out.push(r);
        seq += 1;
        match after.get(len..) {
            Some(next) if next.starts_with('\n') => rest = &next[1..],
            _ => break,
        }
    }
    (!out.is_empty()).then_some(Note::Events(session, out))
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

/// A duration as a Redis TTL argument (milliseconds, at least 1).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
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

    fn events_of(note: Option<Note>) -> Vec<Recorded> {
        match note {
            Some(Note::Events(session, events)) => {
                assert_eq!(session.as_str(), "s-1");
                events
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn notifications_round_trip_bodies_with_newlines_and_multibyte_text() {
        let events = [
            pending(r#"{"type":"a\"b","content":"x\ny""#, 0xabc),
            pending("{\"type\":\"a\\\"b\",\"content\":\"é\n\n\"", 0xdef),
        ];
        let parsed = events_of(parse_notification(notification(7, &events).as_bytes()));
        assert_eq!(parsed.len(), 2);
        for (k, r) in parsed.iter().enumerate() {
            assert_eq!(*r, events[k].clone().into_recorded(7 + k as u64));
            assert_eq!(r.kind, "a\"b");
        }
        assert!(parsed[1].frame.ends_with(r#","cursor":8,"seq":8}"#));
    }

    #[test]
    fn foreign_notifications_yield_nothing_or_their_valid_prefix() {
        assert!(parse_notification(b"garbage").is_none());
        assert!(parse_notification(b"x s\n1 2 2\n{}").is_none());
        assert!(parse_notification(&[0xff, 0xfe]).is_none());
        let ok = notification(1, &[pending(r#"{"type":"a\"b""#, 1)]);
        let truncated = format!("{ok}\n{:032x} 1.0 99\nshort", 2);
        assert_eq!(events_of(parse_notification(truncated.as_bytes())).len(), 1);
    }

    #[test]
    fn a_gone_notice_names_its_session() {
        assert_eq!(
            parse_notification(b"0 s-1"),
            Some(Note::Gone(SessionId("s-1".into())))
        );
    }
}
