//! `ServerMachine`: tether-core's server (gateway) machine, and the server's events.
//!
//! Every name of the core's server API that Python sees is mapped here (configuration, events,
//! transmits, commands, errors); the asyncio loop is `tether/server.py`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde::Serialize;
use serde_json::Value;
use tether_core::server::{
    Audience, ConnId, ConnectInfo, Outcome, OutcomeStatus, Server, ServerConfig, ServerEvent,
    ServerSnapshot, ServerTransmit, SessionId,
};
use tether_core::version::VersionRange;

use crate::client::Close;
use crate::clock::{duration, Clock};
use crate::record::record;
use crate::{errors, json};

/// Adds the server's classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ServerMachine>()?;
    m.add_class::<ConnectionRejected>()?;
    m.add_class::<SessionCreated>()?;
    m.add_class::<SessionResumed>()?;
    m.add_class::<SessionDetached>()?;
    m.add_class::<SessionExpired>()?;
    m.add_class::<Request>()?;
    m.add_class::<PresenceChanged>()?;
    m.add_class::<BadInput>()?;
    m.add_class::<Closing>()?;
    Ok(())
}

// ------------------------------------------------------------------------------ events

record! {
    /// Server event: a connection was refused (credentials, limits, versions).
    ConnectionRejected {
        /// The connection.
        conn: u64,
        /// Why (`auth_required`, `protocol_unsupported`, ...).
        code: String,
    }
}

record! {
    /// Server event: a handshake created a new session (also when an unknown session id was
    /// asked for).
    SessionCreated {
        /// The new session.
        session: String,
        /// Its first connection.
        conn: u64,
        /// The agent it talks to.
        agent_id: String,
    }
}

record! {
    /// Server event: a handshake re-attached an existing session.
    SessionResumed {
        /// The session.
        session: String,
        /// The new owner connection.
        conn: u64,
        /// The agent it talks to.
        agent_id: String,
        /// A connection displaced by this takeover (closed with 4009), if any.
        taken_over_from: Option<u64>,
        /// Cursors `(first, last)` the client asked for that the recovery window no longer
        /// holds (reported to it), if any.
        lost: Option<(u64, u64)>,
    }
}

record! {
    /// Server event: a session lost its connection; it stays resumable for the session TTL.
    SessionDetached {
        /// The session.
        session: String,
    }
}

record! {
    /// Server event: a detached session reached its TTL (or was evicted) and is gone.
    SessionExpired {
        /// The session.
        session: String,
    }
}

record! {
    /// Server event: a new request, handed out exactly once per (session, request_id) within
    /// the dedup window. Answer it with `respond`.
    Request {
        /// The session.
        session: String,
        /// The client's `request_id` (or a generated one).
        request_id: String,
        /// The `content` as sent (never empty; usually a `str`).
        content: Py<PyAny>,
        /// The connection it came on.
        conn: u64,
        /// The session's agent.
        agent_id: String,
    }
}

record! {
    /// Server event: the set of connected clients of an agent changed.
    PresenceChanged {
        /// The agent.
        agent_id: String,
    }
}

record! {
    /// Server event: a peer sent something invalid; it got a typed error frame (and maybe a
    /// close). Other connections are not affected.
    BadInput {
        /// The connection.
        conn: u64,
        /// What was wrong.
        error: String,
    }
}

record! {
    /// Server event: the server decided to close a connection (the `Close` is queued for it).
    Closing {
        /// The connection.
        conn: u64,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    }
}

// ------------------------------------------------------------------------------ the machine

/// tether-core's server machine: many connections, each named by an `int` id the transport
/// allocates. Feed it (`handle_*`, commands), then drain `poll_transmits()` (write each frame,
/// then confirm with `handle_sent`) and `poll_events()`, and arm a timer for `poll_timeout()`;
/// `now` is the application's monotonic clock in seconds. `tether.serve` is the asyncio loop
/// around it.
#[pyclass(frozen, module = "tether._native")]
pub struct ServerMachine {
    clock: Clock,
    machine: Mutex<Server>,
}

