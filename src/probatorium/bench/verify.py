"""Check that a competitor answers a cell correctly before it is measured.

A wrong status, content type or body makes the cell ``invalid``: a server
that is fast at answering the wrong thing is not fast. HTTP cells are checked
with one stdlib request (after the cell's setup requests); WebSocket and SSE
cells with a short load-generator run, whose handshake, echo-payload and
content-type checks are the real ones.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from urllib.parse import urlsplit

from probatorium.bench.cells import Cell
from probatorium.loadgen import LoadConfig, NoConnectionError, run_load


@dataclass
class Verdict:
    """Outcome of verifying one cell on one competitor."""

    ok: bool
    reason: str | None = None
    status: int | None = None
    content_type: str | None = None
    body_prefix: str | None = None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "status": self.status,
                "content_type": self.content_type, "body_prefix": self.body_prefix}


def _request(base_url: str, method: str, path: str, body: bytes, headers: dict, timeout: float):
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def judge_http(cell: Cell, status: int, content_type: str, body: bytes) -> Verdict:
    """Pure: the verdict on one HTTP answer to `cell`'s request."""
    v = Verdict(ok=False, status=status, content_type=content_type, body_prefix=body[:80].decode("latin-1"))
    if status != cell.expected_status:
        v.reason = f"status {status}, expected {cell.expected_status}"
        return v
    if cell.content_type and not content_type.lower().startswith(cell.content_type):
        v.reason = f"content type {content_type!r}, expected {cell.content_type}"
        return v
    why = cell.check_body(body)
    if why:
        v.reason = why
        return v
    v.ok = True
    return v


def verify_cell(cell: Cell, base_url: str, timeout: float = 5.0) -> Verdict:
    """Verify `cell` against the server at `base_url` (``http://host:port``)."""
    try:
        for method, path, body in cell.setup:
            status, _, _ = _request(base_url, method, path, body, {}, timeout)
            if status >= 400:
                return Verdict(ok=False, reason=f"setup {method} {path} answered {status}", status=status)
        if cell.kind == "http":
            status, ctype, body = _request(base_url, cell.method, cell.path, cell.body, dict(cell.headers), timeout)
            return judge_http(cell, status, ctype, body)
    except (OSError, http.client.HTTPException) as exc:
        return Verdict(ok=False, reason=f"{type(exc).__name__}: {exc}")
    # ws / sse: one short real session through the load generator's checks
    cfg = LoadConfig(url=base_url + cell.path, kind=cell.kind, connections=1, duration=0.5, workers=1,
                     timeout=timeout, give_up_after=timeout)
    try:
        res = run_load(cfg)
    except NoConnectionError as exc:
        return Verdict(ok=False, reason=str(exc))
    errors = {k: v for k, v in res.errors.items() if v}
    if errors:
        return Verdict(ok=False, reason=f"{cell.kind} session errors {errors}")
    if res.requests < 1:
        return Verdict(ok=False, reason=f"{cell.kind}: no message/event came back in 0.5 s")
    return Verdict(ok=True)
