//! `ClientMachine`: tether-core's client connection machine, and the client's events.
//!
//! Every name of the core's client API that Python sees is mapped here (configuration, events,
//! transmits, errors); the asyncio loop is `tether/client.py`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tether_core::backoff::Jitter;
use tether_core::client::{
    Client, ClientConfig, ClosedReason, Delivered as CoreDelivered, DisconnectCause, Event,
    HandshakeMode, Kind, Payload, Rejection as CoreRejection, RequestStatus, State, Transmit,
};
use tether_core::cursor::ResumeState;
use tether_core::version::VersionRange;
use tether_core::wire::{ConnectErrorCode, Content};

use crate::clock::{duration, Clock};
use crate::record::record;
use crate::{errors, json};

/// Adds the client's classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ClientMachine>()?;
    m.add_class::<Open>()?;
    m.add_class::<Close>()?;
    m.add_class::<StateChanged>()?;
    m.add_class::<Connecting>()?;
    m.add_class::<Connected>()?;
    m.add_class::<Disconnected>()?;
    m.add_class::<Reconnecting>()?;
    m.add_class::<AwaitingCredentials>()?;
    m.add_class::<Rejection>()?;
    m.add_class::<Delivered>()?;
    m.add_class::<Notice>()?;
    m.add_class::<ServerError>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<Gap>()?;
    m.add_class::<Lost>()?;
    m.add_class::<ServerReset>()?;
    m.add_class::<SessionReplaced>()?;
    m.add_class::<Outcome>()?;
    m.add_class::<RequestUpdate>()?;
    m.add_class::<BadFrame>()?;
    m.add_class::<Closed>()?;
    m.add_function(wrap_pyfunction!(closed_error, m)?)?;
    Ok(())
}

// ------------------------------------------------------------------------------ transmits

record! {
    /// Transmit: open a new socket, then call `handle_connected` (or `handle_connect_failed`).
    Open {}
}

record! {
    /// Transmit: close the socket with this code and reason, and feed nothing more from it.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    }
}

// ------------------------------------------------------------------------------ states

record! {
    /// Event: the machine's state changed (`state` is `Connecting`, `Connected`,
    /// `Disconnected`, `Reconnecting` or `AwaitingCredentials`).
    StateChanged {
        /// The new state.
        state: Py<PyAny>,
    }
}

record! {
    /// State: opening a socket and handshaking (`attempt` 0 is the first connection).
    Connecting {
        /// Consecutive failed attempts before this one.
        attempt: u32,
    }
}

record! {
    /// State: the handshake is done; events flow.
    Connected {
        /// The negotiated protocol version (1: PraisonAI, 2: tether).
        version: u32,
        /// The session.
        session_id: String,
        /// Whether the session asked for was resumed (not a new one).
        resumed: bool,
        /// Whether the legacy `join` handshake was used.
        legacy: bool,
    }
}

record! {
    /// State: the connection ended; the client reconnects by itself.
    Disconnected {
        /// Why: `connect_failed`, `closed`, `handshake_timeout`, `heartbeat_timeout`,
        /// `rejected` (a recoverable rejection) or `gap_repair`.
        cause: String,
        /// The close code, for `closed` (`None`: no close frame).
        code: Option<u16>,
        /// The close reason or the connect error's text.
        reason: String,
        /// The server's refusal, for `rejected`.
        rejection: Option<Py<Rejection>>,
    }
}

record! {
    /// State: waiting `delay` seconds before attempt number `attempt`.
    Reconnecting {
        /// The attempt about to be made (1-based).
        attempt: u32,
        /// The wait, seconds.
        delay: f64,
    }
}

record! {
    /// State: the server rotated credentials (close 4001); call `credentials_refreshed`.
    AwaitingCredentials {}
}

record! {
    /// A server's refusal: its code, text, advised next step and minimum wait.
    Rejection {
        /// Machine-readable code (`auth_required`, `protocol_unsupported`, ...).
        code: String,
        /// The server's text.
        message: String,
        /// What to do next (`reauthenticate`, `upgrade_client`, ...), if the server said.
        next_step: Option<String>,
        /// The minimum wait the server asked for, seconds.
        retry_after: Option<f64>,
    }
}

