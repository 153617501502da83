"""Helpers of the package's tests: the built ``tether`` binary, processes that are always
stopped, the control hooks, the PraisonAI peer, and running a coroutine under a time limit."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, TypeVar

import pytest

import tether

ROOT = Path(__file__).resolve().parents[3]
PEER = ROOT / "tests" / "peer"
TOKEN = "python-test-token"

T = TypeVar("T")


def run_async(limit: float) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., T]]:
    """Runs an async test in a fresh event loop, failing it after ``limit`` seconds."""

    def wrap(test: Callable[..., Awaitable[T]]) -> Callable[..., T]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> T:
            return asyncio.run(asyncio.wait_for(test(*args, **kwargs), limit))

        return run

    return wrap


async def messages(events: AsyncIterator[tether.Event], count: int, notable: List[Any]) -> List[int]:
    """The ``seq`` of the next ``count`` delivered ``message`` events; gaps, losses, resets and
    replaced sessions go to ``notable``; the client closing fails the test."""
    seqs: List[int] = []
    while len(seqs) < count:
        event = await events.__anext__()
        if isinstance(event, tether.Delivered) and event.kind == "message":
            seqs.append(event.seq)
        elif isinstance(event, (tether.Gap, tether.Lost, tether.ServerReset, tether.SessionReplaced)):
            notable.append(event)
        elif isinstance(event, tether.Closed):
            raise AssertionError(f"closed: {event}")
    return seqs


def tether_bin() -> Path:
    """The Rust ``tether`` command: ``$TETHER_BIN``, else ``target/debug/tether`` (built by
    ``cargo build --bin tether`` if missing)."""
    given = os.environ.get("TETHER_BIN")
    if given:
        return Path(given)
    path = ROOT / "target" / "debug" / "tether"
    if not path.exists():
        subprocess.run(["cargo", "build", "--bin", "tether"], cwd=ROOT, check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Process:
    """A child process whose output is read line by line as it comes; stopped when the test
    ends."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.out: List[str] = []
        self.err: List[str] = []
        self._lines: asyncio.Queue[Optional[str]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            loop.create_task(self._drain(proc.stdout, self.out, self._lines)),
            loop.create_task(self._drain(proc.stderr, self.err, None)),
        ]

    @classmethod
    async def start(cls, *args: str, name: Optional[str] = None) -> Process:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "RUST_LOG"},
            # A test run in the background inherits an ignored SIGINT; the children that are
            # stopped with Ctrl-C must see it.
            preexec_fn=_default_sigint,
        )
        return cls(proc, name or Path(args[0]).name)

    @staticmethod
    async def _drain(
        pipe: asyncio.StreamReader,
        lines: List[str],
        queue: Optional[asyncio.Queue[Optional[str]]],
    ) -> None:
        while True:
            raw = await pipe.readline()
            if not raw:
                if queue is not None:
                    queue.put_nowait(None)
                return
            text = raw.decode(errors="replace").rstrip("\n")
            lines.append(text)
            if queue is not None:
                queue.put_nowait(text)

    async def line(self, limit: float = 30) -> str:
        """The next line of stdout (fails at its end or after ``limit`` seconds)."""
        try:
            text = await asyncio.wait_for(self._lines.get(), limit)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: no output within {limit}s; stderr: {self.err}")
        if text is None:
            await asyncio.wait(self._readers, timeout=5)
            raise AssertionError(f"{self.name} ended its output; stderr: {self.err}")
        return text

    async def line_starting(self, prefix: str, limit: float = 30) -> str:
        while True:
            text = await self.line(limit)
            if text.startswith(prefix):
                return text[len(prefix) :]

    async def stop(self, sig: int = signal.SIGTERM, limit: float = 10) -> int:
        """Signals the process, waits for it (kills it after ``limit``) and reads the rest of
        its output."""
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
                await asyncio.wait_for(self.proc.wait(), limit)
            except (ProcessLookupError, asyncio.TimeoutError):
                self.proc.kill()
                await self.proc.wait()
        await asyncio.wait(self._readers, timeout=5)
        return int(self.proc.returncode or 0)

    async def wait(self, limit: float) -> int:
        await asyncio.wait_for(self.proc.wait(), limit)
        await asyncio.wait(self._readers, timeout=5)
        return int(self.proc.returncode or 0)


class TetherServe:
    """``tether serve`` with a token and its control hook."""

    def __init__(self, process: Process, url: str, control: str) -> None:
        self.process = process
        self.url = url
        self.control = control

    @classmethod
    async def start(cls, *extra: str, listen: str = "127.0.0.1:0") -> TetherServe:
        process = await Process.start(
            str(tether_bin()), "serve", "--listen", listen, "--token", TOKEN,
            "--control", "127.0.0.1:0", *extra, name="tether serve",
        )
        url = await process.line_starting("listening on ")
        control = await process.line_starting("control hook on ")
        return cls(process, url, control)

    async def publish(self, session: str, count: int) -> List[int]:
        """Publishes ``count`` events into ``session`` through the control hook; their
        cursors."""
        cursors: List[int] = []
        while count > 0:
            batch = min(count, 4096)
            answer = await control(
                self.control,
                {"cmd": "publish", "token": TOKEN, "session_id": session, "count": batch},
            )
            cursors.extend(int(sent["cursor"]) for sent in answer["sent"])
            count -= batch
        return cursors


async def control(address: str, command: Dict[str, Any]) -> Dict[str, Any]:
    """One command on a line-JSON control port (tether's hook or the PraisonAI harness's)."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    try:
        writer.write(json.dumps(command).encode() + b"\n")
        await writer.drain()
        answer: Dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), 20))
    finally:
        writer.close()
    assert answer.get("ok") is True, f"{command} -> {answer}"
    return answer


async def proxy(upstream_url: str, *flags: str) -> tuple[Process, str]:
    """``tether proxy`` in front of ``upstream_url`` (``--json``); the process and the URL
    clients connect to."""
    upstream = upstream_url.removeprefix("ws://").removesuffix("/ws")
    process = await Process.start(
        str(tether_bin()), "proxy", "127.0.0.1:0", upstream, "--json", *flags,
        name="tether proxy",
    )
    banner = json.loads(await process.line())
    return process, str(banner["proxy"])


def faults(process: Process) -> List[Dict[str, Any]]:
    """The fault lines ``tether proxy --json`` printed (all of them once it is stopped)."""
    return [json.loads(line) for line in process.out[1:]]


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """The PraisonAI peer venv's python (``tests/peer/setup-venv.sh``). Skipped, loudly, only
    when ``TETHER_INTEROP=skip`` (``scripts/test`` sets it when PyPI is unreachable)."""
    if os.environ.get("TETHER_INTEROP") == "skip":
        pytest.skip("PraisonAI interop: TETHER_INTEROP=skip (PyPI unreachable)")
    done = subprocess.run(
        ["bash", str(PEER / "setup-venv.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            "the PraisonAI peer could not be installed (set TETHER_INTEROP=skip only when PyPI "
            f"is unreachable): {done.stderr}"
        )
    return Path(done.stdout.strip())
