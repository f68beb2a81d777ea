"""Two raw-ASGI routes that show the validator what the ENGINE did, not what Starlette did.

Both sit in front of every refapp's routing (``RequestCounter`` and the driver
refapps' dispatcher hand them the scope before any framework sees it), so the
scope is exactly the engine's and ``send``/``receive`` are the engine's own.
They are not in the refapps' OpenAPI documents on purpose: Tier 2 and the
Markov walk only call declared operations, so neither fuzzes them.

* ``GET /_probatorium/scope[/...]``: the raw ASGI scope as JSON. Byte strings
  are ``{"$bytes": latin-1 text}``, tuples and lists are JSON lists, anything
  else not JSON-native is ``{"$type": name, "repr": ...}``, so the validator
  sees every key's Python type (issue 12 item 11; docs/asgi-probes.md).
* ``GET /_probatorium/orphan``: a streaming response written with raw
  ``send()`` that never calls ``receive()``. The only way the engine can stop
  it after the client is gone is to make ``send`` raise (ASGI HTTP spec,
  "Disconnected Client"). ``ORPHANS.open`` is served on ``/debug/vars`` as
  ``orphans_open`` (issue 12 item 10). The loop is bounded: it stops by itself
  after ``ORPHAN_MAX_S`` seconds, counted in ``orphans_capped``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.types import Receive, Scope, Send

SCOPE_PATH = "/_probatorium/scope"
ORPHAN_PATH = "/_probatorium/orphan"
ORPHAN_CHUNK = b"o" * 1024
ORPHAN_INTERVAL_S = 0.02
ORPHAN_MAX_S = 20.0  # short: an engine that never stops orphans waits for them on shutdown
_MAX_DEPTH = 6


class _Orphans:
    def __init__(self) -> None:
        self.open = 0
        self.started = 0
        self.send_raised = 0  # the engine stopped it: send() raised once the client was gone
        self.capped = 0  # nobody stopped it: it ran for ORPHAN_MAX_S and ended itself


ORPHANS = _Orphans()


def debug_fields() -> dict[str, int]:
    """The fields every refapp's /debug/vars adds for the orphan route."""
    return {"orphans_open": ORPHANS.open, "orphans_started": ORPHANS.started,
            "orphans_send_raised": ORPHANS.send_raised, "orphans_capped": ORPHANS.capped}


def is_probe_path(path: str) -> bool:
    return path == ORPHAN_PATH or path == SCOPE_PATH or path.startswith(SCOPE_PATH + "/")


def encode_value(value: Any, depth: int = 0) -> Any:
    """A scope value as JSON that keeps its Python type visible."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": bytes(value).decode("latin-1")}
    if depth >= _MAX_DEPTH:
        return {"$type": type(value).__name__, "repr": repr(value)[:200]}
    if isinstance(value, dict):
        return {str(k): encode_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v, depth + 1) for v in value]
    return {"$type": type(value).__name__, "repr": repr(value)[:200]}


def scope_record(scope: Scope) -> dict[str, Any]:
    """The scope as the engine built it; `state` and `extensions` keep only their keys' names."""
    out: dict[str, Any] = {}
    for key, value in scope.items():
        if key in ("state", "extensions") and isinstance(value, dict):
            out[key] = {"$keys": sorted(str(k) for k in value)}
        else:
            out[key] = encode_value(value)
    return out


async def scope_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    more = True
    while more:  # drain the request body (bounded by the engine's own body framing)
        message = await receive()
        if message["type"] != "http.request":
            return
        more = bool(message.get("more_body"))
    body = json.dumps({"scope": scope_record(scope)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def orphan_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """Streams 1 KiB every 20 ms with raw send() and NEVER awaits receive()."""
    ORPHANS.open += 1
    ORPHANS.started += 1
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"no-cache")]})
        end = time.monotonic() + ORPHAN_MAX_S
        while time.monotonic() < end:
            await send({"type": "http.response.body", "body": ORPHAN_CHUNK, "more_body": True})
            await asyncio.sleep(ORPHAN_INTERVAL_S)
        ORPHANS.capped += 1
        await send({"type": "http.response.body", "body": b""})
    except Exception:  # noqa: BLE001 - any exception out of send() means the engine stopped us
        ORPHANS.send_raised += 1
    finally:
        ORPHANS.open -= 1


async def probe_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serves the two probe paths (the caller checked is_probe_path)."""
    if scope.get("path") == ORPHAN_PATH:
        await orphan_endpoint(scope, receive, send)
    else:
        await scope_endpoint(scope, receive, send)
