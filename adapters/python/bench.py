#!/usr/bin/env python3
"""Events per second the Python client receives from ``tether serve``, against two baselines
measured in the same run on the same server:

* ``bare``: a bare ``websockets`` reader doing the same JSON decode and sequence check (the
  floor of what any Python client on ``websockets`` can do; target: tether ≥ 0.8× it);
* ``praisonai``: PraisonAI's own ``GatewayClient`` (``praisonai-bot`` 0.1.16, from the peer venv
  of ``tests/peer/setup-venv.sh``; target: tether ≥ 1× it).

Each reader runs in its own process and connects to a new session; a separate publisher process
then pushes ``--events`` events into that session through the server's control hook, and the
reader times its first to its last event, parsing each (``json.loads``) and checking that
``seq`` goes up by one. Rounds interleave the readers; the medians are compared.

    python adapters/python/bench.py [--events 50000] [--rounds 3] [--tether target/release/tether]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-token"
READERS = ("bare", "tether", "praisonai")


# --------------------------------------------------------------------------- readers (children)


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class InOrder:
    """The check every reader makes on each event (``seq`` goes up by one), and the timing
    from its first to its last event."""

    def __init__(self, reader: str, events: int) -> None:
        self.reader = reader
        self.events = events
        self.expected = 1
        self.first = 0.0

    def see(self, seq: int) -> bool:
        """Checks one event; true once the last has been seen (then reports the rate)."""
        if seq != self.expected:
            raise SystemExit(f"{self.reader}: seq {seq}, expected {self.expected}")
        if seq == 1:
            self.first = time.perf_counter()
        self.expected += 1
        if seq < self.events:
            return False
        report(rate=(self.events - 1) / (time.perf_counter() - self.first))
        return True


async def read_bare(url: str, events: int) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"{url}?token={TOKEN}", compression=None, ping_interval=None, max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello", "agent_id": "echo", "protocol_min": 1, "protocol_max": 2}))
        report(session=json.loads(await ws.recv())["session_id"])
        order = InOrder("bare", events)
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "message" and order.see(frame["seq"]):
                return


async def read_tether(url: str, events: int) -> None:
    import tether

    async with tether.connect(url, agent_id="echo", token=TOKEN) as client:
        report(session=client.session_id)
        order = InOrder("tether", events)
        async for event in client.events():
            if isinstance(event, tether.Delivered) and event.kind == "message":
                if order.see(event.data["seq"]):
                    return


async def read_praisonai(url: str, events: int) -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("PRAISONAI_TELEMETRY_DISABLED", "true")
    from praisonai_bot.gateway.client import GatewayClient

    client = GatewayClient(url=url, agent_id="echo", token=TOKEN)
    await client.connect()
    while not client.is_connected:
        await asyncio.sleep(0.01)
    report(session=client._session_id)
    order = InOrder("praisonai", events)
    async for event in client.events():
        data = event.data if isinstance(event.data, dict) else {}
        if data.get("type") == "message" and order.see(data["seq"]):
            break
    await client.disconnect()


# --------------------------------------------------------------------------- the run (parent)


async def publish(control: str, session: str, events: int) -> None:
    """The publisher: ``events`` events into ``session`` through the control hook."""
    host, port = control.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 24)
    left = events
    while left:
        count = min(left, 4096)
        command = {"cmd": "publish", "token": TOKEN, "session_id": session, "count": count}
        writer.write(json.dumps(command).encode() + b"\n")
        await writer.drain()
        answer = json.loads(await reader.readline())
        if not answer.get("ok"):
            raise SystemExit(f"publish: {answer}")
        left -= count
    writer.close()


async def measure(python: str, kind: str, url: str, control: str, events: int) -> float:
    child = await asyncio.create_subprocess_exec(
        python, __file__, "--reader", kind, "--url", url, "--events", str(events),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    session = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))["session"]
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publish", control, "--session", session, "--events", str(events),
    )
    line = await asyncio.wait_for(child.stdout.readline(), 300)
    await publisher.wait()
    await child.wait()
    if not line:
        raise SystemExit(f"the {kind} reader failed")
    return float(json.loads(line)["rate"])


def peer_python(given: Optional[str]) -> Optional[str]:
    if given:
        return given
    done = subprocess.run(
        ["bash", str(ROOT / "tests" / "peer" / "setup-venv.sh")], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


async def run(args: argparse.Namespace) -> None:
    binary = args.tether or next(
        (str(p) for p in (ROOT / "target/release/tether", ROOT / "target/debug/tether") if p.exists()),
        None,
    )
    if binary is None:
        raise SystemExit("no tether binary: cargo build --release --bin tether")
    server = await asyncio.create_subprocess_exec(
        binary, "serve", "--listen", "127.0.0.1:0", "--token", TOKEN, "--control", "127.0.0.1:0",
        "--heartbeat-ms", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert server.stdout is not None
    url = control = ""
    while not (url and control):
        line = (await server.stdout.readline()).decode()
        if line.startswith("listening on "):
            url = line.split()[-1]
        elif line.startswith("control hook on "):
            control = line.split()[-1]
    pythons = {"bare": sys.executable, "tether": sys.executable, "praisonai": peer_python(args.peer_python)}
    rates: Dict[str, List[float]] = {kind: [] for kind in READERS}
    try:
        for round_no in range(args.rounds):
            for kind in READERS:
                python = pythons[kind]
                if python is None:
                    continue
                rate = await measure(python, kind, url, control, args.events)
                rates[kind].append(rate)
                print(f"round {round_no + 1}: {kind:9} {rate:10,.0f} events/s", flush=True)
    finally:
        server.terminate()
        await server.wait()
    median = {kind: statistics.median(r) for kind, r in rates.items() if r}
    print(f"\n{args.events:,} events a run, {args.rounds} rounds, medians ({Path(binary).parent.name} tether serve):")
    for kind, rate in median.items():
        print(f"  {kind:9} {rate:10,.0f} events/s")
    print(f"tether vs bare websockets reader: {median['tether'] / median['bare']:.2f}x (target >= 0.8x)")
    if "praisonai" in median:
        print(f"tether vs PraisonAI client:       {median['tether'] / median['praisonai']:.2f}x (target >= 1x)")
    else:
        print("PraisonAI client: SKIPPED (peer venv unavailable: tests/peer/setup-venv.sh)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tether", help="the tether binary (default: target/release, else target/debug)")
    parser.add_argument("--peer-python", help="python of the PraisonAI peer venv")
    parser.add_argument("--reader", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--publish", metavar="CONTROL", help=argparse.SUPPRESS)
    parser.add_argument("--session", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        asyncio.run({"bare": read_bare, "tether": read_tether, "praisonai": read_praisonai}[args.reader](args.url, args.events))
    elif args.publish:
        asyncio.run(publish(args.publish, args.session, args.events))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
