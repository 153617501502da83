//! The client connection loop and the application's handle to it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::Value;
use tether_core::client::{
    Client as Machine, ClientConfig, ClientStats, ClosedReason, Event, RequestStatus, SendError,
    State, Transmit,
};
use tether_core::cursor::ResumeState;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use crate::metrics::ClientMetrics;
use crate::queue::{self, Receiver as EventReceiver, Sender as EventSender};
use crate::{BoxFuture, Connector, Endpoints, Runtime, UrlError};

/// Events queued for the application before the loop waits for it to catch up (backpressure:
/// a slow application slows reading from the socket rather than growing memory).
const EVENT_QUEUE: usize = 1024;
/// Commands queued from the application.
const COMMAND_QUEUE: usize = 256;
/// Socket messages fed to the machine per wake-up before the loop writes, delivers and looks
/// at its other inputs.
const READ_BATCH: usize = 128;
/// Deadlines found already due that are handled at once, in a row, before waiting anyway.
const MAX_DUE_IN_A_ROW: u8 = 8;
/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How a request ended: [`RequestStatus::Final`], [`RequestStatus::Duplicate`] or
/// [`RequestStatus::Ambiguous`] (never `Accepted`, which is only an event).
pub type RequestOutcome = RequestStatus;

/// Errors of the client handle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The URL is unusable.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The core refused the request (outbox full, empty content, ...).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The OS gave no entropy for the client's seed (a sandbox without `getrandom`): check the
    /// host, or give `ClientConfig::seed` a value of its own.
    #[error("no OS entropy for the client's seed")]
    Entropy(#[source] getrandom::Error),
    /// The client stopped for good (the reason, when known).
    #[error("client closed: {0:?}")]
    Closed(Option<ClosedReason>),
}

/// How a client starts, beyond its machine's [`ClientConfig`] and where it connects.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Appended to every URL's query as `token=...` (the gateway's credentials); `None`: the
    /// URLs as given.
    pub token: Option<String>,
    /// A persisted session to resume (saved from [`Client::resume_state`]); `None`: a new
    /// session.
    pub resume: Option<ResumeState>,
    /// Prometheus metrics to count into; `None` (the default): nothing is counted.
    pub metrics: Option<ClientMetrics>,
}

impl ConnectOptions {
    /// These options with the gateway's token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// These options resuming a persisted session.
    pub fn resume(mut self, state: ResumeState) -> Self {
        self.resume = Some(state);
        self
    }

    /// These options counting into `metrics`.
    pub fn metrics(mut self, metrics: ClientMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

enum Command {
    Send {
        request_id: Option<String>,
        content: Value,
        reply: oneshot::Sender<Result<RequestOutcome, ClientError>>,
    },
    Disconnect,
    ResumeState(oneshot::Sender<ResumeState>),
    Stats(oneshot::Sender<ClientStats>),
}

/// The application's handle: cheap to clone; the connection runs in a background task that
/// reconnects by itself on the core's schedule. Dropping every handle disconnects.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    closed: Arc<std::sync::Mutex<Option<ClosedReason>>>,
}

/// The stream of [`Event`]s: delivered events (each sequence once, in order), gaps, losses,
/// state changes, request updates, and last the terminal [`Event::Closed`].
pub struct ClientEvents {
    rx: EventReceiver<Event>,
}

impl Stream for ClientEvents {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_next(cx)
    }
}