// ------------------------------------------------------------------------------ events

/// Event: a tracked event, delivered once, in increasing `seq` order.
#[pyclass(frozen, module = "tether._native")]
pub struct Delivered {
    /// The frame's `type` (`message`, `response`, `token_stream`, ...).
    #[pyo3(get)]
    kind: Py<PyString>,
    /// Its sequence number.
    #[pyo3(get)]
    seq: u64,
    /// Its cursor (the resume position once processed).
    #[pyo3(get)]
    cursor: u64,
    /// Whether it came as a replay after a resume (it was not seen live).
    #[pyo3(get)]
    replayed: bool,
    /// The event's JSON text, as the server sent it live.
    #[pyo3(get)]
    text: Py<PyString>,
}

#[pymethods]
impl Delivered {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str, &'static str) {
        ("kind", "seq", "cursor", "replayed")
    }

    /// The event parsed (`json.loads(text)`): a `dict`.
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json::loads(py, self.text.bind(py))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Delivered(kind={}, seq={}, cursor={}, replayed={}, text={})",
            self.kind.bind(py).repr()?,
            self.seq,
            self.cursor,
            if self.replayed { "True" } else { "False" },
            self.text.bind(py).repr()?
        ))
    }
}

impl Delivered {
    fn new(py: Python<'_>, d: CoreDelivered, seen: &mut Seen) -> Self {
        Self {
            kind: seen.kind(py, &d.kind),
            text: seen.text(py, &d.payload),
            seq: d.seq,
            cursor: d.cursor,
            replayed: d.replayed,
        }
    }
}

/// The Python strings of the last frame fed and the last event type delivered: a live event's
/// payload is the frame as received, so its `text` is the very `str` the transport handed in
/// (no second copy), and a stream of one type shares one `kind` string.
#[derive(Default)]
struct Seen {
    text: Option<(Py<PyString>, String)>,
    kind: Option<(Py<PyString>, Kind)>,
}

impl Seen {
    fn text(&self, py: Python<'_>, payload: &Payload) -> Py<PyString> {
        match &self.text {
            Some((obj, text)) if text.as_str() == payload.as_str() => obj.clone_ref(py),
            _ => PyString::new(py, payload.as_str()).unbind(),
        }
    }

    fn kind(&mut self, py: Python<'_>, kind: &Kind) -> Py<PyString> {
        match &self.kind {
            Some((obj, seen)) if seen == kind => obj.clone_ref(py),
            _ => {
                let obj = PyString::intern(py, kind.as_str()).unbind();
                self.kind = Some((obj.clone_ref(py), kind.clone()));
                obj
            }
        }
    }
}

/// Event: an untracked frame (`status`, broadcasts, `aborted`, `server_request`, unknown
/// types), passed through as sent, outside the sequence.
#[pyclass(frozen, module = "tether._native")]
pub struct Notice {
    /// The frame's `type`.
    #[pyo3(get)]
    kind: String,
    /// The frame's JSON text.
    #[pyo3(get)]
    text: String,
}

#[pymethods]
impl Notice {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("kind", "text")
    }

    /// The frame parsed (`json.loads(text)`).
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json::loads(py, &PyString::new(py, &self.text))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Notice(kind={}, text={})",
            PyString::new(py, &self.kind).repr()?,
            PyString::new(py, &self.text).repr()?
        ))
    }
}

record! {
    /// Event: an untracked `error` frame after the handshake (e.g. "Not joined").
    ServerError {
        /// Its code, when it has one.
        code: Option<String>,
        /// Its text.
        message: String,
        /// Its other fields (a `dict`).
        extra: Py<PyAny>,
    }
}

record! {
    /// Event: state sent instead of replays (legacy join with `resync_required`).
    Snapshot {
        /// The session state object, as sent.
        state: Py<PyAny>,
        /// Its other fields (a `dict`).
        extra: Py<PyAny>,
    }
}

record! {
    /// Event: live events `expected..received` are missing; a repair follows if enabled.
    Gap {
        /// First missing sequence.
        expected: u64,
        /// The sequence that arrived.
        received: u64,
    }
}

record! {
    /// Event: events `first..=last` are gone for good (the server no longer holds them).
    Lost {
        /// First lost sequence.
        first: u64,
        /// Last lost sequence.
        last: u64,
    }
}

