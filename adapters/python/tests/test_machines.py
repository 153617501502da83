"""The native machines driven by hand (no sockets, a virtual clock): the binding hands the
core's decisions through unchanged, and the documentation is where ``help`` looks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tether
from tether import ClientMachine, ServerMachine


def test_a_client_resumes_since_its_cursor_and_drops_duplicates() -> None:
    now = 100.0
    client = ClientMachine("echo", now, seed=bytes([1]) * 32)
    assert isinstance(client.poll_transmit(), tether.Open)
    client.handle_connected(now)
    hello = json.loads(client.poll_transmit())
    assert (hello["type"], hello["protocol_min"], hello["protocol_max"]) == ("hello", 1, 2)

    client.handle_text(now, '{"type":"hello_ok","protocol":1,"session_id":"s1","resumed":false,"cursor":0}')
    client.handle_text(now, '{"type":"message","content":"one","cursor":1,"seq":1}')
    client.handle_text(now, '{"type":"message","content":"two","cursor":2,"seq":2}')
    client.handle_closed(now, None, "connection reset")
    events = client.poll_events()
    assert [e.seq for e in events if isinstance(e, tether.Delivered)] == [1, 2]
    assert isinstance(events[-1], tether.StateChanged)

    # The reconnect waits for the backoff deadline, on the application's clock.
    deadline = client.poll_timeout()
    assert deadline is not None and now <= deadline <= now + 0.25
    client.handle_timeout(deadline)
    assert isinstance(client.poll_transmit(), tether.Open)
    client.handle_connected(deadline)
    resume = json.loads(client.poll_transmit())
    assert (resume["session_id"], resume["since"]) == ("s1", 2)

    client.handle_text(deadline, '{"type":"hello_ok","protocol":1,"session_id":"s1","resumed":true,"cursor":3}')
    client.handle_text(
        deadline,
        '{"type":"replay","event":{"type":"message","data":{"type":"message","content":"three",'
        '"cursor":3,"seq":3},"source":"gateway","target":null,"sequence":3}}',
    )
    client.handle_text(deadline, '{"type":"message","content":"two","cursor":2,"seq":2}')
    events = client.poll_events()
    delivered = [e for e in events if isinstance(e, tether.Delivered)]
    assert [(d.seq, d.replayed, d.data["content"]) for d in delivered] == [(3, True, "three")]
    assert not any(isinstance(e, (tether.Gap, tether.Lost)) for e in events)
    assert client.stats()["duplicates"] == 1
    assert client.resume_state()["cursor"] == 3


def test_a_client_restarted_from_its_resume_state_rejoins_and_resends() -> None:
    client = ClientMachine("echo", 0.0, seed=bytes([2]) * 32)
    client.poll_transmits()
    client.handle_connected(0.0)
    client.poll_transmits()
    client.handle_text(0.0, '{"type":"hello_ok","protocol":2,"session_id":"s9","resumed":false,"cursor":0,"sequence":0}')
    client.handle_text(0.0, '{"type":"message","cursor":1,"seq":1}')
    rid = client.send(0.0, {"ask": "question"}, "req-1")
    assert rid == "req-1"
    client.poll_events()
    state = json.loads(json.dumps(client.resume_state()))  # JSON-serialisable

    restarted = ClientMachine("echo", 50.0, seed=bytes([3]) * 32, resume=state)
    restarted.poll_transmits()
    restarted.handle_connected(50.0)
    frames = [json.loads(t) for t in restarted.poll_transmits() if isinstance(t, str)]
    assert (frames[0]["session_id"], frames[0]["since"]) == ("s9", 1)
    restarted.handle_text(50.0, '{"type":"hello_ok","protocol":2,"session_id":"s9","resumed":true,"cursor":1,"sequence":1}')
    frames = [json.loads(t) for t in restarted.poll_transmits() if isinstance(t, str)]
    assert {"type": "message", "content": {"ask": "question"}, "request_id": "req-1"}.items() <= frames[0].items()


def test_send_refusals_are_typed() -> None:
    client = ClientMachine("echo", 0.0, seed=bytes([4]) * 32, outbox_capacity=1)
    with pytest.raises(tether.EmptyContent):
        client.send(0.0, "")
    client.send(0.0, "one", "a")
    with pytest.raises(tether.OutboxFull):
        client.send(0.0, "two")
    client.disconnect(0.0)
    with pytest.raises(tether.ClientClosed):
        client.send(0.0, "three")
    closed = client.poll_events()[-1]
    assert isinstance(closed, tether.Closed) and closed.reason == "requested"
    with pytest.raises(tether.ConfigError):
        ClientMachine("echo", 0.0, seed=bytes([5]) * 32, versions=(2, 1))
    with pytest.raises(ValueError):
        client.handle_timeout(float("nan"))


def test_a_server_numbers_keeps_and_replays_events_and_round_trips_its_snapshot() -> None:
    server = ServerMachine(10.0, seed=os.urandom(32), epoch=1_700_000_000.0, agents=["echo"])
    server.handle_connected(10.0, 1, None)
    server.handle_text(10.0, 1, '{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2}')
    frames = server.poll_transmits()
    hello_ok = json.loads(frames[0][1])
    assert frames[0][0] == 1 and hello_ok["type"] == "hello_ok" and hello_ok["protocol"] == 2
    session = hello_ok["session_id"]
    created = [e for e in server.poll_events() if isinstance(e, tether.SessionCreated)]
    assert [(e.session, e.conn, e.agent_id) for e in created] == [(session, 1, "echo")]
    assert server.publish(10.0, session, "message", {"text": "hi"}) == 1
    (conn, frame), = server.poll_transmits()
    assert json.loads(frame) == {"type": "message", "text": "hi", "cursor": 1, "seq": 1}
    server.handle_sent(10.0, conn, 1, len(frame))
    server.handle_closed(11.0, 1)
    assert any(isinstance(e, tether.SessionDetached) for e in server.poll_events())
    assert server.publish(11.0, session, "message", {"text": "while away"}) == 2

    restored = ServerMachine(20.0, seed=os.urandom(32), epoch=1_700_000_010.0, snapshot=server.snapshot(11.0))
    restored.handle_connected(20.0, 7)
    restored.handle_text(
        20.0, 7,
        json.dumps({"type": "hello", "agent_id": "echo", "protocol_min": 1, "protocol_max": 2,
                    "session_id": session, "since": 1}),
    )
    texts = [json.loads(f) for _, f in restored.poll_transmits() if isinstance(f, str)]
    assert texts[0]["resumed"] is True
    assert texts[1]["type"] == "replay" and texts[1]["event"]["data"]["text"] == "while away"
    resumed = [e for e in restored.poll_events() if isinstance(e, tether.SessionResumed)]
    assert [(e.session, e.agent_id, e.lost) for e in resumed] == [(session, "echo", None)]
    with pytest.raises(tether.SnapshotError):
        ServerMachine(0.0, seed=os.urandom(32), epoch=0.0, snapshot="{}")
    with pytest.raises(tether.ConfigError):
        ServerMachine(0.0, seed=b"short", epoch=0.0)


def test_help_shows_the_documentation() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "import tether; help(tether.connect); help(tether.serve)"],
        capture_output=True, text=True, check=True, env={**os.environ, "PAGER": "cat"},
    ).stdout
    assert "Connects to a tether or PraisonAI gateway" in shown
    assert "resume: A ``client.resume_state()`` saved earlier" in shown
    assert "Serves a tether gateway" in shown
    assert tether.ClientMachine.__doc__ and "drain" in tether.ClientMachine.__doc__
    assert tether.Delivered.seq.__doc__ == "Its sequence number."