impl Client {
    /// Starts a client at `url` on `runtime`, opening its sockets with `connector`: a new
    /// session, or the one in [`ConnectOptions::resume`]. `url` may be a list of [`Endpoints`]:
    /// the client moves to the next one at each reconnect.
    pub fn start<R: Runtime, C: Connector>(
        runtime: R,
        connector: C,
        url: impl Into<Endpoints>,
        config: ClientConfig,
        options: ConnectOptions,
    ) -> Result<(Client, ClientEvents), ClientError> {
        let ConnectOptions {
            token,
            resume,
            metrics,
        } = options;
        let urls = url.into().with_token(token.as_deref())?;
        let mut config = config;
        if config.seed.is_none() {
            config.seed = Some(crate::os_seed().map_err(ClientError::Entropy)?);
        }
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events_tx, events_rx) = queue::queue(EVENT_QUEUE);
        let closed = Arc::new(std::sync::Mutex::new(None));
        let machine = Machine::with_resume_state(config, resume.unwrap_or_default(), runtime.now());
        let driver = Driver {
            runtime: runtime.clone(),
            connector,
            urls,
            opened: 0,
            machine,
            socket: None,
            connecting: None,
            timer: None,
            commands: commands_rx,
            events: events_tx,
            delivered: Vec::new(),
            pending: HashMap::new(),
            unflushed: false,
            closed: closed.clone(),
            turn: 0,
            just_read: false,
            metrics,
            duplicates_seen: 0,
            down_since: None,
        };
        runtime.spawn(Box::pin(driver.run()));
        Ok((
            Client {
                commands: commands_tx,
                closed,
            },
            ClientEvents { rx: events_rx },
        ))
    }

    /// Sends a message; resolves with its outcome (`Final`, `Duplicate` or `Ambiguous`). The
    /// message is queued while disconnected and written after the next handshake.
    pub async fn send(&self, content: impl Into<Value>) -> Result<RequestOutcome, ClientError> {
        self.send_request(None, content.into()).await
    }

    /// Like [`Client::send`] with a caller-chosen idempotency key.
    pub async fn send_with_id(
        &self,
        request_id: impl Into<String>,
        content: impl Into<Value>,
    ) -> Result<RequestOutcome, ClientError> {
        self.send_request(Some(request_id.into()), content.into())
            .await
    }

    async fn send_request(
        &self,
        request_id: Option<String>,
        content: Value,
    ) -> Result<RequestOutcome, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Send {
            request_id,
            content,
            reply,
        })
        .await?;
        answer.await.unwrap_or_else(|_| Err(self.closed_error()))
    }

    /// Disconnects cleanly; the event stream ends with `Event::Closed(Requested)`.
    pub async fn disconnect(&self) {
        let _ = self.command(Command::Disconnect).await;
    }

    /// The state to persist for a resume after a process restart.
    pub async fn resume_state(&self) -> Result<ResumeState, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::ResumeState(tx)).await?;
        rx.await.map_err(|_| self.closed_error())
    }

    /// The core's counters.
    pub async fn stats(&self) -> Result<ClientStats, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Stats(tx)).await?;
        rx.await.map_err(|_| self.closed_error())
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        let mut tx = self.commands.clone();
        tx.send(command).await.map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.closed.lock().ok().and_then(|c| c.clone()))
    }
}