record! {
    /// Event: the server's head is behind our cursor: it lost its state; numbering restarts.
    ServerReset {
        /// Our cursor.
        cursor: u64,
        /// The server's head.
        head: u64,
    }
}

record! {
    /// Event: the session asked for was not resumed; a new one began (what the old one had not
    /// delivered is lost).
    SessionReplaced {
        /// The session asked for.
        previous: String,
        /// The new session.
        current: String,
    }
}

record! {
    /// Where a request stands: `accepted`, then its last status: `final` (answered),
    /// `duplicate` (the server had seen its id: tether repeats the answer, PraisonAI does
    /// not) or `ambiguous` (written, then the connection died and it could not be resent
    /// safely: it may or may not have run).
    Outcome {
        /// `accepted`, `final`, `duplicate` or `ambiguous`.
        status: String,
        /// The answer (usually a `str`), when there is one.
        content: Py<PyAny>,
        /// The server's outcome object (`{"status": "ok"}`, ...), when there is one.
        result: Py<PyAny>,
    }
}

record! {
    /// Event: a request changed status.
    RequestUpdate {
        /// The request's idempotency key (returned by `send`).
        request_id: String,
        /// Its status.
        outcome: Py<Outcome>,
    }
}

record! {
    /// Event: a frame from the server could not be decoded; it was dropped, the connection
    /// goes on.
    BadFrame {
        /// What was wrong.
        error: String,
    }
}

record! {
    /// Event: the last one: the client stopped for good.
    Closed {
        /// `requested` (`disconnect`), `rejected` (a terminal refusal), `protocol_violation`
        /// or `gave_up` (the attempt cap or the total deadline).
        reason: String,
        /// A description.
        message: String,
        /// The server's refusal, for `rejected`.
        rejection: Option<Py<Rejection>>,
        /// What ended the last attempt, for `gave_up`.
        last: Option<Py<Disconnected>>,
    }
}

/// The exception naming why a client stopped (raise it): `AuthenticationFailed` or
/// `VersionMismatch` for those refusals, `Rejected` for other terminal codes,
/// `ProtocolViolation`, `GaveUp`, or `ClientClosed`; its `closed` attribute is the event.
#[pyfunction]
pub fn closed_error(py: Python<'_>, closed: Bound<'_, Closed>) -> Py<PyAny> {
    let c = closed.get();
    let message = format!("client closed ({}): {}", c.reason, c.message);
    let code = c
        .rejection
        .as_ref()
        .map(|r| ConnectErrorCode::from(r.get().code.as_str()));
    let args = (message, closed.clone().unbind());
    let err = match (c.reason.as_str(), code) {
        (
            "rejected",
            Some(
                ConnectErrorCode::AuthRequired
                | ConnectErrorCode::AuthUnauthorized
                | ConnectErrorCode::Unauthorized,
            ),
        ) => errors::AuthenticationFailed::new_err(args),
        (
            "rejected",
            Some(
                ConnectErrorCode::ProtocolUnsupported
                | ConnectErrorCode::VersionUnsupported
                | ConnectErrorCode::InvalidProtocolHello,
            ),
        ) => errors::VersionMismatch::new_err(args),
        ("rejected", _) => errors::Rejected::new_err(args),
        ("protocol_violation", _) => errors::ProtocolViolation::new_err(args),
        ("gave_up", _) => errors::GaveUp::new_err(args),
        _ => errors::ClientClosed::new_err(args),
    };
    err.into_value(py).into_any()
}

// ------------------------------------------------------------------------------ the machine

/// tether-core's client machine. Feed it (`handle_*`, `send`, `disconnect`), then drain
/// `poll_transmits()` and `poll_events()` and arm a timer for `poll_timeout()`; `now` is the
/// application's monotonic clock in seconds. `tether.connect` is the asyncio loop around it.
#[pyclass(frozen, module = "tether._native")]
pub struct ClientMachine {
    clock: Clock,
    inner: Mutex<Inner>,
}

struct Inner {
    machine: Client,
    seen: Seen,
}

