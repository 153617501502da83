//! The handshake acceptor: what a `hello` or a legacy `join` asks for, whether it can be
//! served (agent, versions), and the frames that answer it on its own path (`hello_ok` /
//! `hello_error`, `joined` / the reference's `error` frames). It decides; the server applies
//! the decision (`attach.rs`).

use serde_json::Value;

use super::config::ServerConfig;
use super::event::PeerError;
use super::Rejection;
use crate::version::{negotiate_offer, Mismatch, OfferError, V2};
use crate::wire::{
    encode, ConnectErrorCode, DecodeError, Features, Hello, HelloError, HelloOk, Join, Joined,
    Policy, RecoveryStep, ServerFrame,
};

const STREAM_EVENTS: [&str; 10] = [
    "token_stream",
    "tool_call_stream",
    "reasoning_stream",
    "tool_progress_stream",
    "stream_error",
    "stream_end",
    "model_fallback_stream",
    "retry_stream",
    "todo_stream",
    "tool_result_stream",
];

/// A handshake, on either path.
#[derive(Debug, Clone)]
pub(crate) enum Handshake {
    /// The modern handshake.
    Hello(Hello),
    /// The legacy handshake.
    Join(Join),
}

impl Handshake {
    fn agent_id(&self) -> Option<&str> {
        match self {
            Self::Hello(h) => h.agent_id.as_deref(),
            Self::Join(j) => j.agent_id.as_deref(),
        }
    }

    /// The session it asks for (unverified client input).
    pub(crate) fn session_id(&self) -> Option<&str> {
        match self {
            Self::Hello(h) => h.session_id.as_deref(),
            Self::Join(j) => j.session_id.as_deref(),
        }
    }

    pub(crate) fn since(&self) -> Option<u64> {
        match self {
            Self::Hello(h) => h.since,
            Self::Join(j) => j.since,
        }
    }

    pub(crate) fn epoch(&self) -> Option<u64> {
        match self {
            Self::Hello(h) => h.epoch,
            Self::Join(j) => j.epoch,
        }
    }

    /// Offered capabilities (the join path has none).
    pub(crate) fn capabilities(&self) -> &[String] {
        match self {
            Self::Hello(h) => h.offered_capabilities(),
            Self::Join(_) => &[],
        }
    }

    /// Whether replays carry a top-level `seq` (the join path, and v2).
    pub(crate) fn replays_with_seq(&self, version: u32) -> bool {
        matches!(self, Self::Join(_)) || version >= V2
    }
}

/// A handshake the acceptor can serve: its agent and the negotiated version.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) agent: String,
    pub(crate) version: u32,
}

/// A refused handshake: the answer (no close: the socket stays usable, as on the reference
/// server), the code for the application, and what the peer did wrong, if anything.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub(crate) code: ConnectErrorCode,
    pub(crate) reply: String,
    pub(crate) bad_input: Option<PeerError>,
}

/// Why a session could not be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Another principal created it.
    NotOwner,
    /// It belongs to another agent.
    AgentMismatch,
    /// Every session is attached at the session cap.
    Full,
}

/// Decides whether `hs` can be served: a registered agent and a common version.
pub(crate) fn accept(hs: &Handshake, config: &ServerConfig) -> Result<Accepted, Refused> {
    let agent = hs.agent_id().filter(|a| {
        !a.is_empty() && (config.agents.is_empty() || config.agents.iter().any(|x| x == a))
    });
    let Some(agent) = agent else {
        let message = format!("Agent not found: {}", hs.agent_id().unwrap_or("None"));
        let reply = match hs {
            Handshake::Hello(_) => hello_error(
                ConnectErrorCode::AgentNotFound,
                &message,
                Some(RecoveryStep::DoNotRetry),
                Some("check_agent_id".into()),
                None,
            ),
            Handshake::Join(_) => encode::error(None, &message, None),
        };
        return Err(refused(ConnectErrorCode::AgentNotFound, reply, None));
    };
    let (min, max) = match hs {
        Handshake::Hello(h) => h.offered_range(),
        Handshake::Join(j) => (j.min_version.unwrap_or(1), j.max_version.unwrap_or(1)),
    };
    let server = config.versions;
    match negotiate_offer(min, max, server) {
        Ok(version) => Ok(Accepted {
            agent: agent.to_owned(),
            version,
        }),
        Err(OfferError::Invalid(_)) => {
            let (lo, hi) = match hs {
                Handshake::Hello(_) => ("protocol_min", "protocol_max"),
                Handshake::Join(_) => ("min_version", "max_version"),
            };
            let msg = format!("Invalid version range: {lo} ({min}) > {hi} ({max})");
            let reply = match hs {
                Handshake::Hello(_) => hello_error(
                    ConnectErrorCode::InvalidProtocolHello,
                    &msg,
                    Some(RecoveryStep::DoNotRetry),
                    None,
                    None,
                ),
                Handshake::Join(_) => {
                    encode::error(Some(ConnectErrorCode::InvalidProtocolHello), &msg, None)
                }
            };
            let bad = PeerError::InvalidVersions(msg);
            Err(refused(
                ConnectErrorCode::InvalidProtocolHello,
                reply,
                Some(bad),
            ))
        }
        Err(OfferError::Mismatch(m)) => Err(match hs {
            Handshake::Hello(_) => {
                let (message, next) = match m {
                    Mismatch::ClientTooOld {
                        client_max,
                        server_min,
                    } => (
                        format!("Protocol version {client_max} is too old, minimum required is {server_min}"),
                        "upgrade_client",
                    ),
                    Mismatch::ClientTooNew {
                        client_min,
                        server_max,
                    } => (
                        format!("Protocol version {client_min} is too new, server supports up to {server_max}"),
                        "use_older_client",
                    ),
                };
                let reply = hello_error(
                    ConnectErrorCode::ProtocolUnsupported,
                    &message,
                    Some(m.next_step()),
                    Some(next.into()),
                    None,
                );
                refused(ConnectErrorCode::ProtocolUnsupported, reply, None)
            }
            Handshake::Join(_) => {
                let message = format!(
                    "Protocol version mismatch. Server supports {}-{}, client supports {min}-{max}",
                    server.min(),
                    server.max()
                );
                let reply = encode::version_unsupported(&message, server, &m.next_step());
                refused(ConnectErrorCode::VersionUnsupported, reply, None)
            }
        }),
    }
}

