"""The bench cells (workloads) as data.

A cell names one request shape, how many connections drive it, what a
correct answer looks like (status, content type, body check) and what it
needs: ``capabilities`` a competitor must declare, ``services`` that must be
up (driver cells). A competitor lacking either makes the cell
``not_applicable`` with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from probatorium.errors import UsageError

PLAINTEXT_BODY = b"Hello, World!"
JSON_BODY = {"message": "Hello, World!"}
POST_BODY = bytes((i * 31 + 7) % 251 for i in range(4096))  # 4 KiB, deterministic
KV_VALUE = b"v" * 100


def _exact(expected: bytes):
    def check(body: bytes) -> str | None:
        return None if body == expected else f"body {body[:60]!r} != {expected[:60]!r}"
    return check


def _json_equals(expected: dict):
    def check(body: bytes) -> str | None:
        try:
            got = json.loads(body)
        except ValueError:
            return f"body is not JSON: {body[:60]!r}"
        return None if got == expected else f"JSON {got!r} != {expected!r}"
    return check


@dataclass(frozen=True)
class Cell:
    """One workload."""

    name: str
    kind: str = "http"  # "http" | "ws" | "sse" (loadgen kinds)
    method: str = "GET"
    path: str = "/plaintext"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    connections: int = 64
    close: bool = False  # connection churn: a new connection per request
    expected_status: int = 200
    content_type: str | None = "text/plain"  # prefix the Content-Type must start with
    body_check: object = None  # callable(bytes) -> None | reason
    capabilities: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    #: requests sent once before verification (e.g. seed the key a GET reads)
    setup: tuple[tuple[str, str, bytes], ...] = ()
    rate_search: bool = True  # open-loop latency_at_slo applies (not to SSE)
    description: str = ""

    def check_body(self, body: bytes) -> str | None:
        """None when the body is right, else the reason."""
        if self.body_check is None:
            return None
        return self.body_check(body)  # type: ignore[operator]


CELLS: dict[str, Cell] = {c.name: c for c in (
    Cell("plaintext", path="/plaintext", body_check=_exact(PLAINTEXT_BODY),
         capabilities=("plaintext",), description="GET 13-byte text/plain"),
    Cell("json", path="/json", content_type="application/json", body_check=_json_equals(JSON_BODY),
         capabilities=("json",), description="GET a small JSON document"),
    Cell("path-param", path="/users/12345", content_type="application/json",
         body_check=_json_equals({"id": 12345, "name": "user-12345"}),
         capabilities=("path_param",), description="GET /users/{id}, router extracts id"),
    Cell("post-4k", method="POST", path="/echo-body", body=POST_BODY,
         headers=(("Content-Type", "application/octet-stream"),),
         content_type="application/octet-stream", body_check=_exact(POST_BODY),
         capabilities=("post_body",), description="POST 4 KiB, echoed"),
    Cell("conn-1024", path="/plaintext", connections=1024, body_check=_exact(PLAINTEXT_BODY),
         capabilities=("plaintext",), description="plaintext on 1024 connections"),
    Cell("churn", path="/plaintext", connections=64, close=True, body_check=_exact(PLAINTEXT_BODY),
         capabilities=("plaintext",), description="plaintext, Connection: close each request"),
    Cell("ws-echo", kind="ws", path="/ws", connections=64, expected_status=101, content_type=None,
         capabilities=("websocket",), description="WebSocket echo of a 13-byte text message"),
    Cell("sse-fanout", kind="sse", path="/events", connections=256, content_type="text/event-stream",
         capabilities=("sse",), rate_search=False,
         description="256 SSE subscribers of one broadcast; events/s and delivery lag"),
    # driver cells: the driver refapps' key/value contract (PUT/GET /kv/{key})
    *(c for svc, slug in (("postgres", "pg"), ("redis", "redis"), ("memcached", "memcached")) for c in (
        Cell(f"{slug}-get", path="/kv/bench-key", content_type="application/octet-stream",
             body_check=_exact(KV_VALUE), capabilities=(f"driver_{svc}",), services=(svc,),
             setup=(("PUT", "/kv/bench-key", KV_VALUE),), description=f"GET /kv/{{key}} from {svc}"),
        Cell(f"{slug}-set", method="PUT", path="/kv/bench-key", body=KV_VALUE,
             headers=(("Content-Type", "application/octet-stream"),), content_type="application/json",
             capabilities=(f"driver_{svc}",), services=(svc,),
             setup=(("PUT", "/kv/bench-key", KV_VALUE),), description=f"PUT /kv/{{key}} into {svc}"),
    )),
    Cell("redis-pipeline", method="POST", path="/pipeline?n=10", content_type="application/json",
         capabilities=("driver_redis",), services=("redis",),
         description="POST /pipeline?n=10: one MULTI/EXEC of 10 SET + 10 GET + DEL"),
)}

#: The short default set (`probatorium bench` with no flags).
DEFAULT_CELLS = ("plaintext", "json", "post-4k")


def select_cells(spec: str | None) -> list[Cell]:
    """`all`, `default`/empty, or a comma list of cell names; UsageError naming the valid ones."""
    if not spec or spec == "default":
        return [CELLS[n] for n in DEFAULT_CELLS]
    if spec == "all":
        return list(CELLS.values())
    out = []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        if name not in CELLS:
            raise UsageError(f"unknown bench cell {name!r}; valid: all, default, {', '.join(CELLS)}")
        out.append(CELLS[name])
    return out
