"""The Python client against ``tether serve`` (the Rust gateway): a stream in order, cuts by
the fault proxy, terminal refusals, and requests sent while the server is down."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any, Dict, List

import pytest

import tether
from conftest import TOKEN, TetherServe, faults, free_port, messages, proxy, run_async


@run_async(60)
async def test_ten_thousand_events_arrive_in_order() -> None:
    server = await TetherServe.start()
    try:
        async with tether.connect(server.url, agent_id="echo", token=TOKEN) as client:
            assert client.session_id is not None
            cursors = await server.publish(client.session_id, 10_000)
            assert cursors == list(range(1, 10_001))
            notable: List[Any] = []
            seqs: List[int] = []
            parsed: List[int] = []
            async for event in client.events():
                if isinstance(event, tether.Delivered) and event.kind == "message":
                    seqs.append(event.seq)
                    parsed.append(event.data["seq"])
                    if len(seqs) == 10_000:
                        break
                elif isinstance(event, (tether.Gap, tether.Lost, tether.ServerReset)):
                    notable.append(event)
            assert seqs == list(range(1, 10_001))
            assert parsed == seqs  # the payload is the frame as sent
            assert notable == []
            assert client.stats()["delivered"] == 10_000
            assert client.resume_state()["cursor"] == 10_000
    finally:
        await server.process.stop()


@run_async(90)
async def test_twenty_cuts_through_the_fault_proxy_deliver_every_event_once_in_order() -> None:
    server = await TetherServe.start()
    cutter, through = await proxy(server.url, "--seed", "7", "--cut-every", "100")
    events = 2_100
    try:
        resumes = 0

        def count_resumes(state: tether.State) -> None:
            nonlocal resumes
            if isinstance(state, tether.Connected) and state.resumed:
                resumes += 1

        async with tether.connect(
            through, agent_id="echo", token=TOKEN, backoff_initial=0.01, on_state=count_resumes
        ) as client:
            assert client.session_id is not None
            await server.publish(client.session_id, events)
            notable: List[Any] = []
            seqs = await messages(client.events(), events, notable)
            assert seqs == list(range(1, events + 1)), "exactly once, in order"
            assert [e for e in notable if not isinstance(e, tether.Gap)] == []
            await cutter.stop(signal.SIGINT)
            cuts = [f for f in faults(cutter) if f["fault"] == "cut"]
            assert len(cuts) >= 20, cutter.out
            assert resumes >= 20
    finally:
        await cutter.stop()
        await server.process.stop()


async def refused_after_one_attempt(url: str, error: type, **options: Any) -> tether.Closed:
    states: List[tether.State] = []
    with pytest.raises(error) as raised:
        await tether.connect(url, agent_id="echo", on_state=states.append, **options)
    attempts = [s for s in states if isinstance(s, tether.Connecting)]
    assert len(attempts) == 1, states
    assert not any(isinstance(s, tether.Reconnecting) for s in states), states
    closed = raised.value.closed
    assert isinstance(closed, tether.Closed) and closed.reason == "rejected"
    return closed


@run_async(30)
async def test_version_mismatch_ends_with_a_typed_exception_after_one_attempt() -> None:
    server = await TetherServe.start()
    try:
        closed = await refused_after_one_attempt(
            server.url, tether.VersionMismatch, token=TOKEN, versions=(3, 3)
        )
        assert closed.rejection is not None
        assert closed.rejection.code == "protocol_unsupported"
    finally:
        await server.process.stop()


@run_async(30)
async def test_wrong_token_ends_with_a_typed_exception_after_one_attempt() -> None:
    server = await TetherServe.start()
    try:
        closed = await refused_after_one_attempt(
            server.url, tether.AuthenticationFailed, token="not-the-token"
        )
        assert closed.rejection is not None and closed.rejection.code == "auth_required"
        assert closed.rejection.next_step == "reauthenticate"
    finally:
        await server.process.stop()


@run_async(60)
async def test_sends_while_the_server_is_down_resolve_once_each(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    state_file = str(tmp_path / "sessions.json")
    server = await TetherServe.start("--state-file", state_file, listen=listen)
    down = asyncio.Event()
    up_again = asyncio.Event()

    def watch(state: tether.State) -> None:
        if isinstance(state, tether.Disconnected):
            down.set()
        if isinstance(state, tether.Connected) and down.is_set():
            up_again.set()

    async with tether.connect(
        server.url, agent_id="echo", token=TOKEN, on_state=watch,
        backoff_initial=0.05, backoff_max=0.2,
    ) as client:
        session = client.session_id
        # A graceful stop: the state file keeps the session for the restarted server.
        assert await server.process.stop(signal.SIGTERM) == 0
        await asyncio.wait_for(down.wait(), 10)
        assert not client.is_connected
        sends = [asyncio.ensure_future(client.send(f"request {i}")) for i in range(5)]
        await asyncio.sleep(0.3)  # several failed reconnects while the requests wait
        assert not any(s.done() for s in sends)

        server = await TetherServe.start("--state-file", state_file, listen=listen)
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*sends), 20)
            assert [o.status for o in outcomes] == ["final"] * 5
            assert [o.content for o in outcomes] == [f"echo: request {i}" for i in range(5)]
            assert up_again.is_set() and client.session_id == session
            # Each request's outcome was reported once, and nothing is left unanswered.
            finals: Dict[str, int] = {}
            await client.disconnect()
            async for event in client.events():
                if isinstance(event, tether.RequestUpdate) and event.outcome.status != "accepted":
                    finals[event.request_id] = finals.get(event.request_id, 0) + 1
            assert sorted(finals.values()) == [1] * 5
            assert client.resume_state()["outbox"] == []
        finally:
            await server.process.stop()