#[pymethods]
impl ClientMachine {
    /// A client of `agent_id` starting at `now`. Options left at `None` keep the core's
    /// defaults. `resume` is a `resume_state()` saved earlier (rejoins that session since its
    /// cursor and resends its unanswered requests).
    #[new]
    #[pyo3(signature = (
        agent_id, now, *, seed, resume=None, versions=None, join=None, capabilities=None,
        handshake_timeout=None, backoff_initial=None, backoff_max=None, backoff_multiplier=None,
        jitter=None, max_attempts=None, max_elapsed=None, heartbeat=None, missed_beats=None,
        repair_gaps=None, outbox_capacity=None, resend_unanswered=None, max_frame_bytes=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        agent_id: String,
        now: f64,
        seed: &[u8],
        resume: Option<&Bound<'_, PyAny>>,
        versions: Option<(u32, u32)>,
        join: Option<bool>,
        capabilities: Option<Vec<String>>,
        handshake_timeout: Option<f64>,
        backoff_initial: Option<f64>,
        backoff_max: Option<f64>,
        backoff_multiplier: Option<f64>,
        jitter: Option<&Bound<'_, PyAny>>,
        max_attempts: Option<u32>,
        max_elapsed: Option<f64>,
        heartbeat: Option<f64>,
        missed_beats: Option<u32>,
        repair_gaps: Option<bool>,
        outbox_capacity: Option<usize>,
        resend_unanswered: Option<bool>,
        max_frame_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let mut config = ClientConfig::new(agent_id);
        config.seed = Some(
            seed.try_into()
                .map_err(|_| errors::config("seed must be 32 bytes (os.urandom(32))"))?,
        );
        if let Some((min, max)) = versions {
            config.versions =
                VersionRange::new(min, max).map_err(|e| errors::config(e.to_string()))?;
        }
        if let Some(join) = join {
            config.handshake = if join {
                HandshakeMode::Join
            } else {
                HandshakeMode::Hello
            };
        }
        if let Some(capabilities) = capabilities {
            config.capabilities = capabilities;
        }
        if let Some(s) = handshake_timeout {
            config.handshake_timeout = duration("handshake_timeout", s)?;
        }
        if let Some(s) = backoff_initial {
            config.backoff.initial = duration("backoff_initial", s)?;
        }
        if let Some(s) = backoff_max {
            config.backoff.max = duration("backoff_max", s)?;
        }
        if let Some(m) = backoff_multiplier {
            config.backoff.multiplier = m;
        }
        if let Some(j) = jitter {
            config.backoff.jitter = parse_jitter(j)?;
        }
        config.backoff.max_attempts = max_attempts.or(config.backoff.max_attempts);
        if let Some(s) = max_elapsed {
            config.backoff.max_elapsed = Some(duration("max_elapsed", s)?);
        }
        if let Some(s) = heartbeat {
            config.fallback_heartbeat = match duration("heartbeat", s)? {
                Duration::ZERO => None,
                d => Some(d),
            };
        }
        if let Some(f) = missed_beats {
            config.missed_beats = f;
        }
        if let Some(r) = repair_gaps {
            config.repair_gaps = r;
        }
        if let Some(c) = outbox_capacity {
            config.outbox_capacity = c;
        }
        if let Some(r) = resend_unanswered {
            config.resend_unanswered = r;
        }
        if let Some(m) = max_frame_bytes {
            config.max_frame_bytes = m;
        }
        let state = match resume {
            Some(state) if !state.is_none() => {
                serde_json::from_value::<ResumeState>(json::from_py(state)?)
                    .map_err(|e| errors::config(format!("resume: not a resume_state(): {e}")))?
            }
            _ => ResumeState::default(),
        };
        let clock = Clock::new(now)?;
        let machine = Client::with_resume_state(config, state, clock.instant(now)?);
        Ok(Self {
            clock,
            inner: Mutex::new(Inner {
                machine,
                seen: Seen::default(),
            }),
        })
    }

    /// The socket asked for by `Open` is open: the handshake goes out.
    fn handle_connected(&self, now: f64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.inner().machine.handle_connected(now);
        Ok(())
    }

    /// The socket asked for by `Open` could not be opened.
    fn handle_connect_failed(&self, now: f64, reason: &str) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.inner().machine.handle_connect_failed(now, reason);
        Ok(())
    }

    /// The socket closed (`code` `None`: no close frame) or a write failed.
    #[pyo3(signature = (now, code, reason))]
    fn handle_closed(&self, now: f64, code: Option<u16>, reason: &str) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.inner().machine.handle_closed(now, code, reason);
        Ok(())
    }

    /// A text frame arrived.
    fn handle_text(&self, now: f64, text: &Bound<'_, PyString>) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        let owned = text.to_cow()?.into_owned();
        let mut inner = self.inner();
        inner.machine.handle_text(now, &owned);
        inner.seen.text = Some((text.clone().unbind(), owned));
        Ok(())
    }

    /// A binary frame arrived (not part of the protocol: reported and dropped).
    fn handle_binary(&self, now: f64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.inner().machine.handle_binary(now);
        Ok(())
    }

    /// Timers: handshake deadline, reconnect, heartbeat. Early or repeated calls do nothing.
    fn handle_timeout(&self, now: f64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.inner().machine.handle_timeout(now);
        Ok(())
    }

    /// Queues a message (any JSON value; written now if connected, else after the next
    /// handshake) and returns its `request_id`; its outcome arrives as `RequestUpdate`s.
    #[pyo3(signature = (now, content, request_id=None))]
    fn send(
        &self,
        now: f64,
        content: &Bound<'_, PyAny>,
        request_id: Option<String>,
    ) -> PyResult<String> {
        let now = self.clock.instant(now)?;
        let content = json::from_py(content)?;
        let machine = &mut self.inner().machine;
        match request_id {
            Some(id) => machine.send_with_id(now, id, content),
            None => machine.send(now, content),
        }
        .map_err(errors::send_error)
    }

    /// Stops for good: closes the socket cleanly if one is open; the last event is
    /// `Closed(reason="requested")`. Never raises an earlier error; idempotent.
    fn disconnect(&self, now: f64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.inner().machine.disconnect(now);
        Ok(())
    }

    /// After `AwaitingCredentials`: fresh credentials are in place; reconnect now.
    fn credentials_refreshed(&self, now: f64) -> PyResult<()> {
        let now = self.clock.instant(now)?;
        self.inner().machine.credentials_refreshed(now);
        Ok(())
    }

    /// The next transport action: a frame to write (`str`), `Open`, `Close`, or `None`.
    fn poll_transmit(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let next = self.inner().machine.poll_transmit();
        next.map(|t| transmit(py, t)).transpose()
    }

    /// Every transport action waiting, in order (what `poll_transmit` returns until `None`).
    fn poll_transmits(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let machine = &mut self.inner().machine;
        std::iter::from_fn(|| machine.poll_transmit())
            .map(|t| transmit(py, t))
            .collect()
    }

    /// Whether a transport action is waiting.
    fn has_transmit(&self) -> bool {
        self.inner().machine.has_transmit()
    }

    /// The next event for the application, or `None`.
    fn poll_event(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let inner = &mut *self.inner();
        let next = inner.machine.poll_event();
        next.map(|e| event(py, e, &mut inner.seen)).transpose()
    }

    /// Every event waiting, in order (what `poll_event` returns until `None`).
    fn poll_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let inner = &mut *self.inner();
        std::iter::from_fn(|| inner.machine.poll_event())
            .map(|e| event(py, e, &mut inner.seen))
            .collect()
    }

    /// When `handle_timeout` must be called next (seconds on the application's clock).
    fn poll_timeout(&self) -> Option<f64> {
        let deadline = self.inner().machine.poll_timeout();
        deadline.map(|at| self.clock.seconds(at))
    }

    /// What to persist to resume after a restart (a JSON-serialisable `dict`).
    fn resume_state(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let state = self.inner().machine.resume_state();
        let value = serde_json::to_value(state)
            .map_err(|e| PyValueError::new_err(format!("resume state: {e}")))?;
        json::to_py(py, &value)
    }

    /// Counters: delivered, duplicates, gaps, lost, connections, bad_frames.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner().machine.stats();
        let dict = PyDict::new(py);
        dict.set_item("delivered", stats.delivered)?;
        dict.set_item("duplicates", stats.duplicates)?;
        dict.set_item("gaps", stats.gaps)?;
        dict.set_item("lost", stats.lost)?;
        dict.set_item("connections", stats.connections)?;
        dict.set_item("bad_frames", stats.bad_frames)?;
        Ok(dict)
    }

    /// The current session, once a handshake has named one.
    #[getter]
    fn session_id(&self) -> Option<String> {
        self.inner().machine.session_id().map(str::to_owned)
    }

    /// The resume cursor (`since` of the next handshake).
    #[getter]
    fn cursor(&self) -> Option<u64> {
        self.inner().machine.cursor()
    }

    /// Whether the handshake is done and events flow.
    #[getter]
    fn is_connected(&self) -> bool {
        self.inner().machine.is_connected()
    }

    /// Whether the client has stopped for good.
    #[getter]
    fn is_closed(&self) -> bool {
        self.inner().machine.is_closed()
    }
}

