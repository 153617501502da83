"""What both loops need from ``websockets``: options, close codes and credentials.

The options hand every protocol decision to the machines: no library keepalive pings (the core
runs the heartbeat), no library open timeout (the core's handshake timeout covers it), no
compression (tether's Rust adapters speak none either), and message limits above the core's
own, so an oversized frame is the core's typed error rather than a library close.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.connection import Connection

#: How long a closing handshake may take before the socket is dropped (the Rust driver's).
CLOSE_GRACE = 1.0

#: Largest message the client's socket accepts (tungstenite's default, above the core's
#: ``max_frame_bytes``).
CLIENT_MAX_MESSAGE = 64 << 20

#: Largest message the server's socket accepts (the Rust server's; the core refuses more than
#: its ``max_payload`` with a typed error).
SERVER_MAX_MESSAGE = 16 << 20

#: Messages a socket buffers before it stops reading from the network.
MAX_QUEUE = 256


def socket_options(factory: Any, max_size: int) -> Dict[str, Any]:
    """Keyword arguments for ``websockets``' ``connect`` or ``serve``."""
    options: Dict[str, Any] = {
        "compression": None,
        "ping_interval": None,
        "ping_timeout": None,
        "close_timeout": CLOSE_GRACE,
        "max_size": max_size,
        "max_queue": MAX_QUEUE,
    }
    # websockets >= 15 follows HTTP(S)_PROXY by default: a gateway on loopback must not be
    # reached through a proxy the environment happens to name.
    if "proxy" in inspect.signature(factory).parameters:
        options["proxy"] = None
    return options


def with_token(url: str, token: Optional[str]) -> str:
    """``url`` with ``token=<token>`` appended to its query (percent-encoded), if given."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"unsupported scheme {parts.scheme!r} in {url!r}: use ws:// or wss://")
    if token is None:
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def received_close(ws: Connection) -> Tuple[Optional[int], str]:
    """The close frame the peer sent: ``(code, reason)``, or ``(None, ...)`` without one."""
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        return None, "connection lost"
    return int(rcvd.code), rcvd.reason


async def close(ws: Connection, code: int, reason: str) -> None:
    """Sends a close frame and waits (at most ``CLOSE_GRACE``) for the closing handshake."""
    try:
        await ws.close(code, reason)
    except Exception:  # noqa: BLE001 - a socket already gone is closed enough
        ws.transport.abort()