/// Lets every other ready task run once (a runtime-neutral `yield_now`).
async fn yield_now() {
    let mut yielded = false;
    future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// What a socket yields: a message, an error, or the end (`None`).
type SocketItem = Option<Result<Message, tungstenite::Error>>;

enum Wake<S> {
    /// Socket messages were fed to the machine.
    Socket,
    Connected(Result<S, tungstenite::Error>),
    Timer,
    Command(Option<Command>),
}

struct Driver<R: Runtime, C: Connector> {
    runtime: R,
    connector: C,
    /// Failover order; connection attempt `opened` goes to `urls[opened % len]`.
    urls: Vec<String>,
    opened: usize,
    machine: Machine,
    socket: Option<C::Socket>,
    connecting: Option<BoxFuture<Result<C::Socket, tungstenite::Error>>>,
    timer: Option<(Instant, BoxFuture<()>)>,
    commands: mpsc::Receiver<Command>,
    events: EventSender<Event>,
    /// Events of one delivery pass, queued to the application together.
    delivered: Vec<Event>,
    pending: HashMap<String, oneshot::Sender<Result<RequestOutcome, ClientError>>>,
    unflushed: bool,
    closed: Arc<std::sync::Mutex<Option<ClosedReason>>>,
    turn: u8,
    /// The last wake-up read from the socket.
    just_read: bool,
    metrics: Option<ClientMetrics>,
    /// Duplicates already counted into `metrics`.
    duplicates_seen: u64,
    /// When the connection was lost (for the time-disconnected counter).
    down_since: Option<Instant>,
}

impl<R: Runtime, C: Connector> Driver<R, C> {
    async fn run(mut self) {
        // Deadlines already due handled in a row without waiting (bounded, in case a machine
        // keeps reporting a past deadline it does not act on).
        let mut due_in_a_row = 0u8;
        loop {
            self.write_transmits().await;
            if self.deliver_events().await {
                break;
            }
            if self.arm_timer(due_in_a_row < MAX_DUE_IN_A_ROW) {
                // Already due (e.g. a reconnect with zero backoff): a runtime timer would add
                // up to its tick (1 ms on tokio) before firing.
                due_in_a_row += 1;
                self.timer = None;
                let now = self.runtime.now();
                self.machine.handle_timeout(now);
                continue;
            }
            due_in_a_row = 0;
            if std::mem::take(&mut self.just_read) && self.runtime.yield_after_read() {
                // The socket was drained: let the tasks already queued run once before
                // waiting on the reactor. On a shared executor the writer on the other end
                // often has more ready by then, read at once instead of through a reactor
                // round trip (a wake-up from the I/O thread). See `Runtime::yield_after_read`.
                yield_now().await;
            }
            let wake = self.wake().await;
            let now = self.runtime.now();
            match wake {
                Wake::Socket => self.just_read = true,
                Wake::Connected(Ok(socket)) => {
                    self.connecting = None;
                    self.socket = Some(socket);
                    self.machine.handle_connected(now);
                }
                Wake::Connected(Err(err)) => {
                    self.connecting = None;
                    self.machine.handle_connect_failed(now, err.to_string());
                }
                Wake::Timer => {
                    self.timer = None;
                    self.machine.handle_timeout(now);
                }
                Wake::Command(Some(command)) => self.on_command(now, command),
                // Every handle is gone: nobody can use the connection any more.
                Wake::Command(None) => self.machine.disconnect(now),
            }
        }
        let reason = self.closed.lock().ok().and_then(|c| c.clone());
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(ClientError::Closed(reason.clone())));
        }
    }

    /// Performs the machine's transport actions: frames are fed, then flushed once.
    async fn write_transmits(&mut self) {
        while let Some(transmit) = self.machine.poll_transmit() {
            match transmit {
                Transmit::Open => {
                    self.socket = None;
                    // Each reconnect tries the next node: a dead one costs one attempt.
                    let url = &self.urls[self.opened % self.urls.len()];
                    self.opened = self.opened.wrapping_add(1);
                    self.connecting = Some(self.connector.connect(url));
                }
                Transmit::Frame(text) => {
                    if let Some(socket) = self.socket.as_mut() {
                        match socket.feed(Message::text(text)).await {
                            Ok(()) => self.unflushed = true,
                            Err(err) => self.socket_failed(err),
                        }
                    }
                }
                Transmit::Close { code, reason } => {
                    self.connecting = None;
                    self.unflushed = false;
                    if let Some(socket) = self.socket.take() {
                        self.close_in_background(socket, code, reason);
                    }
                }
            }
        }
        if self.unflushed {
            self.unflushed = false;
            if let Some(socket) = self.socket.as_mut() {
                if let Err(err) = socket.flush().await {
                    self.socket_failed(err);
                }
            }
        }
    }

    fn socket_failed(&mut self, err: tungstenite::Error) {
        self.socket = None;
        self.unflushed = false;
        let now = self.runtime.now();
        self.machine.handle_closed(now, None, &err.to_string());
    }

    fn close_in_background(&self, mut socket: C::Socket, code: u16, reason: String) {
        let deadline = self.runtime.now() + CLOSE_GRACE;
        let sleep = self.runtime.sleep_until(deadline);
        self.runtime.spawn(Box::pin(async move {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let close = Box::pin(async move {
                if socket.send(Message::Close(Some(frame))).await.is_ok() {
                    let _ = socket.close().await;
                }
            });
            let _ = future::select(close, sleep).await;
        }));
    }

    /// Hands events to the application; returns true once the machine is closed and all its
    /// events are out.
    async fn deliver_events(&mut self) -> bool {
        while let Some(event) = self.machine.poll_event() {
            if let Some(m) = &self.metrics {
                m.observe(&event);
                match &event {
                    Event::StateChanged(State::Disconnected { .. }) => {
                        self.down_since.get_or_insert(self.runtime.now());
                    }
                    Event::StateChanged(State::Connected { .. }) | Event::Closed(_) => {
                        if let Some(since) = self.down_since.take() {
                            let down = self.runtime.now().saturating_duration_since(since);
                            m.disconnected_seconds.inc_by(down.as_secs_f64());
                        }
                    }
                    _ => {}
                }
            }
            match &event {
                Event::Request(update) if !matches!(update.status, RequestStatus::Accepted) => {
                    if let Some(reply) = self.pending.remove(&update.request_id) {
                        let _ = reply.send(Ok(update.status.clone()));
                    }
                }
                Event::Closed(reason) => {
                    if let Ok(mut closed) = self.closed.lock() {
                        *closed = Some(reason.clone());
                    }
                }
                _ => {}
            }
            self.delivered.push(event);
        }
        // One lock and at most one wake-up for the whole pass. A dropped event stream only
        // means nobody listens; the connection goes on.
        self.events.push_all(self.delivered.drain(..));
        // Backpressure: a slow application stops the loop (and so reading from the socket).
        future::poll_fn(|cx| self.events.poll_room(cx)).await;
        if let Some(m) = &self.metrics {
            let duplicates = self.machine.stats().duplicates;
            m.duplicates_dropped
                .inc_by(duplicates.saturating_sub(self.duplicates_seen));
            self.duplicates_seen = duplicates;
        }
        self.machine.is_closed()
    }

    /// Re-arms the timer only when the deadline moved earlier: a later deadline lets the armed
    /// one fire early, which the core ignores, and saves a timer per frame. With `handle_due`,
    /// a deadline that has already passed is not armed: returns true, for the caller to call
    /// `handle_timeout` at once.
    fn arm_timer(&mut self, handle_due: bool) -> bool {
        let deadline = self.machine.poll_timeout();
        if handle_due && deadline.is_some_and(|d| d <= self.runtime.now()) {
            return true;
        }
        match (deadline, &self.timer) {
            (None, _) => self.timer = None,
            (Some(deadline), Some((armed, _))) if *armed <= deadline => {}
            (Some(deadline), _) => {
                self.timer = Some((deadline, self.runtime.sleep_until(deadline)));
            }
        }
        false
    }

    /// Waits for the next input, rotating priorities so no source starves the others.
    async fn wake(&mut self) -> Wake<C::Socket> {
        self.turn = self.turn.wrapping_add(1);
        let turn = self.turn;
        future::poll_fn(|cx| {
            for i in 0..4u8 {
                let ready = match (turn.wrapping_add(i)) % 4 {
                    0 => self.read_socket(cx),
                    1 => match self.connecting.as_mut() {
                        Some(c) => c.as_mut().poll(cx).map(Wake::Connected),
                        None => Poll::Pending,
                    },
                    2 => match self.timer.as_mut() {
                        Some((_, sleep)) => sleep.as_mut().poll(cx).map(|()| Wake::Timer),
                        None => Poll::Pending,
                    },
                    _ => self.commands.poll_next_unpin(cx).map(Wake::Command),
                };
                if ready.is_ready() {
                    return ready;
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Feeds the machine everything the socket has ready, up to a budget, in one wake-up:
    /// each message as it is read, so that it is dropped before the next read (tungstenite's
    /// read buffer is reused in place only while no message still points into it). Stops
    /// early when the machine has something to write or the socket went away: a reply or a
    /// close goes out (or takes effect) before the next message is fed.
    fn read_socket(&mut self, cx: &mut Context<'_>) -> Poll<Wake<C::Socket>> {
        let mut now = None;
        for _ in 0..READ_BATCH {
            let Some(socket) = self.socket.as_mut() else {
                break;
            };
            let Poll::Ready(item) = socket.poll_next_unpin(cx) else {
                break;
            };
            let now = *now.get_or_insert_with(|| self.runtime.now());
            self.on_message(now, item);
            if self.socket.is_none() || self.unflushed || self.machine.has_transmit() {
                break;
            }
        }
        if now.is_some() {
            Poll::Ready(Wake::Socket)
        } else {
            Poll::Pending
        }
    }

    fn on_message(&mut self, now: Instant, message: SocketItem) {
        match message {
            Some(Ok(Message::Text(text))) => self.machine.handle_text(now, text.as_str()),
            Some(Ok(Message::Binary(_))) => self.machine.handle_binary(now),
            // tungstenite queued the pong; it goes out with the next flush.
            Some(Ok(Message::Ping(_))) => self.unflushed = true,
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((None, String::new()), |f| {
                    (Some(u16::from(f.code)), f.reason.to_string())
                });
                if let Some(socket) = self.socket.take() {
                    // Completes the closing handshake tungstenite has already answered.
                    self.close_in_background(socket, code.unwrap_or(1000), String::new());
                }
                self.machine.handle_closed(now, code, &reason);
            }
            Some(Err(err)) => self.socket_failed(err),
            None => {
                self.socket = None;
                self.machine.handle_closed(now, None, "connection closed");
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send {
                request_id,
                content,
                reply,
            } => {
                let sent = match request_id {
                    Some(id) => self.machine.send_with_id(now, id, content),
                    None => self.machine.send(now, content),
                };
                match sent {
                    Ok(id) => {
                        self.pending.insert(id, reply);
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                    }
                }
            }
            Command::Disconnect => self.machine.disconnect(now),
            Command::ResumeState(reply) => {
                let _ = reply.send(self.machine.resume_state());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.machine.stats());
            }
        }
    }
}