impl ClientMachine {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // No method panics while holding it; if one ever did, the machine is still whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn parse_jitter(jitter: &Bound<'_, PyAny>) -> PyResult<Jitter> {
    if let Ok(name) = jitter.extract::<String>() {
        return match name.as_str() {
            "none" => Ok(Jitter::None),
            "full" => Ok(Jitter::Full),
            "decorrelated" => Ok(Jitter::Decorrelated),
            other => Err(errors::config(format!(
                "jitter: {other:?} is not \"none\", \"full\", \"decorrelated\" or a fraction"
            ))),
        };
    }
    let fraction: f64 = jitter.extract().map_err(|_| {
        errors::config("jitter: \"none\", \"full\", \"decorrelated\" or a fraction (0.2)")
    })?;
    Ok(Jitter::Proportional(fraction))
}

fn transmit(py: Python<'_>, t: Transmit) -> PyResult<Py<PyAny>> {
    Ok(match t {
        Transmit::Frame(text) => PyString::new(py, &text).into_any().unbind(),
        Transmit::Open => Py::new(py, Open {})?.into_any(),
        Transmit::Close { code, reason } => Py::new(py, Close { code, reason })?.into_any(),
    })
}

fn rejection(py: Python<'_>, r: CoreRejection) -> PyResult<Py<Rejection>> {
    Py::new(
        py,
        Rejection {
            code: r.code.as_str().to_owned(),
            message: r.message,
            next_step: r.next_step.map(|s| s.as_str().to_owned()),
            retry_after: r.retry_after.map(|d| d.as_secs_f64()),
        },
    )
}

