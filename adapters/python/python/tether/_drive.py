"""The pieces both loops are made of: the machine's deadline as one timer, a socket's outbox,
and the application's event queue. None of them decides anything about the protocol."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Generator,
    Generic,
    Iterable,
    Optional,
    TypeVar,
    Union,
)

from ._native import Close

T = TypeVar("T")


class Deadline:
    """The machine's next deadline as one ``loop.call_at`` timer, calling ``fire`` when it
    passes. Re-armed only when the deadline moves earlier: a later one lets the armed timer
    fire early, which the machine ignores, and saves a timer per frame while a heartbeat
    deadline moves."""

    __slots__ = ("_loop", "_fire", "_handle", "_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._handle: Optional[asyncio.TimerHandle] = None
        self._at = 0.0

    def follow(self, deadline: Optional[float]) -> None:
        """Arms the timer for ``deadline`` (``None``: no deadline)."""
        handle = self._handle
        if deadline is None:
            if handle is not None:
                self.cancel()
        elif handle is None or deadline < self._at:
            if handle is not None:
                handle.cancel()
            self._at = deadline
            self._handle = self._loop.call_at(deadline, self._expired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expired(self) -> None:
        self._handle = None
        self._fire()


class Outbox:
    """What the machine wrote for one socket (frames, then maybe the close), in order, for
    the socket's writer task."""

    __slots__ = ("items", "ended", "_wake")

    def __init__(self) -> None:
        self.items: Deque[Union[str, Close]] = deque()
        #: Nothing more will be read from the socket: the writer stops once ``items`` is empty.
        self.ended = False
        self._wake: Optional[asyncio.Future[None]] = None

    def push(self, item: Union[str, Close]) -> None:
        self.items.append(item)
        self._wake_writer()

    def end(self) -> None:
        self.ended = True
        self._wake_writer()

    async def wait(self) -> None:
        """Returns once there is something to write or the socket has ended."""
        while not self.items and not self.ended:
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake

    def _wake_writer(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class EventQueue(Generic[T]):
    """Events for the application, in order. Above ``capacity`` unread, the readers wait in
    ``room()`` (backpressure: the socket is not read, memory stays bounded); the consumer is
    woken once per batch, not once per event."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        capacity: int,
        on_full: Optional[Callable[[int], None]] = None,
    ) -> None:
        self._loop = loop
        self._events: Deque[T] = deque()
        self._capacity = max(1, capacity)
        self._on_full = on_full
        self._reported_full = False
        self._consumer: Optional[asyncio.Future[None]] = None
        self._readers: Optional[asyncio.Future[None]] = None
        self._finished = False

    def extend(self, events: Iterable[T]) -> None:
        self._events.extend(events)
        if self.full and not self._reported_full and self._on_full is not None:
            self._reported_full = True
            self._on_full(len(self._events))
        self._wake_consumer()

    @property
    def full(self) -> bool:
        return len(self._events) >= self._capacity

    async def room(self) -> None:
        """Waits until the consumer has read the queue down to half its capacity (or the
        queue is finished)."""
        while self.full and not self._finished:
            if self._readers is None or self._readers.done():
                self._readers = self._loop.create_future()
            await self._readers

    def finish(self) -> None:
        """No more events will come: the iteration ends once the queue is read."""
        self._finished = True
        self._wake_consumer()
        self._wake_readers()

    async def iterate(self) -> AsyncIterator[T]:
        events = self._events
        low = self._capacity // 2
        while True:
            if not events:
                if self._finished:
                    return
                self._consumer = self._loop.create_future()
                await self._consumer
                continue
            event = events.popleft()
            if len(events) <= low:
                self._reported_full = False
                self._wake_readers()
            yield event

    def _wake_consumer(self) -> None:
        if self._consumer is not None and not self._consumer.done():
            self._consumer.set_result(None)

    def _wake_readers(self) -> None:
        if self._readers is not None and not self._readers.done():
            self._readers.set_result(None)


class Starting(Generic[T]):
    """A client or gateway being started: ``await`` it for the running one, or use it as an
    ``async with`` block, which stops it at the end."""

    def __init__(self, start: Callable[[], Awaitable[T]], stop: Callable[[T], Awaitable[Any]]) -> None:
        self._start = start
        self._stop = stop
        self._running: Optional[T] = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._start().__await__()

    async def __aenter__(self) -> T:
        self._running = await self._start()
        return self._running

    async def __aexit__(self, *exc: object) -> None:
        if self._running is not None:
            await self._stop(self._running)