#[pymethods]
impl ServerMachine {
    /// A server starting at `now` (`epoch`: the wall clock then, epoch seconds). `seed` is 32
    /// bytes of OS entropy (session ids are drawn from it and must be unguessable). Options
    /// left at `None` keep the core's defaults. `snapshot` is the JSON text of an earlier
    /// `snapshot()`: its sessions are restored, all detached, for their clients to resume.
    #[new]
    #[pyo3(signature = (
        now, *, seed, epoch, snapshot=None, agents=None, token=None, versions=None,
        handshake_timeout=None, heartbeat_interval=None, missed_beats=None, session_ttl=None,
        recovery_window=None, recovery_session_bytes=None, recovery_total_bytes=None,
        max_sessions=None, max_connections=None, max_frame_bytes=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        now: f64,
        seed: &[u8],
        epoch: f64,
        snapshot: Option<&str>,
        agents: Option<Vec<String>>,
        token: Option<String>,
        versions: Option<(u32, u32)>,
        handshake_timeout: Option<f64>,
        heartbeat_interval: Option<f64>,
        missed_beats: Option<u32>,
        session_ttl: Option<f64>,
        recovery_window: Option<f64>,
        recovery_session_bytes: Option<usize>,
        recovery_total_bytes: Option<usize>,
        max_sessions: Option<usize>,
        max_connections: Option<usize>,
        max_frame_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let mut config = ServerConfig {
            seed: Some(
                seed.try_into()
                    .map_err(|_| errors::config("seed must be 32 bytes (os.urandom(32))"))?,
            ),
            epoch_at_start: epoch,
            auth_token: token,
            ..ServerConfig::default()
        };
        if let Some(agents) = agents {
            config.agents = agents;
        }
        if let Some((min, max)) = versions {
            config.versions =
                VersionRange::new(min, max).map_err(|e| errors::config(e.to_string()))?;
        }
        if let Some(s) = handshake_timeout {
            config.handshake_timeout = duration("handshake_timeout", s)?;
        }
        if let Some(s) = heartbeat_interval {
            let interval = duration("heartbeat_interval", s)?;
            config.heartbeat_interval = Some(interval).filter(|d| !d.is_zero());
        }
        if let Some(n) = missed_beats {
            config.missed_beats = n;
        }
        if let Some(s) = session_ttl {
            config.session_ttl = duration("session_ttl", s)?;
        }
        if let Some(s) = recovery_window {
            config.recovery_window = duration("recovery_window", s)?;
        }
        if let Some(n) = recovery_session_bytes {
            config.recovery_session_bytes = n;
        }
        if let Some(n) = recovery_total_bytes {
            config.recovery_total_bytes = n;
        }
        if let Some(n) = max_sessions {
            config.max_sessions = n;
        }
        if let Some(n) = max_connections {
            config.max_connections = n;
        }
        if let Some(n) = max_frame_bytes {
            config.max_frame_bytes = n;
        }
        let clock = Clock::new(now)?;
        let start = clock.instant(now)?;
        let machine = match snapshot {
            Some(text) => {
                let snapshot: ServerSnapshot =
                    serde_json::from_str(text).map_err(errors::snapshot_format)?;
                Server::restore(config, snapshot, start).map_err(errors::restore_error)?
            }
            None => Server::new(config, start),
        };
        Ok(Self {
            clock,
            machine: Mutex::new(machine),
        })
    }

    /// A WebSocket upgrade completed on connection `conn` (a new id), with the credentials the
    /// request carried (`token`: its `?token=`; `cookie`: its `praisonai_session` cookie).
    #[pyo3(signature = (now, conn, token=None, cookie=None, peer=None))]
    fn handle_connected(
        &self,
        now: f64,
        conn: u64,
        token: Option<String>,
        cookie: Option<String>,
        peer: Option<String>,
    ) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        let info = ConnectInfo {
            query_token: token,
            cookie,
            peer,
        };
        self.lock().handle_connected(now, ConnId(conn), info);
        Ok(())
    }

    /// A text frame arrived on `conn`.
    fn handle_text(&self, now: f64, conn: u64, text: &Bound<'_, PyString>) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        let text = text.to_cow()?;
        self.lock().handle_text(now, ConnId(conn), &text);
        Ok(())
    }

    /// A binary frame of `length` bytes arrived on `conn` (not part of the protocol).
    fn handle_binary(&self, now: f64, conn: u64, length: usize) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.lock().handle_binary(now, ConnId(conn), length);
        Ok(())
    }

    /// `frames` frames of `nbytes` UTF-8 bytes in all, from `poll_transmits`, were written to
    /// `conn`: they leave its in-flight window (flow control counts what was really written).
    fn handle_sent(&self, now: f64, conn: u64, frames: usize, nbytes: usize) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.lock()
            .handle_sent_frames(now, ConnId(conn), frames, nbytes);
        Ok(())
    }

    /// The transport of `conn` is gone (peer close, error, or after our `Close`).
    fn handle_closed(&self, now: f64, conn: u64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.lock().handle_closed(now, ConnId(conn));
        Ok(())
    }

    /// Timers: handshake deadlines, pings, reaping, expiry. Early or repeated calls do nothing.
    fn handle_timeout(&self, now: f64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.lock().handle_timeout(now);
        Ok(())
    }

    /// The next `(conn, frame)` to write (`frame` a `str`, or `Close`: send it, then stop
    /// writing to that connection), or `None`.
    fn poll_transmit(&self, py: Python<'_>) -> PyResult<Option<(u64, Py<PyAny>)>> {
        let next = self.lock().poll_transmit();
        next.map(|(conn, t)| Ok((conn.0, transmit(py, t)?)))
            .transpose()
    }

    /// Every `(conn, frame)` waiting (each connection's frames in order).
    fn poll_transmits(&self, py: Python<'_>) -> PyResult<Vec<(u64, Py<PyAny>)>> {
        let mut out = Vec::new();
        self.lock().poll_transmits(&mut out);
        out.into_iter()
            .map(|(conn, t)| Ok((conn.0, transmit(py, t)?)))
            .collect()
    }

    /// The next event for the application, or `None`.
    fn poll_event(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let mut machine = self.lock();
        loop {
            let Some(e) = machine.poll_event() else {
                return Ok(None);
            };
            if let Some(e) = event(py, &machine, e)? {
                return Ok(Some(e));
            }
        }
    }

    /// Every event waiting, in order.
    fn poll_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let mut machine = self.lock();
        let mut out = Vec::new();
        while let Some(e) = machine.poll_event() {
            out.extend(event(py, &machine, e)?);
        }
        Ok(out)
    }

    /// The earliest deadline (seconds on the application's clock), or `None`.
    fn poll_timeout(&self) -> Option<f64> {
        let deadline = self.lock().poll_timeout();
        deadline.map(|at| self.clock.seconds(at))
    }

    /// Records the tracked event `{"type": kind, **fields, "cursor": n, "seq": n}` in
    /// `session` (sent at once if a connection is attached, else kept for its resume);
    /// returns its cursor `n`.
    fn publish(
        &self,
        now: f64,
        session: String,
        kind: &str,
        fields: &Bound<'_, PyDict>,
    ) -> PyResult<u64> {
        let now = self.clock.instant(now)?;
        let mut fields = object_fields(fields)?;
        let borrowed = borrow_fields(&mut fields);
        self.lock()
            .publish(now, &SessionId(session), kind, &borrowed)
            .map_err(errors::command_error)
    }

    /// Records one tracked event in every session of an audience (all sessions; `agent`'s
    /// sessions; or the listed `sessions`), stored once, numbered by each session; returns
    /// how many sessions got it.
    #[pyo3(signature = (now, kind, fields, *, agent=None, sessions=None))]
    fn publish_to(
        &self,
        now: f64,
        kind: &str,
        fields: &Bound<'_, PyDict>,
        agent: Option<String>,
        sessions: Option<Vec<String>>,
    ) -> PyResult<usize> {
        let now = self.clock.instant(now)?;
        let audience = match (sessions, agent) {
            (Some(ids), _) => Audience::Sessions(ids.into_iter().map(SessionId).collect()),
            (None, Some(agent)) => Audience::Agent(agent),
            (None, None) => Audience::All,
        };
        let mut fields = object_fields(fields)?;
        let borrowed = borrow_fields(&mut fields);
        self.lock()
            .publish_to(now, &audience, kind, &borrowed)
            .map_err(errors::command_error)
    }

    /// Sends the `final` response of a request (`status`: `ok`, `error` or `rejected`;
    /// `error`: `{code, retryable, retry_after_seconds, message}`), remembered for a resend
    /// of the same `request_id`; returns its cursor.
    #[pyo3(signature = (now, session, request_id, content, status="ok", error=None))]
    fn respond(
        &self,
        now: f64,
        session: String,
        request_id: &str,
        content: &Bound<'_, PyAny>,
        status: &str,
        error: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let now = self.clock.instant(now)?;
        let status = match status {
            "ok" => OutcomeStatus::Ok,
            "error" => OutcomeStatus::Error,
            "rejected" => OutcomeStatus::Rejected,
            other => {
                return Err(PyValueError::new_err(format!(
                    "status {other:?} is not \"ok\", \"error\" or \"rejected\""
                )))
            }
        };
        let outcome = Outcome {
            content: json::from_py(content)?,
            status,
            error: error.map(json::from_py).transpose()?,
        };
        self.lock()
            .respond(now, &SessionId(session), request_id, outcome)
            .map_err(errors::command_error)
    }

    /// Sends an untracked `{"type": kind, "data": data, ...}` frame to every connection bound
    /// to a session; returns how many got it.
    fn broadcast(&self, now: f64, kind: &str, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let now = self.clock.instant(now)?;
        let data = json::from_py(data)?;
        Ok(self.lock().broadcast(now, kind, &data))
    }

    /// Closes `conn` gracefully (its queued frames and events first); its session stays
    /// resumable.
    fn disconnect(&self, now: f64, conn: u64, code: u16, reason: &str) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.lock()
            .disconnect(now, ConnId(conn), code, reason)
            .map_err(errors::command_error)
    }

    /// Graceful shutdown: every connection gets its queued frames, then close 1001; new
    /// connections are refused. Take a `snapshot` afterwards to persist the sessions.
    fn shutdown(&self, now: f64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.lock().shutdown(now);
        Ok(())
    }

    /// Every session's state, as JSON text (what `tether serve --state-file` writes; restore
    /// it with `ServerMachine(..., snapshot=text)`).
    fn snapshot(&self, now: f64) -> PyResult<String> {
        let now = self.clock.instant(now)?;
        let snapshot = self.lock().snapshot(now);
        serde_json::to_string(&snapshot).map_err(errors::snapshot_format)
    }

    /// The connected clients (`client_id`, `status`, `last_seen`, `metadata`, `channels`).
    fn presence(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let presence = self.lock().presence();
        to_py(py, &presence)
    }

    /// Gateway health, in the PraisonAI `/health` shape.
    fn health(&self, py: Python<'_>, now: f64) -> PyResult<Py<PyAny>> {
        let now = self.clock.instant(now)?;
        let health = self.lock().health(now);
        to_py(py, &health)
    }

    /// Memory use: sessions, connections, window and log sizes, pending events.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock().stats();
        let dict = PyDict::new(py);
        dict.set_item("sessions", s.sessions)?;
        dict.set_item("connections", s.connections)?;
        dict.set_item("max_window_events", s.max_window_events)?;
        dict.set_item("max_window_bytes", s.max_window_bytes)?;
        dict.set_item("log_bytes", s.log_bytes)?;
        dict.set_item("log_events", s.log_events)?;
        dict.set_item("max_control_frames", s.max_control_frames)?;
        dict.set_item("max_dedup", s.max_dedup)?;
        dict.set_item("pending_events", s.pending_events)?;
        Ok(dict)
    }

    /// The session connection `conn` is bound to, if any.
    fn session_of(&self, conn: u64) -> Option<String> {
        self.lock()
            .session_of(ConnId(conn))
            .map(|s| s.as_str().to_owned())
    }

    /// The last cursor a session assigned, if it exists.
    fn session_head(&self, session: String) -> Option<u64> {
        self.lock().session_head(&SessionId(session))
    }
}