fn disconnected(py: Python<'_>, cause: DisconnectCause) -> PyResult<Py<Disconnected>> {
    let (cause, code, reason, refusal) = match cause {
        DisconnectCause::ConnectFailed(reason) => ("connect_failed", None, reason, None),
        DisconnectCause::Closed { code, reason } => ("closed", code, reason, None),
        DisconnectCause::HandshakeTimeout => ("handshake_timeout", None, String::new(), None),
        DisconnectCause::HeartbeatTimeout => ("heartbeat_timeout", None, String::new(), None),
        DisconnectCause::Rejected(r) => ("rejected", None, r.message.clone(), Some(r)),
        DisconnectCause::GapRepair => ("gap_repair", None, String::new(), None),
        other => ("other", None, format!("{other:?}"), None),
    };
    Py::new(
        py,
        Disconnected {
            cause: cause.to_owned(),
            code,
            reason,
            rejection: refusal.map(|r| rejection(py, r)).transpose()?,
        },
    )
}

fn state(py: Python<'_>, state: State) -> PyResult<Py<PyAny>> {
    Ok(match state {
        State::Connecting { attempt } => Py::new(py, Connecting { attempt })?.into_any(),
        State::Connected {
            version,
            session_id,
            resumed,
            legacy,
        } => Py::new(
            py,
            Connected {
                version,
                session_id,
                resumed,
                legacy,
            },
        )?
        .into_any(),
        State::Disconnected { cause } => disconnected(py, cause)?.into_any(),
        State::Reconnecting { attempt, delay } => Py::new(
            py,
            Reconnecting {
                attempt,
                delay: delay.as_secs_f64(),
            },
        )?
        .into_any(),
        // `AwaitingCredentials` and states added later: the client waits for the application.
        _ => Py::new(py, AwaitingCredentials {})?.into_any(),
    })
}

