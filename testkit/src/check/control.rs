//! The control hook: how the checks make a server publish events into a session.
//!
//! One JSON object per line in, one per line out, over plain TCP. It is the line protocol of
//! the PraisonAI peer harness's control port (`tests/peer/gateway_server.py`), which
//! `tether serve --control ADDR` speaks too (with the server's token in every command):
//!
//! ```text
//! → {"cmd":"publish","token":"T","session_id":"…","count":3,"type":"message","data":{"k":"v"}}
//! ← {"ok":true,"sent":[{"session_id":"…","cursor":7,"seq":7}, …]}
//! ← {"ok":false,"error":"unknown session …"}
//! ```
//!
//! Each published event is `{"type":<type>,"content":…,<data>…}`, numbered by the server like
//! any tracked frame; `cursor` is `null` for an event the server did not record.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::probe::Transcript;
use super::Finding;

/// Most events one `publish` command may ask for.
pub const MAX_PUBLISH: u32 = 4096;

/// A command to the control hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlCommand {
    /// `publish` (the only command the checks need).
    pub cmd: String,
    /// The server's token (tether's hook requires it; the PraisonAI harness ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The session to publish to.
    #[serde(default)]
    pub session_id: Option<String>,
    /// How many events (1..=[`MAX_PUBLISH`]).
    #[serde(default = "one")]
    pub count: u32,
    /// The events' `type`.
    #[serde(rename = "type", default = "message")]
    pub kind: String,
    /// Fields added to every event.
    #[serde(default)]
    pub data: Map<String, Value>,
}

fn one() -> u32 {
    1
}

fn message() -> String {
    "message".into()
}

/// The hook's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the command was carried out.
    pub ok: bool,
    /// One entry per published event, in order.
    #[serde(default)]
    pub sent: Vec<Sent>,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One published event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    /// Its session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Its cursor, `None` when the server did not record it (no replay will bring it back).
    #[serde(default)]
    pub cursor: Option<u64>,
}

/// Where the checks get their events from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `tether serve --control HOST:PORT` (or any server speaking this line protocol with a
    /// token): commands carry the token of [`Options::token`](super::Options::token).
    Tether(String),
    /// The PraisonAI peer harness's control port (`tests/peer/run-python-gateway.sh` prints
    /// it as `CONTROL_PORT`).
    PraisonAi(String),
}

impl Control {
    /// Its address.
    pub fn addr(&self) -> &str {
        match self {
            Control::Tether(a) | Control::PraisonAi(a) => a,
        }
    }

    /// What the report says about it.
    pub fn describe(&self) -> String {
        match self {
            Control::Tether(a) => format!("the control hook at {a}"),
            Control::PraisonAi(a) => format!("the PraisonAI harness control port at {a}"),
        }
    }
}

/// A connection-per-command client of a control hook.
#[derive(Clone)]
pub(crate) struct Producer {
    control: Control,
    token: Option<String>,
    log: Transcript,
}

impl Producer {
    pub(crate) fn new(control: Control, token: Option<String>, log: Transcript) -> Self {
        let token = match control {
            Control::Tether(_) => token,
            Control::PraisonAi(_) => None,
        };
        Self {
            control,
            token,
            log,
        }
    }

    pub(crate) fn control(&self) -> &Control {
        &self.control
    }

    /// Publishes `count` events to `session`; returns each one's cursor (`None`: not recorded).
    pub(crate) async fn publish(
        &self,
        session: &str,
        count: u32,
        data: Map<String, Value>,
    ) -> Result<Vec<Option<u64>>, Finding> {
        let command = ControlCommand {
            cmd: "publish".into(),
            token: self.token.clone(),
            session_id: Some(session.to_owned()),
            count,
            kind: "message".into(),
            data,
        };
        let shown = if command.data.contains_key("pad") {
            format!("publish {count} padded events to {session}")
        } else {
            format!("publish {count} events to {session}")
        };
        self.log.push(format!("control → {shown}"));
        let reply = self.send(&command).await.inspect_err(|e| {
            self.log.push(format!("control ← {e}"));
        });
        let reply = reply.map_err(|e| Finding::Fail(format!("the control hook failed: {e}")))?;
        if !reply.ok {
            let why = reply.error.unwrap_or_else(|| "no reason given".into());
            self.log.push(format!("control ← refused: {why}"));
            return Err(Finding::Fail(format!("the control hook refused: {why}")));
        }
        let cursors: Vec<Option<u64>> = reply.sent.iter().map(|s| s.cursor).collect();
        self.log
            .push(format!("control ← cursors {}", ranges(&cursors)));
        Ok(cursors)
    }

    /// One command, one reply line.
    pub(crate) async fn send(&self, command: &ControlCommand) -> Result<ControlReply, String> {
        let exchange = async {
            let mut stream = TcpStream::connect(self.control.addr())
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.control.addr()))?;
            let mut line = serde_json::to_string(command).map_err(|e| e.to_string())?;
            line.push('\n');
            stream
                .write_all(line.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut reply = String::new();
            BufReader::new(stream)
                .read_line(&mut reply)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_str::<ControlReply>(&reply)
                .map_err(|e| format!("not a control reply ({e}): {}", super::probe::trim(&reply)))
        };
        tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .map_err(|_| "no reply within 60 s".to_owned())?
    }
}

/// `1..5, 7, null×2`: cursors in short form for the transcript.
fn ranges(cursors: &[Option<u64>]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cursors.len() {
        match cursors[i] {
            None => {
                let run = cursors[i..].iter().take_while(|c| c.is_none()).count();
                out.push(format!("null×{run}"));
                i += run;
            }
            Some(first) => {
                let mut last = first;
                let mut j = i + 1;
                while j < cursors.len() && cursors[j] == Some(last + 1) {
                    last += 1;
                    j += 1;
                }
                out.push(if last > first {
                    format!("{first}..{last}")
                } else {
                    first.to_string()
                });
                i = j;
            }
        }
    }
    if out.is_empty() {
        "(none)".into()
    } else {
        out.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_ranges_read_short() {
        assert_eq!(
            ranges(&[Some(1), Some(2), Some(3), Some(7), None, None]),
            "1..3, 7, null×2"
        );
        assert_eq!(ranges(&[]), "(none)");
    }

    #[test]
    fn the_harness_reply_shape_decodes() {
        let reply: ControlReply = serde_json::from_str(
            r#"{"ok": true, "sent": [{"client_id": "c", "session_id": "s", "cursor": 4, "seq": 4}]}"#,
        )
        .unwrap();
        assert_eq!(reply.sent[0].cursor, Some(4));
        let command: ControlCommand =
            serde_json::from_str(r#"{"cmd":"publish","session_id":"s"}"#).unwrap();
        assert_eq!((command.count, command.kind.as_str()), (1, "message"));
    }
}