fn refused(code: ConnectErrorCode, reply: String, bad_input: Option<PeerError>) -> Refused {
    Refused {
        code,
        reply,
        bad_input,
    }
}

/// The answer to a handshake whose session could not be attached.
pub(crate) fn refuse_attach(hs: &Handshake, why: Refusal) -> Refused {
    let bad_input = (why != Refusal::Full).then_some(PeerError::Unauthorized);
    let message = match why {
        Refusal::NotOwner => "Session belongs to another principal",
        Refusal::AgentMismatch => "Session does not belong to the requested agent",
        Refusal::Full => "Too many sessions",
    };
    match hs {
        Handshake::Hello(_) => {
            let (code, step, next, retry) = match why {
                Refusal::NotOwner => (
                    ConnectErrorCode::AuthUnauthorized,
                    RecoveryStep::DoNotRetry,
                    Some("start_new_session".to_owned()),
                    None,
                ),
                Refusal::AgentMismatch => (
                    ConnectErrorCode::AuthUnauthorized,
                    RecoveryStep::Reauthenticate,
                    Some("start_new_session".to_owned()),
                    None,
                ),
                Refusal::Full => (
                    ConnectErrorCode::RateLimited,
                    RecoveryStep::WaitThenRetry,
                    None,
                    Some(1),
                ),
            };
            let reply = hello_error(code.clone(), message, Some(step), next, retry);
            refused(code, reply, bad_input)
        }
        Handshake::Join(_) => {
            let reply = encode::error(Some(ConnectErrorCode::Unauthorized), message, None);
            refused(ConnectErrorCode::Unauthorized, reply, bad_input)
        }
    }
}

/// A transient refusal by store mode (`handshake_in_progress`, `store_unavailable`): retry
/// after a second.
pub(crate) fn refuse_for_now(hs: &Handshake, code: ConnectErrorCode, message: &str) -> Refused {
    let reply = match hs {
        Handshake::Hello(_) => hello_error(
            code.clone(),
            message,
            Some(RecoveryStep::WaitThenRetry),
            None,
            Some(1),
        ),
        Handshake::Join(_) => encode::error(Some(code.clone()), message, None),
    };
    refused(code, reply, None)
}

/// What the handshake reply reports about the session and the replay that follows it.
#[derive(Debug, Clone)]
pub(crate) struct ReplayInfo {
    /// The sequence the client has seen: replays start at `sequence + 1`.
    pub(crate) sequence: u64,
    /// Oldest retained cursor (`head + 1` when nothing is retained).
    pub(crate) oldest: u64,
    /// `since` predates the window.
    pub(crate) resync_required: bool,
    /// Cursors the client asked for that are gone.
    pub(crate) lost: Option<(u64, u64)>,
}

/// The session as the reply describes it.
pub(crate) struct Attached<'a> {
    pub(crate) session_id: &'a str,
    pub(crate) resumed: bool,
    pub(crate) head: u64,
    pub(crate) epoch: u64,
    pub(crate) replay: ReplayInfo,
    /// The `since` replayed from (after an epoch rewind).
    pub(crate) since: Option<u64>,
}

impl Handshake {
    /// Whether the reply at `version` carries presence and health (v2 `hello_ok`, `joined`).
    pub(crate) fn reports_status(&self, version: u32) -> bool {
        matches!(self, Self::Join(_)) || version >= V2
    }

