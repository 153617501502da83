//! `tether serve --control ADDR`: the control hook, so that `tether check` (or any test) can
//! make the server publish events into a session. The line protocol is
//! [`tether_testkit::check::control`]'s (the PraisonAI peer harness's, plus the server's token in
//! every command); documented in `docs/PROTOCOL-v2.md`.

use std::sync::Arc;

use serde_json::{json, Value};
use tether_core::server::{Authenticator, ConnectInfo, SessionId};
use tether_testkit::check::control::{ControlCommand, ControlReply, Sent, MAX_PUBLISH};
use tether_tokio::Server;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest command line accepted.
const MAX_LINE: u64 = 1 << 20;

/// Serves the hook on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    server: Server,
    auth: Arc<dyn Authenticator + Send + Sync>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(stream, server.clone(), auth.clone()));
    }
}

/// One client: a reply line for every command line.
async fn connection(stream: TcpStream, server: Server, auth: Arc<dyn Authenticator + Send + Sync>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(u64::MAX));
    let mut line = String::new();
    loop {
        line.clear();
        lines.get_mut().set_limit(MAX_LINE);
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = if line.ends_with('\n') {
            answer(&line, &server, auth.as_ref()).await
        } else {
            refuse(format!("a command line is at most {MAX_LINE} bytes"))
        };
        let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() || !line.ends_with('\n') {
            return;
        }
    }
}

fn refuse(why: String) -> ControlReply {
    ControlReply {
        ok: false,
        sent: Vec::new(),
        error: Some(why),
    }
}

async fn answer(
    line: &str,
    server: &Server,
    auth: &(dyn Authenticator + Send + Sync),
) -> ControlReply {
    let command: ControlCommand = match serde_json::from_str(line) {
        Ok(c) => c,
        Err(e) => return refuse(format!("not a control command: {e}")),
    };
    let info = ConnectInfo {
        query_token: command.token.clone(),
        ..ConnectInfo::default()
    };
    if auth.authenticate(&info).is_err() {
        return refuse("missing or wrong token".into());
    }
    if command.cmd != "publish" {
        return refuse(format!("unknown cmd {:?} (publish)", command.cmd));
    }
    let Some(session) = command.session_id.clone() else {
        return refuse("publish needs a session_id".into());
    };
    if !(1..=MAX_PUBLISH).contains(&command.count) {
        return refuse(format!("count must be 1..={MAX_PUBLISH}"));
    }
    let events: Vec<Vec<(String, Value)>> = (1..=command.count)
        .map(|i| {
            let mut fields = vec![("content".to_owned(), json!(format!("control event {i}")))];
            for (k, v) in &command.data {
                match fields.iter_mut().find(|(name, _)| name == k) {
                    Some(field) => field.1 = v.clone(),
                    None => fields.push((k.clone(), v.clone())),
                }
            }
            fields
        })
        .collect();
    let count = u64::from(command.count);
    match server
        .publish_many(&SessionId(session.clone()), &command.kind, events)
        .await
    {
        Ok(last) => ControlReply {
            ok: true,
            sent: (last + 1 - count..=last)
                .map(|cursor| Sent {
                    session_id: Some(session.clone()),
                    cursor: Some(cursor),
                })
                .collect(),
            error: None,
        },
        Err(e) => refuse(e.to_string()),
    }
}
