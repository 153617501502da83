"""The asyncio client: tether-core's client machine driven over ``websockets``.

The loop only moves things: frames from the socket into the machine, the machine's frames to
the socket, its timer to ``loop.call_at`` and its events to the application. Every protocol
decision (handshake, negotiation, gap repair, resume, backoff, heartbeat, request resends) is
the machine's.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from . import _transport
from ._drive import Deadline, EventQueue, Outbox, Starting
from ._native import (
    ClientMachine,
    Close,
    Closed,
    Connected,
    Delivered,
    Open,
    Outcome,
    RequestUpdate,
    StateChanged,
    closed_error,
)
from ._types import Event, State

__all__ = ["Client", "Connect", "connect"]

#: Events queued for the application before reading from the socket pauses (backpressure).
DEFAULT_MAX_QUEUED_EVENTS = 1024


class _Link:
    """One socket: opening, open, or closing. The machine feeds on it while ``live``."""

    __slots__ = ("ws", "outbox", "live", "tasks")

    def __init__(self) -> None:
        self.ws: Optional[ClientConnection] = None
        self.outbox = Outbox()
        #: The machine still takes input from this socket.
        self.live = True
        #: The link's task (open, then read), then its writer's.
        self.tasks: List[asyncio.Task[None]] = []


class Client:
    """A connection to a gateway that reconnects by itself, resumes its session and delivers
    each tracked event once, in order. Made by :func:`connect`.

    Read events with ``async for event in client.events()``; send requests with
    ``await client.send(content)``; persist ``client.resume_state()`` to resume after a
    restart; end with ``await client.disconnect()``.
    """

    def __init__(
        self,
        machine: ClientMachine,
        urls: Sequence[str],
        *,
        on_state: Optional[Callable[[State], None]] = None,
        max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
        max_message: int = _transport.CLIENT_MAX_MESSAGE,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._socket_options = _transport.socket_options(ws_connect, max_message)
        self._machine = machine
        self._urls = list(urls)
        self._opened = 0
        self._on_state = on_state
        self._link: Optional[_Link] = None
        self._links: Set[_Link] = set()
        self._deadline = Deadline(self._loop, self._on_timer)
        self._events: EventQueue[Event] = EventQueue(self._loop, max_queued_events)
        self._pending: Dict[str, asyncio.Future[Outcome]] = {}
        self._first: asyncio.Future[Connected] = self._loop.create_future()
        self._closed: Optional[Closed] = None
        #: A drain is scheduled for when the reader yields to the loop.
        self._pump_soon = False

    # ------------------------------------------------------------------ application API

    def events(self) -> AsyncIterator[Event]:
        """The events, in order: ``Delivered`` (each tracked event once, in increasing
        ``seq``), ``Gap``/``Lost``/``ServerReset``/``SessionReplaced`` (holes repaired or
        reported, never skipped silently), ``StateChanged``, ``RequestUpdate``, ``Notice``,
        ``ServerError``, ``BadFrame``, and last ``Closed``, after which the iteration ends.

        Events queue from the start; iterate again after a ``break`` to go on where it
        stopped (concurrent iterators would share the events between them). While more than
        ``max_queued_events`` wait unread, the client stops reading from the socket (the
        server keeps the rest for it).
        """
        return self._events.iterate()

    async def send(self, content: Any, *, request_id: Optional[str] = None) -> Outcome:
        """Sends a request (any JSON value, usually a ``str``) and waits for its outcome:
        ``final`` (the answer in ``content``), ``duplicate`` (the server had seen this
        ``request_id``) or ``ambiguous`` (written, then the connection died and it could not
        be resent safely). Queued while disconnected and written after the next handshake;
        resent with the same ``request_id`` after a resume.

        Raises :class:`~tether.errors.SendRefused` subclasses when refused, and
        :class:`~tether.errors.ClientClosed` when the client stops before the outcome.
        """
        if self._closed is not None:
            raise closed_error(self._closed)
        rid = self._machine.send(self._loop.time(), content, request_id)
        answer: asyncio.Future[Outcome] = self._loop.create_future()
        self._pending[rid] = answer
        self._pump()
        return await answer

    async def disconnect(self) -> None:
        """Disconnects cleanly (close 1000) and stops for good; the events end with
        ``Closed(reason="requested")``. Never raises; idempotent."""
        try:
            if not self._machine.is_closed:
                self._machine.disconnect(self._loop.time())
                self._pump()
            tasks = [t for link in self._links for t in link.tasks]
            if tasks:
                await asyncio.wait(tasks, timeout=2 * _transport.CLOSE_GRACE)
        except Exception:  # noqa: BLE001 - disconnecting never raises an earlier error
            pass
        finally:
            for link in list(self._links):
                for task in link.tasks:
                    task.cancel()
            self._links.clear()

    def resume_state(self) -> Dict[str, Any]:
        """What to persist (JSON-serialisable) to resume this session after a restart: pass it
        to ``connect(..., resume=state)``. It holds the cursor of the last event delivered to
        ``events()`` and the requests still unanswered."""
        state: Dict[str, Any] = self._machine.resume_state()
        return state

    def stats(self) -> Dict[str, int]:
        """Counters: ``delivered``, ``duplicates``, ``gaps``, ``lost``, ``connections``,
        ``bad_frames``."""
        stats: Dict[str, int] = self._machine.stats()
        return stats

    @property
    def session_id(self) -> Optional[str]:
        """The session, once a handshake has named one."""
        return self._machine.session_id

    @property
    def is_connected(self) -> bool:
        """Whether the handshake is done and events flow."""
        return self._machine.is_connected

    @property
    def closed(self) -> Optional[Closed]:
        """The ``Closed`` event once the client has stopped for good, else ``None``."""
        return self._closed

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    # ------------------------------------------------------------------ the loop

    def _start(self) -> None:
        self._pump()

    async def _first_connection(self) -> Connected:
        return await asyncio.shield(self._first)

    def _pump(self) -> None:
        """Drains the machine after an input: transmits to the sockets, events to the
        application, the deadline to the timer."""
        self._pump_soon = False
        machine = self._machine
        while machine.has_transmit():
            for transmit in machine.poll_transmits():
                self._transmit(transmit)
        events = machine.poll_events()
        if events:
            self._deliver(events)
        self._deadline.follow(machine.poll_timeout())

    def _on_timer(self) -> None:
        self._machine.handle_timeout(self._loop.time())
        self._pump()

    def _transmit(self, transmit: Union[str, Open, Close]) -> None:
        link = self._link
        if isinstance(transmit, str):
            if link is not None and link.ws is not None:
                link.outbox.push(transmit)
        elif isinstance(transmit, Open):
            if link is not None:
                self._retire(link)
            url = self._urls[self._opened % len(self._urls)]
            self._opened += 1
            link = _Link()
            self._link = link
            self._links.add(link)
            link.tasks.append(self._loop.create_task(self._run_link(link, url)))
        elif link is not None:  # Close
            self._link = None
            link.live = False
            if link.ws is None:
                for task in link.tasks:
                    task.cancel()  # still opening: drop the attempt
            else:
                link.outbox.push(transmit)

    def _retire(self, link: _Link) -> None:
        """A socket the machine has moved past without closing it: dropped, as the Rust
        driver drops it; nothing more is fed from it."""
        link.live = False
        if link.ws is None:
            for task in link.tasks:
                task.cancel()
        else:
            link.ws.transport.abort()

    async def _run_link(self, link: _Link, url: str) -> None:
        try:
            try:
                ws = await ws_connect(url, **self._socket_options)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - every failure to open is the machine's
                if link.live:
                    link.live = False
                    self._link = None
                    self._machine.handle_connect_failed(self._loop.time(), _describe(err))
                    self._pump()
                return
            link.ws = ws
            link.tasks.append(self._loop.create_task(self._write(link.outbox, ws)))
            if link.live:
                self._machine.handle_connected(self._loop.time())
                self._pump()
            else:  # the machine moved on while the socket was opening: drop it
                ws.transport.abort()
            await self._read(link, ws)
        finally:
            self._links.discard(link)

    async def _read(self, link: _Link, ws: ClientConnection) -> None:
        machine = self._machine
        time = self._loop.time
        handle_text = machine.handle_text
        has_transmit = machine.has_transmit
        events = self._events
        try:
            async for message in ws:
                if not link.live:
                    break
                if type(message) is str:
                    handle_text(time(), message)
                else:
                    machine.handle_binary(time())
                # Like the Rust driver: frames are fed in a row while nothing waits to be
                # written (a reply or a close goes out before the next frame is fed); the
                # events of the row are drained once, when the reader yields to the loop.
                if has_transmit():
                    self._pump()
                elif not self._pump_soon:
                    self._pump_soon = True
                    self._loop.call_soon(self._pump)
                if events.full:
                    await events.room()
        except (ConnectionClosed, OSError):
            pass
        if link.live:
            link.live = False
            if self._link is link:
                self._link = None
            code, reason = _transport.received_close(ws)
            machine.handle_closed(time(), code, reason)
            self._pump()
        # Let the writer finish: a close the machine queued goes out before the socket is
        # let go (the closing handshake is bounded by CLOSE_GRACE).
        link.outbox.end()
        await asyncio.wait(link.tasks[1:], timeout=2 * _transport.CLOSE_GRACE)

    async def _write(self, outbox: Outbox, ws: ClientConnection) -> None:
        items = outbox.items
        try:
            while True:
                await outbox.wait()
                if not items:
                    return  # ended
                while items:
                    item = items.popleft()
                    if isinstance(item, str):
                        await ws.send(item)
                    else:
                        await _transport.close(ws, item.code, item.reason)
                        return
        except (ConnectionClosed, OSError):
            return  # the reader reports the close

    def _deliver(self, events: List[Event]) -> None:
        closed = None
        for event in events:
            if type(event) is Delivered:
                continue
            if isinstance(event, RequestUpdate):
                if event.outcome.status != "accepted":
                    answer = self._pending.pop(event.request_id, None)
                    if answer is not None and not answer.done():
                        answer.set_result(event.outcome)
            elif isinstance(event, StateChanged):
                self._state_changed(event.state)
            elif isinstance(event, Closed):
                closed = event
        self._events.extend(events)
        if closed is not None:
            self._finish(closed)

    def _state_changed(self, state: State) -> None:
        if isinstance(state, Connected) and not self._first.done():
            self._first.set_result(state)
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception as err:  # noqa: BLE001 - a callback's bug must not stop the loop
                self._loop.call_exception_handler(
                    {"message": "tether: on_state callback failed", "exception": err}
                )

    def _finish(self, closed: Closed) -> None:
        """The machine stopped for good: settle everything waiting on it."""
        self._closed = closed
        if not self._first.done():
            self._first.set_exception(closed_error(closed))
            self._first.exception()  # retrieved: connect() may have been cancelled
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(closed_error(closed))
        self._pending.clear()
        self._deadline.cancel()
        self._events.finish()


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Connect(Starting[Client]):
    """What :func:`connect` returns: ``await`` it for a connected :class:`Client`, or use it as
    ``async with connect(...) as client:`` (which disconnects at the end)."""


async def _connected(client: Client) -> Client:
    """Starts ``client`` and waits for its first handshake (or its terminal refusal)."""
    client._start()
    try:
        await client._first_connection()
    except BaseException:
        await client.disconnect()
        raise
    return client


def connect(
    url: Union[str, Sequence[str]],
    *,
    agent_id: str,
    token: Optional[str] = None,
    resume: Optional[Mapping[str, Any]] = None,
    on_state: Optional[Callable[[State], None]] = None,
    versions: Optional[Tuple[int, int]] = None,
    join: Optional[bool] = None,
    capabilities: Optional[Sequence[str]] = None,
    handshake_timeout: Optional[float] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
    backoff_multiplier: Optional[float] = None,
    jitter: Union[str, float, None] = None,
    max_attempts: Optional[int] = None,
    max_elapsed: Optional[float] = None,
    heartbeat: Optional[float] = None,
    missed_beats: Optional[int] = None,
    repair_gaps: Optional[bool] = None,
    outbox_capacity: Optional[int] = None,
    resend_unanswered: Optional[bool] = None,
    max_frame_bytes: Optional[int] = None,
    max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
    seed: Optional[bytes] = None,
) -> Connect:
    """Connects to a tether or PraisonAI gateway and keeps the connection alive and lossless.

    ``await connect(...)`` returns a :class:`Client` once the first handshake is done; use
    ``async with connect(...) as client:`` to disconnect at the end of the block. A terminal
    refusal raises at once, after one attempt: :class:`~tether.errors.AuthenticationFailed`
    (bad token), :class:`~tether.errors.VersionMismatch` (no common protocol version), other
    :class:`~tether.errors.Rejected` codes, :class:`~tether.errors.ProtocolViolation`; the
    reconnect limits raise :class:`~tether.errors.GaveUp`. Anything transient (refused
    connection, server restart, ``rate_limited``) is retried on the backoff schedule.

    Example::

        async with tether.connect("ws://127.0.0.1:8765/ws", agent_id="echo", token="secret") as client:
            print((await client.send("hello")).content)   # echo: hello
            async for event in client.events():
                if isinstance(event, tether.Delivered):
                    print(event.seq, event.data)          # each sequence once, in order

    Args:
        url: ``ws://HOST:PORT/ws`` (or ``wss://``), or several nodes of one gateway: each
            reconnect tries the next.
        agent_id: The agent to talk to.
        token: The gateway's token, sent as ``?token=`` (percent-encoded).
        resume: A ``client.resume_state()`` saved earlier: rejoin that session since its
            cursor and resend its unanswered requests.
        on_state: Called with each new state (``Connecting``, ``Connected``, ``Disconnected``,
            ``Reconnecting``, ``AwaitingCredentials``), in the event loop.
        versions: Protocol versions offered, ``(min, max)``; default ``(1, 2)`` (the PraisonAI
            gateway answers 1, tether's 2).
        join: Open with the legacy ``join`` handshake (servers that predate ``hello``).
        capabilities: Capabilities sent in ``hello``; default ``["streaming", "ack"]``.
        handshake_timeout: Seconds from opening a socket to the handshake reply; default 10.
        backoff_initial: First reconnect delay of an outage, seconds; default 0.25.
        backoff_max: Cap of any reconnect delay, seconds; default 30.
        backoff_multiplier: Growth between attempts; default 2.
        jitter: ``"full"`` (default), ``"none"``, ``"decorrelated"`` or a fraction (``0.2``).
        max_attempts: Give up after this many consecutive failed attempts; default never.
        max_elapsed: Give up after this many seconds without a completed handshake; default
            never.
        heartbeat: Ping interval (seconds) when the server advertises none; ``0`` disables;
            default 30.
        missed_beats: Silence longer than ``missed_beats × interval`` means a dead socket;
            default 2.
        repair_gaps: Repair live gaps (resync on v2, a resume on v1); default ``True``.
        outbox_capacity: Most unanswered requests; default 1024.
        resend_unanswered: Resend unanswered requests after a resume (the server
            deduplicates); default ``True``, else they end ``ambiguous``.
        max_frame_bytes: Larger inbound frames are refused (reported, not parsed); default
            16 MiB.
        max_queued_events: Events waiting for ``events()`` before reading pauses.
        seed: 32 bytes seeding the client's random choices (jitter, request ids); default
            ``os.urandom(32)``.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("connect() needs at least one URL")
    with_token = [_transport.with_token(u, token) for u in urls]

    def start() -> Client:
        loop = asyncio.get_running_loop()
        machine = ClientMachine(
            agent_id,
            loop.time(),
            seed=secrets.token_bytes(32) if seed is None else seed,
            resume=dict(resume) if resume is not None else None,
            versions=versions,
            join=join,
            capabilities=list(capabilities) if capabilities is not None else None,
            handshake_timeout=handshake_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            backoff_multiplier=backoff_multiplier,
            jitter=jitter,
            max_attempts=max_attempts,
            max_elapsed=max_elapsed,
            heartbeat=heartbeat,
            missed_beats=missed_beats,
            repair_gaps=repair_gaps,
            outbox_capacity=outbox_capacity,
            resend_unanswered=resend_unanswered,
            max_frame_bytes=max_frame_bytes,
        )
        return Client(
            machine,
            with_token,
            on_state=on_state,
            max_queued_events=max_queued_events,
            # Above the machine's own limit: an oversized frame is its typed error.
            max_message=max(_transport.CLIENT_MAX_MESSAGE, (max_frame_bytes or 0) + 1),
        )

    return Connect(lambda: _connected(start()), Client.disconnect)
