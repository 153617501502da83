"""``tether.serve`` (the gateway in Python) against tether's Rust client through the fault proxy,
and its own guarantees: restart from the state file, requests answered once, health, presence,
typed command errors."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from pathlib import Path
from typing import Any, List

import pytest

import tether
from conftest import TOKEN, Process, faults, proxy, run_async, tether_bin

EVENTS = 600


@run_async(90)
async def test_rust_tether_connect_through_cuts_against_python_serve() -> None:
    async with tether.serve("127.0.0.1", 0, token=TOKEN, agents=["echo"]) as gateway:

        async def produce() -> None:
            async for event in gateway.events():
                if isinstance(event, tether.SessionCreated):
                    for n in range(1, EVENTS + 1):
                        gateway.publish(event.session, "message", content=f"event {n}", n=n)

        producer = asyncio.ensure_future(produce())
        cutter, through = await proxy(gateway.url, "--seed", "5", "--cut-every", "30")
        try:
            client = await Process.start(
                str(tether_bin()), "connect", through, "--agent-id", "echo",
                "--token", TOKEN, "--count", str(EVENTS), "--json", name="tether connect",
            )
            assert await client.wait(60) == 0, client.err
            printed = [json.loads(line) for line in client.out]
            assert [p["seq"] for p in printed] == list(range(1, EVENTS + 1)), "once, in order"
            assert [p["n"] for p in printed] == list(range(1, EVENTS + 1))
            await cutter.stop(signal.SIGINT)
            cuts = [f for f in faults(cutter) if f["fault"] == "cut"]
            assert len(cuts) >= 20, cutter.out
            resumes = [line for line in client.err if "resumed" in line]
            assert len(resumes) >= 20, client.err
        finally:
            producer.cancel()
            await cutter.stop()


async def echo(request: tether.Request) -> str:
    if request.content == "fail":
        raise RuntimeError("the agent failed")
    return f"echo: {request.content}"


@run_async(60)
async def test_sessions_survive_a_restart_from_the_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "sessions.json"
    gateway = await tether.serve("127.0.0.1", 0, token=TOKEN, agents={"echo": echo}, state_file=state_file, events=False)
    client = await tether.connect(gateway.url, agent_id="echo", token=TOKEN, backoff_initial=0.05, backoff_max=0.2)
    session = client.session_id
    assert session is not None
    assert (await client.send("hello")).content == "echo: hello"
    failed = await client.send("fail")
    assert failed.status == "final" and failed.result["status"] == "error"
    for n in range(3):
        gateway.publish(session, "message", n=n)
    port = gateway.port
    await gateway.close()
    assert json.loads(state_file.read_text())["sessions"][0]["session_id"] == session

    # Published while the client is away, by the restarted gateway: replayed on its resume.
    gateway = await tether.serve("127.0.0.1", port, token=TOKEN, agents={"echo": echo}, state_file=state_file, events=False)
    try:
        for n in range(3, 6):
            gateway.publish(session, "message", n=n)
        seen: List[Any] = []
        async for event in client.events():
            if isinstance(event, tether.Delivered) and event.kind == "message":
                seen.append((event.data["n"], event.replayed))
                if len(seen) == 6:
                    break
            assert not isinstance(event, (tether.Gap, tether.Lost, tether.ServerReset, tether.SessionReplaced)), event
        assert [n for n, _ in seen] == list(range(6))
        assert all(replayed for _, replayed in seen[3:])
        assert client.session_id == session
        # A resent request id gets the original answer, not a second run.
        again = await client.send("other", request_id=_first_request_id(state_file))
        assert (again.status, again.content) == ("duplicate", "echo: hello")
    finally:
        await client.disconnect()
        await gateway.close()


def _first_request_id(state_file: Path) -> str:
    snapshot = json.loads(state_file.read_text())
    return str(snapshot["sessions"][0]["dedup"][0]["request_id"])


@run_async(30)
async def test_health_presence_and_typed_command_errors() -> None:
    async with tether.serve("127.0.0.1", 0, token=TOKEN, agents=["echo"], events=False) as gateway:
        async with tether.connect(gateway.url, agent_id="echo", token=TOKEN) as client:
            presence = gateway.presence()
            assert [p["metadata"]["session_id"] for p in presence] == [client.session_id]
            health = await asyncio.to_thread(_get_json, gateway.url.replace("ws://", "http://").replace("/ws", "/health"))
            assert health["status"] == "healthy" and health["clients"] == 1
            assert health.keys() == gateway.health().keys()
            with pytest.raises(tether.UnknownSession):
                gateway.publish("no-such-session", "message", text="x")
            with pytest.raises(tether.ReservedName):
                gateway.publish(client.session_id or "", "hello_ok")
            with pytest.raises(tether.ReservedName):
                gateway.publish(client.session_id or "", "message", seq=3)
            assert gateway.broadcast("announcement", {"text": "hi"}) == 1
            async for event in client.events():
                if isinstance(event, tether.Notice):
                    assert event.kind == "announcement" and event.data["data"] == {"text": "hi"}
                    break
        with pytest.raises(tether.AuthenticationFailed):
            await tether.connect(gateway.url, agent_id="echo", token="wrong")
        with pytest.raises(tether.Rejected) as refused:
            await tether.connect(gateway.url, agent_id="nobody", token=TOKEN)
        assert refused.value.closed is not None and refused.value.closed.rejection is not None
        assert refused.value.closed.rejection.code == "agent_not_found"


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())
