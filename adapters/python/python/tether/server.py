"""The asyncio gateway: tether-core's server machine driven over ``websockets.serve``.

The loop only moves things: each connection's frames into the machine, the machine's frames to
each connection (confirmed back with ``handle_sent`` for its flow control), its timer to
``loop.call_at`` and its events to the application. Every protocol decision (handshakes,
numbering, replays, resumes, dedup, heartbeats, limits, closes) is the machine's.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import tempfile
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from pathlib import Path
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Union,
)
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response

from . import _transport
from ._drive import Deadline, EventQueue, Outbox, Starting
from ._native import Close, Request, ServerMachine
from ._types import ServerEvent
from .errors import AlreadyAnswered, SnapshotError, UnknownSession

__all__ = ["Gateway", "Serving", "RequestHandler", "serve"]

log = logging.getLogger("tether")

#: An agent: called with each request to it; what it returns (or awaits) is the answer.
RequestHandler = Callable[[Request], Union[Awaitable[Any], Any]]

#: Server events queued for ``events()`` before reading from connections pauses.
DEFAULT_MAX_QUEUED_EVENTS = 4096

#: How long a graceful shutdown waits for connections to take their last frames (the Rust
#: driver's).
SHUTDOWN_GRACE = 5 * _transport.CLOSE_GRACE


class _Conn:
    """One connection: its socket, what is queued for it, and whether the machine still reads
    from it."""

    __slots__ = ("ws", "outbox", "live")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.outbox = Outbox()
        self.live = True


class Gateway:
    """A running gateway. Made by :func:`serve`.

    Commands (``publish``, ``publish_to``, ``respond``, ``broadcast``, ``disconnect``) act at
    once and return what the machine returned; frames go out as the connections can take them.
    ``async for event in gateway.events()`` sees sessions come and go, requests, presence
    changes and bad input. ``await gateway.close()`` shuts down gracefully (every connection
    gets what it was owed, then close 1001) and saves the state file.
    """

    def __init__(
        self,
        machine: ServerMachine,
        *,
        agents: Mapping[str, RequestHandler],
        state_file: Optional[Path],
        max_queued_events: int,
        events: bool,
        save_every: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._machine = machine
        self._handlers = dict(agents)
        self._state_file = state_file
        self._save_every = save_every
        self._queue_events = events
        self._conns: Dict[int, _Conn] = {}
        self._no_conns = asyncio.Event()
        self._no_conns.set()
        self._next_conn = 1
        self._deadline = Deadline(self._loop, self._on_timer)
        self._events: EventQueue[ServerEvent] = EventQueue(
            self._loop, max_queued_events, _warn_unread
        )
        self._tasks: Set[asyncio.Task[Any]] = set()
        self._server: Optional[Server] = None
        self._closing: Optional[asyncio.Task[str]] = None
        self._stopped = self._loop.create_future()
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        """Where clients connect: ``ws://HOST:PORT/ws``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/ws"

    # ------------------------------------------------------------------ commands

    def publish(
        self, session: str, kind: str, fields: Optional[Mapping[str, Any]] = None, /, **more: Any
    ) -> int:
        """Records the tracked event ``{"type": kind, **fields, "cursor": n, "seq": n}`` in
        ``session`` and returns its cursor ``n``. Sent at once if a client is attached, else
        kept (for the recovery window) for its resume. Raises
        :class:`~tether.errors.UnknownSession` or :class:`~tether.errors.ReservedName`."""
        cursor = self._machine.publish(self._now(), session, kind, _fields(fields, more))
        self._pump()
        return cursor

    def publish_to(
        self,
        kind: str,
        fields: Optional[Mapping[str, Any]] = None,
        /,
        *,
        agent: Optional[str] = None,
        sessions: Optional[Iterable[str]] = None,
    ) -> int:
        """Records one tracked event in every session (or ``agent``'s sessions, or the listed
        ``sessions``), stored once and numbered by each session; returns how many got it."""
        count = self._machine.publish_to(
            self._now(),
            kind,
            _fields(fields, {}),
            agent=agent,
            sessions=list(sessions) if sessions is not None else None,
        )
        self._pump()
        return count

    def respond(
        self,
        session: str,
        request_id: str,
        content: Any,
        *,
        status: str = "ok",
        error: Optional[Mapping[str, Any]] = None,
    ) -> int:
        """Answers a :class:`Request` with its ``final`` response (``status``: ``ok``,
        ``error`` or ``rejected``; ``error``: ``{code, retryable, retry_after_seconds,
        message}``); a resend of the request gets the same answer as ``duplicate``. Returns
        its cursor."""
        cursor = self._machine.respond(
            self._now(),
            session,
            request_id,
            content,
            status,
            dict(error) if error is not None else None,
        )
        self._pump()
        return cursor

    def broadcast(self, kind: str, data: Any) -> int:
        """Sends an untracked ``{"type": kind, "data": data, ...}`` frame to every connected
        session; returns how many got it."""
        count = self._machine.broadcast(self._now(), kind, data)
        self._pump()
        return count

    def disconnect(self, conn: int, code: int = 1000, reason: str = "") -> None:
        """Closes connection ``conn`` gracefully (what it is owed first); its session stays
        resumable."""
        self._machine.disconnect(self._now(), conn, code, reason)
        self._pump()

    def presence(self) -> List[Dict[str, Any]]:
        """The connected clients: ``client_id``, ``status``, ``last_seen``, ``metadata``
        (``session_id``, ``agent_id``), ``channels``."""
        presence: List[Dict[str, Any]] = self._machine.presence()
        return presence

    def health(self) -> Dict[str, Any]:
        """Health in the PraisonAI ``/health`` shape (also served at ``GET /health``)."""
        health: Dict[str, Any] = self._machine.health(self._now())
        return health

    def stats(self) -> Dict[str, int]:
        """Memory use: sessions, connections, recovery window and log sizes."""
        stats: Dict[str, int] = self._machine.stats()
        return stats

    def snapshot(self) -> str:
        """Every session's state as JSON text (the format of ``tether serve --state-file``)."""
        return self._machine.snapshot(self._now())

    async def save_snapshot(self, path: Union[str, os.PathLike[str], None] = None) -> None:
        """Writes ``snapshot()`` to ``path`` (default: the state file) atomically."""
        target = Path(path) if path is not None else self._state_file
        if target is None:
            raise ValueError("save_snapshot() needs a path: the gateway has no state_file")
        text = self.snapshot()
        await asyncio.to_thread(_write_atomically, target, text)

    def events(self) -> AsyncIterator[ServerEvent]:
        """The server's events, in order: ``SessionCreated``, ``SessionResumed``,
        ``SessionDetached``, ``SessionExpired``, ``Request`` (answer with ``respond``, unless
        its agent has a handler), ``PresenceChanged``, ``ConnectionRejected``, ``BadInput``,
        ``Closing``. Ends when the gateway is closed.

        While more than ``max_queued_events`` wait unread, the gateway stops reading from its
        connections: consume them, or pass ``events=False`` to ``serve``.
        """
        if not self._queue_events:
            raise RuntimeError("this gateway was started with events=False")
        return self._events.iterate()

    async def close(self) -> str:
        """Graceful shutdown: new connections are refused, every connection gets its queued
        frames and events, then close 1001; the state file (if any) is saved. Returns the final
        snapshot (JSON text). Idempotent."""
        if self._closing is None:
            self._closing = self._loop.create_task(self._shutdown())
        return await asyncio.shield(self._closing)

    async def wait_closed(self) -> None:
        """Waits until the gateway has been closed."""
        await asyncio.shield(self._stopped)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ the loop

    def _now(self) -> float:
        return self._loop.time()

    async def _start(self, host: str, port: int) -> None:
        self._server = await ws_serve(
            self._handle,
            host,
            port,
            process_request=self._http,
            **_transport.socket_options(ws_serve, _transport.SERVER_MAX_MESSAGE),
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        if self._state_file is not None:
            self._spawn(self._save_periodically())
        self._deadline.follow(self._machine.poll_timeout())

    def _http(self, connection: ServerConnection, request: HttpRequest) -> Optional[Response]:
        """Plain HTTP on the WebSocket port: ``/health``; ``/ws`` upgrades; 404 elsewhere."""
        path = urlsplit(request.path).path
        if path == "/ws":
            return None
        if path == "/health":
            body = json.dumps(self.health()).encode()
            headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found: connect to /ws\n")

    async def _handle(self, ws: ServerConnection) -> None:
        conn_id = self._next_conn
        self._next_conn += 1
        conn = _Conn(ws)
        self._conns[conn_id] = conn
        self._no_conns.clear()
        token, cookie = _credentials(ws)
        peer = ws.remote_address
        machine = self._machine
        loop = self._loop
        machine.handle_connected(
            loop.time(), conn_id, token, cookie, f"{peer[0]}:{peer[1]}" if peer else None
        )
        writer = loop.create_task(self._write(conn_id, conn))
        self._pump()
        events = self._events
        try:
            async for message in ws:
                if not conn.live:
                    break
                if type(message) is str:
                    machine.handle_text(loop.time(), conn_id, message)
                else:
                    machine.handle_binary(loop.time(), conn_id, len(message))
                self._pump()
                if events.full:
                    await events.room()
        except (ConnectionClosed, OSError):
            pass
        finally:
            # Our close (if the machine queued one) goes out before the transport is let go.
            conn.outbox.end()
            await asyncio.wait([writer], timeout=2 * _transport.CLOSE_GRACE)
            writer.cancel()
            del self._conns[conn_id]
            if not self._conns:
                self._no_conns.set()
            machine.handle_closed(loop.time(), conn_id)
            self._pump()

    async def _write(self, conn_id: int, conn: _Conn) -> None:
        ws, outbox, machine, loop = conn.ws, conn.outbox, self._machine, self._loop
        items = outbox.items
        try:
            while True:
                await outbox.wait()
                if not items:
                    return  # ended
                frames = nbytes = 0
                while items:
                    item = items.popleft()
                    if isinstance(item, str):
                        await ws.send(item)
                        frames += 1
                        nbytes += len(item) if item.isascii() else len(item.encode())
                    else:
                        await _transport.close(ws, item.code, item.reason)
                        return
                # Written: they leave the connection's in-flight window.
                machine.handle_sent(loop.time(), conn_id, frames, nbytes)
                self._pump()
        except (ConnectionClosed, OSError):
            return  # the reader reports the close

    def _pump(self) -> None:
        """Drains the machine after an input: frames to their connections, events to the
        application (and the agents' handlers), the deadline to the timer."""
        machine = self._machine
        for conn_id, transmit in machine.poll_transmits():
            conn = self._conns.get(conn_id)
            if conn is None:
                continue
            if isinstance(transmit, Close):
                conn.live = False  # nothing more is fed from it
            conn.outbox.push(transmit)
        events = machine.poll_events()
        if events:
            self._deliver(events)
        self._deadline.follow(machine.poll_timeout())

    def _deliver(self, events: List[ServerEvent]) -> None:
        for event in events:
            if isinstance(event, Request):
                handler = self._handlers.get(event.agent_id)
                if handler is not None:
                    self._spawn(self._answer(handler, event))
        if self._queue_events:
            self._events.extend(events)

    async def _answer(self, handler: RequestHandler, request: Request) -> None:
        try:
            answer = handler(request)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as err:  # noqa: BLE001 - the agent's failure is its answer
            log.exception("tether: agent %r failed on request %s", request.agent_id, request.request_id)
            message = str(err) or type(err).__name__
            error = {"code": "agent_error", "retryable": False, "message": message}
            self._respond_if_alive(request, message, "error", error)
            return
        self._respond_if_alive(request, answer, "ok", None)

    def _respond_if_alive(
        self, request: Request, content: Any, status: str, error: Optional[Dict[str, Any]]
    ) -> None:
        try:
            self.respond(request.session, request.request_id, content, status=status, error=error)
        except (UnknownSession, AlreadyAnswered):
            pass  # the session expired meanwhile, or the application answered itself

    def _on_timer(self) -> None:
        self._machine.handle_timeout(self._loop.time())
        self._pump()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = self._loop.create_task(_run(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._save_every)
            try:
                await self.save_snapshot()
            except OSError as err:
                log.warning("tether: could not save the state file: %s", err)

    async def _shutdown(self) -> str:
        self._machine.shutdown(self._now())
        self._pump()
        try:
            await asyncio.wait_for(self._no_conns.wait(), SHUTDOWN_GRACE)
        except asyncio.TimeoutError:
            pass  # what is left is closed by the listener below
        # The periodic save and the agents' unfinished work stop before the last save.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        snapshot = self.snapshot()
        if self._state_file is not None:
            await asyncio.to_thread(_write_atomically, self._state_file, snapshot)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._deadline.cancel()
        self._events.finish()
        if not self._stopped.done():
            self._stopped.set_result(None)
        return snapshot


def _warn_unread(count: int) -> None:
    log.warning(
        "tether: %d gateway events are waiting for gateway.events(); connections pause until "
        "they are read (pass events=False to serve() if nobody reads them)",
        count,
    )


async def _run(work: Awaitable[Any]) -> None:
    await work


def _fields(fields: Optional[Mapping[str, Any]], more: Mapping[str, Any]) -> Dict[str, Any]:
    merged = dict(fields) if fields is not None else {}
    merged.update(more)
    return merged


def _credentials(ws: ServerConnection) -> Tuple[Optional[str], Optional[str]]:
    """The upgrade request's ``?token=`` and ``praisonai_session`` cookie."""
    request = ws.request
    if request is None:
        return None, None
    tokens = parse_qs(urlsplit(request.path).query).get("token")
    cookie = None
    header = request.headers.get("Cookie")
    if header:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except Exception:  # noqa: BLE001 - a malformed cookie is no cookie
            jar = SimpleCookie()
        morsel = jar.get("praisonai_session")
        cookie = morsel.value if morsel is not None else None
    return (tokens[0] if tokens else None), cookie


def _write_atomically(path: Path, text: str) -> None:
    """Writes a temporary file beside ``path``, then renames it over ``path``."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False
    ) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


class Serving(Starting[Gateway]):
    """What :func:`serve` returns: ``await`` it for a listening :class:`Gateway`, or use it as
    ``async with serve(...) as gateway:`` (which closes it gracefully at the end)."""


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    token: Optional[str] = None,
    agents: Union[Mapping[str, RequestHandler], Iterable[str], None] = None,
    state_file: Union[str, os.PathLike[str], None] = None,
    save_every: float = 1.0,
    events: bool = True,
    max_queued_events: int = DEFAULT_MAX_QUEUED_EVENTS,
    versions: Optional[Tuple[int, int]] = None,
    heartbeat: Optional[float] = None,
    missed_beats: Optional[int] = None,
    handshake_timeout: Optional[float] = None,
    session_ttl: Optional[float] = None,
    recovery_window: Optional[float] = None,
    recovery_session_bytes: Optional[int] = None,
    recovery_total_bytes: Optional[int] = None,
    max_sessions: Optional[int] = None,
    max_connections: Optional[int] = None,
    max_frame_bytes: Optional[int] = None,
) -> Serving:
    """Serves a tether gateway on ``ws://HOST:PORT/ws``: the PraisonAI gateway protocol (v1,
    so PraisonAI's own Python client works against it) and tether's v2, with sessions that
    survive reconnects (events produced while a client is away are replayed on its resume),
    exactly-once requests, presence, health (``GET /health``) and a state file.

    ``await serve(...)`` returns a listening :class:`Gateway`; ``async with serve(...) as
    gateway:`` closes it gracefully at the end of the block.

    Example::

        async def echo(request: tether.Request) -> str:
            return f"echo: {request.content}"

        async with tether.serve("127.0.0.1", 8765, token="secret", agents={"echo": echo}) as gateway:
            async for event in gateway.events():
                if isinstance(event, tether.SessionCreated):
                    gateway.publish(event.session, "message", text="welcome")

    Args:
        host: Address to listen on.
        port: Port (``0``: a free one; read ``gateway.port``).
        token: Shared token clients must present (``?token=``); ``None`` admits everyone.
        agents: Agent ids clients may talk to, either a mapping of agent id to a handler
            (called with each :class:`Request` to that agent; what it returns, or awaits, is
            the ``final`` answer; an exception answers with status ``error``), or just the ids
            (answer their requests with ``gateway.respond``). ``None``: any agent id, no
            handlers.
        state_file: Sessions are restored from this file at start (if it exists), saved every
            ``save_every`` seconds and at ``close()``: clients resume across a restart.
        save_every: Seconds between saves of the state file.
        events: Queue events for ``gateway.events()`` (``False`` if nobody reads them).
        max_queued_events: Events waiting for ``events()`` before reading pauses.
        versions: Protocol versions served, ``(min, max)``; default ``(1, 2)``.
        heartbeat: Ping interval, seconds (advertised to clients); ``0`` disables pings and
            reaping; default 30.
        missed_beats: Silent intervals before a connection is reaped; default 2.
        handshake_timeout: Seconds a connection has to handshake; default 10.
        session_ttl: Seconds a session outlives its last connection; default 3600.
        recovery_window: Seconds an event stays available for resumes; default 120.
        recovery_session_bytes: Most bytes one session keeps for resumes; default 64 MiB.
        recovery_total_bytes: Most bytes all sessions keep together; default 1 GiB.
        max_sessions: Most sessions held; default 10,000.
        max_connections: Most open connections; default 10,000.
        max_frame_bytes: Largest inbound frame, bytes; default 1 MiB.
    """
    if isinstance(agents, Mapping):
        handlers: Dict[str, RequestHandler] = dict(agents)
        agent_ids: Optional[List[str]] = list(handlers)
    elif agents is not None:
        handlers = {}
        agent_ids = list(agents)
    else:
        handlers, agent_ids = {}, None
    path = Path(state_file) if state_file is not None else None

    async def start() -> Gateway:
        loop = asyncio.get_running_loop()
        snapshot = None
        if path is not None:
            try:
                snapshot = await asyncio.to_thread(path.read_text, encoding="utf-8")
            except FileNotFoundError:
                snapshot = None
            except OSError as err:
                raise SnapshotError(f"state file {path}: {err}") from err
        machine = ServerMachine(
            loop.time(),
            seed=os.urandom(32),
            epoch=time.time(),
            snapshot=snapshot,
            agents=agent_ids,
            token=token,
            versions=versions,
            handshake_timeout=handshake_timeout,
            heartbeat_interval=heartbeat,
            missed_beats=missed_beats,
            session_ttl=session_ttl,
            recovery_window=recovery_window,
            recovery_session_bytes=recovery_session_bytes,
            recovery_total_bytes=recovery_total_bytes,
            max_sessions=max_sessions,
            max_connections=max_connections,
            max_frame_bytes=max_frame_bytes,
        )
        gateway = Gateway(
            machine,
            agents=handlers,
            state_file=path,
            max_queued_events=max_queued_events,
            events=events,
            save_every=save_every,
        )
        await gateway._start(host, port)
        return gateway

    return Serving(start, Gateway.close)
