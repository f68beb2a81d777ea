"""Configuration of one load run and the pre-built request bytes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from probatorium.errors import UsageError

__all__ = ["LoadConfig", "build_request", "parse_url"]


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, path-with-query) of an ``http://`` URL."""
    if "://" not in url:
        raise UsageError(f"loadgen: URL {url!r} has no scheme: write it as http://{url}")
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise UsageError(f"loadgen: only http:// URLs are supported, got {url!r}")
    if not parts.hostname:
        raise UsageError(f"loadgen: URL has no host: {url!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise UsageError(f"loadgen: bad port in {url!r}") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, port, path


@dataclass
class LoadConfig:
    """Everything one load run needs. ``rate`` None = closed loop, else open loop."""

    url: str
    connections: int = 64
    rate: float | None = None
    duration: float = 10.0
    warmup: float = 0.0
    workers: int | None = None  # default: number of CPUs in our affinity mask
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    close: bool = False  # new connection per request
    timeout: float = 10.0  # per request (from the send / intended time)
    connect_timeout: float = 3.0
    expected_statuses: frozenset[int] | None = None  # None: any status < 400 is fine
    expect_body: bytes | None = None  # optionally validate the body
    queue_limit: int | None = None  # open loop: bounded backlog per worker (default 2 s of load)
    give_up_after: float = 3.0  # no connection ever succeeded for this long -> give up
    cpus: list[int] | None = None  # CPUs the workers are pinned to (default: our affinity)
    allow_remote: bool = False
    grace: float | None = None  # how long in-flight requests may finish at the end (default min(timeout, 5))
    kind: str = "http"  # "http" | "ws" (WebSocket echo) | "sse" (SSE subscribers)
    ws_message: bytes = b"Hello, World!"  # the payload every WebSocket message carries

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise UsageError("loadgen: connections must be >= 1")
        if self.rate is not None and self.rate <= 0:
            raise UsageError("loadgen: rate must be > 0")
        if self.duration <= 0:
            raise UsageError("loadgen: duration must be > 0")
        if self.warmup < 0:
            raise UsageError("loadgen: warmup must be >= 0")
        if self.workers is not None and self.workers < 1:
            raise UsageError("loadgen: workers must be >= 1")
        if self.kind not in ("http", "ws", "sse"):
            raise UsageError(f"loadgen: unknown kind {self.kind!r} (http, ws, sse)")
        if self.kind == "sse" and self.rate is not None:
            raise UsageError("loadgen: SSE subscribers are passive: no --rate")
        if isinstance(self.ws_message, str):
            self.ws_message = self.ws_message.encode()
        if isinstance(self.body, str):
            self.body = self.body.encode()
        self.method = self.method.upper()
        parse_url(self.url)

    @property
    def mode(self) -> str:
        return "closed" if self.rate is None else "open"

    def resolved_cpus(self) -> list[int]:
        if self.cpus:
            return list(self.cpus)
        try:
            return sorted(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            return list(range(os.cpu_count() or 1))

    def resolved_workers(self) -> int:
        w = self.workers if self.workers is not None else len(self.resolved_cpus())
        # never more workers than connections: an idle worker only costs
        return max(1, min(w, self.connections))

    def status_ok(self, status: int) -> bool:
        if self.expected_statuses is not None:
            return status in self.expected_statuses
        return status < 400


def build_request(cfg: LoadConfig) -> bytes:
    """The request as bytes, built once and written as is for every request."""
    host, port, path = parse_url(cfg.url)
    host_hdr = host if ":" not in host else f"[{host}]"
    if port != 80:
        host_hdr += f":{port}"
    names = {k.lower() for k, _ in cfg.headers}
    lines = [f"{cfg.method} {path} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host_hdr}")
    for k, v in cfg.headers:
        if "\r" in k or "\n" in k or "\r" in v or "\n" in v:
            raise UsageError(f"loadgen: header {k!r} contains CR or LF")
        lines.append(f"{k}: {v}")
    if cfg.body or cfg.method in ("POST", "PUT", "PATCH"):
        if "content-length" not in names and "transfer-encoding" not in names:
            lines.append(f"Content-Length: {len(cfg.body)}")
    if cfg.close and "connection" not in names:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + cfg.body
