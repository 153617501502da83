//! Events published to many sessions at once ([`Server::publish_to`]): stored once in the
//! shared log, numbered by each session.

use std::time::Instant;

use serde_json::Value;

use super::publish::check_publishable;
use super::session::{self, SessionId};
use super::sessions::Session;
use super::{CommandError, ConnId, Server};
use crate::wire::json::Obj;

/// The sessions an event published with [`Server::publish_to`] goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every session the server holds, attached or not.
    All,
    /// Every session of this agent.
    Agent(String),
    /// These sessions (unknown ones are skipped; one listed twice gets the event twice).
    Sessions(Vec<SessionId>),
}

impl Audience {
    fn includes(&self, s: &Session) -> bool {
        match self {
            Audience::All => true,
            Audience::Agent(agent) => s.agent_id == *agent,
            Audience::Sessions(ids) => ids.contains(&s.id),
        }
    }
}

impl Server {
    /// Records one tracked frame `{"type":kind, fields..., "cursor":n, "seq":n}` in every
    /// session of `audience`, each numbering it with its own next cursor `n`, and sends it to
    /// the sessions' connections; detached sessions keep it for their resume. Returns how many
    /// sessions recorded it.
    ///
    /// Its text is stored once, however many sessions it goes to: a recovery window of a
    /// stream published to a thousand sessions costs about one session's window plus a small
    /// index per session (runs of consecutive events), where publishing to each session in
    /// turn would store a copy per session. The frames on the wire are byte for byte those
    /// [`publish`](Self::publish) would send to each session, with one `event_id` (in replays)
    /// shared by all of them: it is one event.
    ///
    /// In store mode each session's frame goes to the store for its sequence, as `publish`.
    pub fn publish_to(
        &mut self,
        now: Instant,
        audience: &Audience,
        kind: &str,
        fields: &[(&str, Value)],
    ) -> Result<usize, CommandError> {
        check_publishable(kind, fields)?;
        fn build<'a>(o: Obj<'a>, fields: &[(&str, Value)]) -> Obj<'a> {
            fields.iter().fold(o, |o, (k, v)| o.value(k, v))
        }
        if self.config.external_store {
            let ids: Vec<SessionId> = match audience {
                Audience::Sessions(ids) => ids.clone(),
                _ => self
                    .sessions
                    .values()
                    .filter(|s| audience.includes(s))
                    .map(|s| s.id.clone())
                    .collect(),
            };
            for id in &ids {
                self.record(now, id, kind, |o| build(o, fields));
            }
            return Ok(ids.len());
        }
        let timestamp = self.wall(now);
        // What aged out goes before the appends, which then find it gone from their windows
        // (an owner not yet sent it is closed with this publish); the byte bound, which
        // counts the new record, is applied after them.
        self.evict_log(now, timestamp);
        let event_id = session::uuid4(&mut self.rng);
        // The body without the tracked tail: each session's is appended when it is sent.
        let scratch = &mut self.output.scratch;
        scratch.clear();
        let obj = Obj::start(scratch, kind);
        let kind_end = obj.len();
        build(obj, fields);
        let text = self.log.write(scratch);
        let id = self
            .log
            .push((text, true, kind_end), (event_id, timestamp), timestamp, 0)
            .id;
        let mut owners: Vec<(ConnId, Option<u64>)> = Vec::new();
        let mut recorded = 0;
        let mut append = |s: &mut Session, log: &mut super::EventLog| {
            let Some(held) = log.hold(id) else {
                return;
            };
            let target = s.conn();
            let (owner, evicted) = s.append(log, held, target, &self.config);
            recorded += 1;
            if let Some(owner) = owner {
                owners.push((owner, evicted));
            }
        };
        match audience {
            Audience::Sessions(ids) => {
                for sid in ids {
                    if let Some(s) = self.sessions.get_mut(sid) {
                        append(s, &mut self.log);
                    }
                }
            }
            _ => {
                for s in self.sessions.values_mut().filter(|s| audience.includes(s)) {
                    append(s, &mut self.log);
                }
            }
        }
        if recorded == 0 {
            self.log.discard_unheld(id);
        }
        self.evict_log(now, timestamp);
        for (owner, evicted) in owners {
            self.after_append(now, Some(owner), evicted);
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{ConnectInfo, ServerConfig, ServerEvent, ServerTransmit};

    fn server() -> Server {
        let config = ServerConfig {
            agents: vec!["a".into(), "b".into()],
            epoch_at_start: 1_700_000_000.0,
            ..ServerConfig::default()
        };
        Server::new(config, crate::test_origin())
    }

    /// Connects `conn` to `agent` (resuming `session` since `since`); its session.
    fn hello(
        s: &mut Server,
        conn: u64,
        agent: &str,
        resume: Option<(&SessionId, u64)>,
    ) -> SessionId {
        let now = crate::test_origin();
        s.handle_connected(now, ConnId(conn), ConnectInfo::default());
        let resume = resume.map_or(String::new(), |(sid, since)| {
            format!(r#","session_id":"{sid}","since":{since}"#)
        });
        let text = format!(
            r#"{{"type":"hello","agent_id":"{agent}","protocol_min":1,"protocol_max":2{resume}}}"#
        );
        s.handle_text(now, ConnId(conn), &text);
        let mut session = None;
        while let Some(e) = s.poll_event() {
            if let ServerEvent::SessionCreated { session: id, .. }
            | ServerEvent::SessionResumed { session: id, .. } = e
            {
                session = Some(id);
            }
        }
        session.unwrap()
    }

    /// The frames written to each connection, in order.
    fn drain(s: &mut Server) -> Vec<(ConnId, String)> {
        let now = crate::test_origin();
        let mut out = Vec::new();
        while let Some((c, t)) = s.poll_transmit() {
            if let ServerTransmit::Frame(f) = t {
                s.handle_sent(now, c, f.len());
                out.push((c, f.to_string()));
            }
        }
        out
    }

    #[test]
    fn one_record_numbered_by_each_session_with_the_frames_publish_would_send() {
        let now = crate::test_origin();
        let mut s = server();
        let a1 = hello(&mut s, 1, "a", None);
        let a2 = hello(&mut s, 2, "a", None);
        let b1 = hello(&mut s, 3, "b", None);
        drain(&mut s);
        // a2 is one event ahead: its cursors differ from a1's.
        s.publish(now, &a2, "m", &[("x", 0.into())]).unwrap();
        let fields = [("x", Value::from(1)), ("s", "é\"".into())];
        assert_eq!(s.publish_to(now, &Audience::All, "m", &fields), Ok(3));
        let agent = Audience::Agent("a".into());
        assert_eq!(s.publish_to(now, &agent, "m", &[("x", 2.into())]), Ok(2));
        let listed = Audience::Sessions(vec![b1.clone(), SessionId("nope".into())]);
        assert_eq!(s.publish_to(now, &listed, "m", &[("x", 3.into())]), Ok(1));
        let nobody = Audience::Agent("c".into());
        assert_eq!(s.publish_to(now, &nobody, "m", &[]), Ok(0));
        assert_eq!(
            s.publish_to(now, &Audience::All, "hello", &[]),
            Err(CommandError::ReservedKind("hello".into()))
        );
        // Four records in the log (the empty audience left none behind), not seven.
        assert_eq!(s.stats().log_events, 4);
        let frames = drain(&mut s);
        let of = |c: u64| -> Vec<&str> {
            frames
                .iter()
                .filter(|(conn, _)| *conn == ConnId(c))
                .map(|(_, f)| f.as_str())
                .collect()
        };
        assert_eq!(
            of(1),
            [
                r#"{"type":"m","x":1,"s":"é\"","cursor":1,"seq":1}"#,
                r#"{"type":"m","x":2,"cursor":2,"seq":2}"#,
            ]
        );
        assert_eq!(
            of(2),
            [
                r#"{"type":"m","x":0,"cursor":1,"seq":1}"#,
                r#"{"type":"m","x":1,"s":"é\"","cursor":2,"seq":2}"#,
                r#"{"type":"m","x":2,"cursor":3,"seq":3}"#,
            ]
        );
        assert_eq!(
            of(3),
            [
                r#"{"type":"m","x":1,"s":"é\"","cursor":1,"seq":1}"#,
                r#"{"type":"m","x":3,"cursor":2,"seq":2}"#,
            ]
        );
        // A resume replays the shared events with the session's own numbers, one event id.
        s.handle_closed(now, ConnId(1));
        s.handle_closed(now, ConnId(3));
        hello(&mut s, 4, "a", Some((&a1, 0)));
        hello(&mut s, 5, "b", Some((&b1, 0)));
        let frames = drain(&mut s);
        let replays = |c: u64| -> Vec<serde_json::Value> {
            frames
                .iter()
                .filter(|(conn, _)| *conn == ConnId(c))
                .map(|(_, f)| serde_json::from_str::<serde_json::Value>(f).unwrap())
                .filter(|v| v["type"] == "replay")
                .map(|v| v["event"].clone())
                .collect()
        };
        let (a1, b1) = (replays(4), replays(5));
        let data = |e: &[serde_json::Value]| -> Vec<String> {
            e.iter().map(|e| e["data"].to_string()).collect()
        };
        assert_eq!(
            data(&a1),
            [
                r#"{"cursor":1,"s":"é\"","seq":1,"type":"m","x":1}"#,
                r#"{"cursor":2,"seq":2,"type":"m","x":2}"#
            ]
        );
        assert_eq!(
            data(&b1),
            [
                r#"{"cursor":1,"s":"é\"","seq":1,"type":"m","x":1}"#,
                r#"{"cursor":2,"seq":2,"type":"m","x":3}"#
            ]
        );
        assert_eq!(a1[0]["event_id"], b1[0]["event_id"], "one event, one id");
        assert_ne!(a1[0]["event_id"], a1[1]["event_id"]);
        assert_eq!(a1[1]["sequence"], 2);
        assert_eq!(
            (&a1[0]["target"], &b1[0]["target"]),
            (&"conn-1".into(), &"conn-3".into())
        );
    }

    #[test]
    fn a_thousand_sessions_share_one_record_per_event() {
        let now = crate::test_origin();
        let mut s = server();
        for c in 0..1000 {
            hello(&mut s, c, "a", None);
            s.handle_closed(now, ConnId(c));
        }
        for n in 0..200 {
            s.publish_to(now, &Audience::All, "m", &[("n", n.into())])
                .unwrap();
        }
        let st = s.stats();
        assert_eq!((st.log_events, st.max_window_events), (200, 200));
        // Each session's index is one run, whatever the number of events.
        let one_run = st.max_window_bytes - st.log_bytes;
        assert!(one_run <= 64, "{one_run} bytes of index per session");
    }
}