    /// The accepted handshake's reply, in wire order (`hello_ok`; `joined`, then the
    /// reference's `snapshot` envelope when `resync_required`). `status` is the presence and
    /// health when [`reports_status`](Self::reports_status).
    pub(crate) fn reply(
        &self,
        accepted: &Accepted,
        session: Attached<'_>,
        status: Option<(Vec<Value>, Value)>,
        (policy, server): (Policy, crate::version::VersionRange),
    ) -> Vec<String> {
        let version = accepted.version;
        let v2 = version >= V2;
        let info = &session.replay;
        let (presence, health) = status.unzip();
        match self {
            Self::Hello(_) => {
                // v1 has no loss flag: a `sequence` at `since` makes the Python client's own
                // gap check report exactly the lost range on the first replay, instead of
                // skipping it silently.
                let sequence = match (v2, info.resync_required, session.since) {
                    (false, true, Some(since)) => since,
                    _ => info.sequence,
                };
                let mut events: Vec<String> = ["message", "error", "message_abort"]
                    .map(String::from)
                    .to_vec();
                if self.capabilities().iter().any(|c| c == "streaming") {
                    events.extend(STREAM_EVENTS.map(String::from));
                }
                let mut methods: Vec<String> =
                    ["message", "leave", "abort"].map(String::from).to_vec();
                if v2 {
                    methods.push("resync".into());
                    events.push("replay_end".into());
                }
                let ok = HelloOk {
                    protocol: version,
                    features: Features {
                        methods,
                        events,
                        extra: Default::default(),
                    },
                    policy,
                    session_id: session.session_id.to_owned(),
                    resumed: session.resumed,
                    cursor: session.head,
                    sequence: Some(sequence),
                    oldest_cursor: v2.then_some(info.oldest),
                    resync_required: v2.then_some(info.resync_required),
                    presence: presence.filter(|_| v2),
                    health: health.filter(|_| v2),
                    epoch: Some(session.epoch),
                    extra: Default::default(),
                };
                vec![ServerFrame::HelloOk(ok).encode()]
            }
            Self::Join(_) => {
                let joined = ServerFrame::Joined(Joined {
                    session_id: session.session_id.to_owned(),
                    agent_id: Some(accepted.agent.clone()),
                    resumed: session.resumed,
                    cursor: session.head,
                    oldest_cursor: Some(info.oldest),
                    resync_required: info.resync_required,
                    sequence: Some(info.sequence),
                    protocol_version: Some(version),
                    server_min_version: Some(server.min()),
                    server_max_version: Some(server.max()),
                    presence,
                    health,
                    epoch: Some(session.epoch),
                    extra: Default::default(),
                })
                .encode();
                let mut reply = vec![joined];
                if info.resync_required {
                    // The reference's snapshot envelope; unlike it, the retained events still
                    // follow.
                    let (sid, head) = (session.session_id, session.head);
                    reply.push(encode::join_snapshot(sid, &accepted.agent, head));
                }
                reply
            }
        }
    }
}

/// The `hello_error` envelope of a rejection.
pub(super) fn hello_error_frame(r: &Rejection) -> String {
    hello_error(
        r.code.clone(),
        &r.message,
        r.next_step.clone(),
        r.next.clone(),
        r.retry_after_seconds,
    )
}

fn hello_error(
    code: ConnectErrorCode,
    message: &str,
    next_step: Option<RecoveryStep>,
    next: Option<String>,
    retry_after_seconds: Option<u64>,
) -> String {
    // `next` defaults to the `next_step` value, as on the reference server.
    let next = next.or_else(|| next_step.as_ref().map(|s| s.as_str().to_owned()));
    ServerFrame::HelloError(HelloError {
        code,
        message: message.to_owned(),
        next_step,
        retry_after_seconds,
        next,
        extra: Default::default(),
    })
    .encode()
}

/// A `hello` whose fields did not decode: typed `hello_error`, never a dropped socket.
pub(super) fn hello_field_error(field: &str, err: &DecodeError) -> String {
    let (code, message) = if field.starts_with("protocol") {
        (
            ConnectErrorCode::InvalidProtocolHello,
            format!("Invalid protocol version fields ({err}). Expected integer protocol_min/protocol_max."),
        )
    } else if field == "since" {
        (
            ConnectErrorCode::InvalidValue,
            "Invalid 'since' cursor. Must be an integer.".to_owned(),
        )
    } else {
        (ConnectErrorCode::InvalidFrame, err.to_string())
    };
    let mut frame = HelloError {
        code,
        message,
        next_step: Some(RecoveryStep::DoNotRetry),
        retry_after_seconds: None,
        next: Some("do_not_retry".into()),
        extra: Default::default(),
    };
    frame.extra.insert("field".into(), Value::from(field));
    ServerFrame::HelloError(frame).encode()
}

/// A `join` whose fields did not decode: the reference server's legacy `error` frames.
pub(super) fn join_field_error(field: &str) -> String {
    if field == "since" {
        encode::error(
            None,
            "Invalid 'since' cursor. Must be an integer.",
            Some(field),
        )
    } else if field.ends_with("_version") {
        encode::error(
            Some(ConnectErrorCode::InvalidProtocolHello),
            "Invalid protocol version fields. Expected integer min_version/max_version.",
            Some(field),
        )
    } else {
        encode::error(
            Some(ConnectErrorCode::InvalidFrame),
            &format!("invalid field `{field}`"),
            Some(field),
        )
    }
}