impl ServerMachine {
    fn lock(&self) -> MutexGuard<'_, Server> {
        // No method panics while holding it; if one ever did, the machine is still whole.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A `dict` of event fields, as JSON values.
fn object_fields(fields: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Value)>> {
    match json::from_py(fields.as_any())? {
        Value::Object(map) => Ok(map.into_iter().collect()),
        _ => Err(PyValueError::new_err("fields must be a dict")),
    }
}

/// The fields as the machine takes them (names borrowed, values moved).
fn borrow_fields(fields: &mut [(String, Value)]) -> Vec<(&str, Value)> {
    fields
        .iter_mut()
        .map(|(k, v)| (k.as_str(), std::mem::take(v)))
        .collect()
}

fn to_py(py: Python<'_>, value: &impl Serialize) -> PyResult<Py<PyAny>> {
    let value = serde_json::to_value(value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    json::to_py(py, &value)
}

fn transmit(py: Python<'_>, t: ServerTransmit) -> PyResult<Py<PyAny>> {
    Ok(match t {
        ServerTransmit::Frame(text) => PyString::new(py, text.as_str()).into_any().unbind(),
        ServerTransmit::Close { code, reason } => Py::new(py, Close { code, reason })?.into_any(),
    })
}

/// The session's agent (sessions carry one from their handshake).
fn agent_of(machine: &Server, session: &SessionId) -> String {
    machine
        .stored_session(session)
        .map(|s| s.agent_id)
        .unwrap_or_default()
}

/// An event as a Python object; `None` for the store-mode requests, which the binding never
/// turns on (`external_store` stays off).
fn event(py: Python<'_>, machine: &Server, event: ServerEvent) -> PyResult<Option<Py<PyAny>>> {
    Ok(Some(match event {
        ServerEvent::ConnectionRejected { conn, code } => Py::new(
            py,
            ConnectionRejected {
                conn: conn.0,
                code: code.as_str().to_owned(),
            },
        )?
        .into_any(),
        ServerEvent::SessionCreated {
            session,
            conn,
            agent_id,
        } => Py::new(
            py,
            SessionCreated {
                session: session.0,
                conn: conn.0,
                agent_id,
            },
        )?
        .into_any(),
        ServerEvent::SessionResumed {
            session,
            conn,
            taken_over_from,
            lost,
        } => Py::new(
            py,
            SessionResumed {
                agent_id: agent_of(machine, &session),
                session: session.0,
                conn: conn.0,
                taken_over_from: taken_over_from.map(|c| c.0),
                lost,
            },
        )?
        .into_any(),
        ServerEvent::SessionDetached { session } => {
            Py::new(py, SessionDetached { session: session.0 })?.into_any()
        }
        ServerEvent::SessionExpired { session } => {
            Py::new(py, SessionExpired { session: session.0 })?.into_any()
        }
        ServerEvent::Request {
            session,
            request_id,
            content,
            conn,
        } => Py::new(
            py,
            Request {
                agent_id: agent_of(machine, &session),
                session: session.0,
                request_id,
                content: json::to_py(py, &content)?,
                conn: conn.0,
            },
        )?
        .into_any(),
        ServerEvent::PresenceChanged { agent_id } => {
            Py::new(py, PresenceChanged { agent_id })?.into_any()
        }
        ServerEvent::BadInput { conn, error } => Py::new(
            py,
            BadInput {
                conn: conn.0,
                error: error.to_string(),
            },
        )?
        .into_any(),
        ServerEvent::Closing { conn, code, reason } => Py::new(
            py,
            Closing {
                conn: conn.0,
                code,
                reason,
            },
        )?
        .into_any(),
        _ => return Ok(None),
    }))
}