fn content(py: Python<'_>, content: Option<Content>) -> PyResult<Py<PyAny>> {
    match content {
        Some(c) => json::to_py(py, &c),
        None => Ok(py.None()),
    }
}

fn outcome(py: Python<'_>, status: RequestStatus) -> PyResult<Py<Outcome>> {
    let (name, answer, result) = match status {
        RequestStatus::Accepted => ("accepted", None, None),
        RequestStatus::Final { content, outcome } => ("final", content, outcome),
        RequestStatus::Duplicate { content, outcome } => ("duplicate", content, outcome),
        // `Ambiguous`, and statuses added later: the request's fate is unknown.
        _ => ("ambiguous", None, None),
    };
    Py::new(
        py,
        Outcome {
            status: name.to_owned(),
            content: content(py, answer)?,
            result: match result {
                Some(v) => json::to_py(py, &v)?,
                None => py.None(),
            },
        },
    )
}

fn closed(py: Python<'_>, reason: ClosedReason) -> PyResult<Closed> {
    Ok(match reason {
        ClosedReason::Requested => Closed {
            reason: "requested".into(),
            message: "disconnected by the application".into(),
            rejection: None,
            last: None,
        },
        ClosedReason::Rejected(r) => Closed {
            reason: "rejected".into(),
            message: format!("{}: {}", r.code, r.message),
            rejection: Some(rejection(py, r)?),
            last: None,
        },
        ClosedReason::ProtocolViolation(message) => Closed {
            reason: "protocol_violation".into(),
            message,
            rejection: None,
            last: None,
        },
        ClosedReason::GaveUp { limit, last } => Closed {
            reason: "gave_up".into(),
            message: limit.to_string(),
            rejection: None,
            last: Some(disconnected(py, last)?),
        },
        other => Closed {
            reason: "other".into(),
            message: format!("{other:?}"),
            rejection: None,
            last: None,
        },
    })
}

fn event(py: Python<'_>, event: Event, seen: &mut Seen) -> PyResult<Py<PyAny>> {
    Ok(match event {
        Event::Delivered(d) => Py::new(py, Delivered::new(py, d, seen))?.into_any(),
        Event::StateChanged(s) => Py::new(
            py,
            StateChanged {
                state: state(py, s)?,
            },
        )?
        .into_any(),
        Event::Notice(frame) => Py::new(
            py,
            Notice {
                kind: frame.kind,
                text: frame.text.into(),
            },
        )?
        .into_any(),
        Event::ServerError(frame) => Py::new(
            py,
            ServerError {
                code: frame.code.map(|c| c.as_str().to_owned()),
                message: frame.message,
                extra: json::to_py(py, &serde_json::Value::Object(frame.extra))?,
            },
        )?
        .into_any(),
        Event::Snapshot(s) => Py::new(
            py,
            Snapshot {
                state: json::to_py(py, &s.state)?,
                extra: json::to_py(py, &serde_json::Value::Object(s.extra))?,
            },
        )?
        .into_any(),
        Event::Gap { expected, received } => Py::new(py, Gap { expected, received })?.into_any(),
        Event::Lost { from, to } => Py::new(
            py,
            Lost {
                first: from,
                last: to,
            },
        )?
        .into_any(),
        Event::ServerReset { cursor, head } => {
            Py::new(py, ServerReset { cursor, head })?.into_any()
        }
        Event::SessionReplaced { previous, current } => {
            Py::new(py, SessionReplaced { previous, current })?.into_any()
        }
        Event::Request(update) => Py::new(
            py,
            RequestUpdate {
                request_id: update.request_id,
                outcome: outcome(py, update.status)?,
            },
        )?
        .into_any(),
        Event::BadFrame(err) => Py::new(
            py,
            BadFrame {
                error: err.to_string(),
            },
        )?
        .into_any(),
        Event::Closed(reason) => Py::new(py, closed(py, reason)?)?.into_any(),
        // Events added to the core later reach Python as a bad frame would: reported, not lost.
        other => Py::new(
            py,
            BadFrame {
                error: format!("unhandled event {other:?}"),
            },
        )?
        .into_any(),
    })
}
