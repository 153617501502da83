"""The README's examples are the files in ``examples/``, and they run: the gateway example
serves the client example, which prints the answer and three events, once each, in order."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from conftest import Process, free_port, run_async

HERE = Path(__file__).resolve().parents[1]


def test_the_readme_shows_the_example_files_as_they_are() -> None:
    readme = (HERE / "README.md").read_text()
    shown = re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", readme, re.S)
    assert [path for path, _ in shown] == ["examples/serve.py", "examples/connect.py"]
    for path, code in shown:
        assert code == (HERE / path).read_text(), f"README.md's copy of {path} differs"


@run_async(60)
async def test_the_examples_run() -> None:
    port = free_port()
    server = await Process.start(sys.executable, str(HERE / "examples" / "serve.py"), str(port))
    try:
        url = await server.line_starting("listening on ")
        assert url == f"ws://127.0.0.1:{port}/ws"
        client = await Process.start(sys.executable, str(HERE / "examples" / "connect.py"), url)
        assert await client.wait(30) == 0, client.err
        assert client.out == ["echo: hello", "#1 event 1", "#2 event 2", "#3 event 3", "closed: requested"]
    finally:
        # Ctrl-C closes the gateway gracefully and exits cleanly.
        assert await server.stop(signal.SIGINT) == 0, server.err
