"""Interop with the real PraisonAI gateway and client (PyPI ``praisonai-bot`` 0.1.16, in the
peer venv of ``tests/peer/setup-venv.sh``), both directions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List

import tether
from conftest import PEER, TOKEN, Process, control, messages, run_async


class PraisonAIGateway:
    """The real gateway (``tests/peer/run-python-gateway.sh``), stopped at the end."""

    def __init__(self, fields: Dict[str, str]) -> None:
        self.fields = fields
        self.url = fields["WS_URL"]
        self.token = fields["TOKEN"]
        self.control = f"127.0.0.1:{fields['CONTROL_PORT']}"

    @classmethod
    async def start(cls, *args: str) -> PraisonAIGateway:
        proc = await asyncio.create_subprocess_exec(
            "bash", str(PEER / "run-python-gateway.sh"), "--max-seconds", "120", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        lines = [line.split("=", 1) for line in out.decode().splitlines() if "=" in line]
        return cls({k: v for k, v in lines})

    async def stop(self) -> None:
        proc = await asyncio.create_subprocess_exec("kill", self.fields["PID"])
        await proc.wait()


@run_async(90)
async def _client_against_praisonai() -> None:
    gateway = await PraisonAIGateway.start("--heartbeat-ms", "1000", "--missed-beats", "2")
    try:
        async with tether.connect(
            gateway.url, agent_id="echo", token=gateway.token, backoff_initial=0.05
        ) as client:
            events = client.events()
            notable: List[Any] = []
            first = await events.__anext__()
            while not (isinstance(first, tether.StateChanged) and isinstance(first.state, tether.Connected)):
                first = await events.__anext__()
            assert isinstance(first.state, tether.Connected)
            # hello/hello_ok on v1, although 1..2 was offered.
            assert (first.state.version, first.state.legacy) == (1, False)
            session = first.state.session_id

            await control(gateway.control, {"cmd": "publish", "count": 5, "type": "message"})
            assert await messages(events, 5, notable) == [1, 2, 3, 4, 5]
            assert client.resume_state()["cursor"] == 5

            # Dropped by the server mid-session: the client resumes the same session since its
            # cursor. The PraisonAI client reports a false gap here; tether's must not.
            await control(gateway.control, {"cmd": "drop", "code": 1012, "reason": "interop drop"})
            while True:
                event = await events.__anext__()
                if isinstance(event, (tether.Gap, tether.Lost)):
                    raise AssertionError(f"false gap on resume: {event}")
                if isinstance(event, tether.StateChanged) and isinstance(event.state, tether.Connected):
                    assert event.state.session_id == session and event.state.resumed
                    break

            await control(gateway.control, {"cmd": "publish", "count": 3, "type": "message"})
            assert await messages(events, 3, notable) == [6, 7, 8]
            assert notable == []
            stats = client.stats()
            assert (stats["gaps"], stats["lost"], stats["duplicates"]) == (0, 0, 0)
            assert stats["delivered"] == 8
    finally:
        await gateway.stop()


def test_python_client_against_the_real_praisonai_gateway_resumes_without_false_gap(
    peer_python: Path,
) -> None:
    _client_against_praisonai()


async def echo(request: tether.Request) -> str:
    return f"echo: {request.content}"


@run_async(90)
async def _praisonai_client_against_serve(peer_python: Path) -> Dict[str, Any]:
    async with tether.serve("127.0.0.1", 0, token=TOKEN, agents={"echo": echo}, events=False) as gateway:
        probe = await Process.start(
            str(peer_python), str(PEER / "python_client_probe.py"),
            "--url", gateway.url, "--token", TOKEN, "--resume", name="python_client_probe",
        )
        report_line = await probe.line(60)
        await probe.wait(10)
        report: Dict[str, Any] = json.loads(report_line)
        return report


def test_real_praisonai_client_against_tether_serve_connects_resumes_and_gets_duplicate(
    peer_python: Path,
) -> None:
    report = _praisonai_client_against_serve(peer_python)
    assert report["ok"] is True, report["steps"]
    for step in ["connect", "final", "reconnect", "resume_same_session", "duplicate"]:
        assert report["steps"][step] is True, step
    notes = [e["note"] for e in report["frames"] if "note" in e]
    assert not any("on_gap" in n for n in notes), notes
    received = [e["frame"] for e in report["frames"] if e.get("dir") == "S->C"]
    statuses = [f["status"] for f in received if f.get("type") == "response"]
    assert statuses[:2] == ["accepted", "final"], statuses
    assert "duplicate" in statuses
    finals = [f for f in received if f.get("type") == "response" and f["status"] == "final"]
    assert finals[0]["content"] == "echo: probe"
    # hello_ok carries the sequence the Python client needs.
    assert any(f.get("type") == "hello_ok" and isinstance(f.get("sequence"), int) for f in received)
