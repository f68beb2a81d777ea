"""Reference app ``observability`` for probatorium.

A Starlette application instrumented with the Python ecosystem's maintained
observability packages:

* structured JSON logging of EVERY HTTP request with ``structlog`` on top of
  the stdlib ``logging`` queue machinery (``QueueHandler`` with a BOUNDED queue
  -> ``QueueListener`` thread -> file handler);
* Prometheus metrics with ``prometheus_client`` (request counter, latency
  histogram with explicit buckets, in-flight gauge), exposed at ``/metrics``;
* OpenTelemetry spans (``opentelemetry-sdk`` + the ASGI instrumentation's
  ``OpenTelemetryMiddleware``) kept in a bounded in-memory exporter: no
  exporter ever talks to the network.

Self-checks (500 with ``{"x-invariant": ...}``):

* ``I-OBS-1``: histogram series (``_bucket``/``_count``/``_sum``) and the
  request counter never decrease. The app snapshots its own registry on every
  scrape of ``/metrics`` and at most every 100 ms from ordinary requests;
  any decrease (or a vanished series) answers 500 on that request.
* ``I-OBS-2``: no dropped log lines. Every request enqueues exactly one log
  record; a record refused by the full bounded queue is counted as dropped and
  the NEXT request answers 500.

Run on its own::

    python app.py [--port N] [--engine uvicorn|uvicorn-h11|hypercorn|granian|daphne]

prints ``ready addr=127.0.0.1:PORT`` once the port accepts connections.
State lives in process memory: run ONE worker per server.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import itertools
import logging
import logging.handlers
import os
import queue
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # refapps/: refapp_common
from refapp_common.contract import (  # noqa: E402
    check_text,
    EchoEndpoint,
    healthz,
    http_error,
    read_json_object,
    RequestCounter,
    Shutdown,
)
from refapp_common.runner import main  # noqa: E402
from refapp_common import probes  # noqa: E402

# --------------------------------------------------------------------------
# configuration (environment)
# --------------------------------------------------------------------------

#: Where the JSON request log goes: a file path, or "stderr". The default is a
#: per-process file in the temp folder, rotated at REFAPP_LOG_MAX_BYTES (one
#: backup), so a long soak never fills the disk or the engine's stderr.
LOG_FILE_DEFAULTED = not os.environ.get("REFAPP_LOG_FILE", "").strip()
LOG_FILE = os.environ.get("REFAPP_LOG_FILE", "").strip() or os.path.join(
    tempfile.gettempdir(), f"probatorium-observability-{os.getpid()}.jsonl"
)
LOG_MAX_BYTES = int(os.environ.get("REFAPP_LOG_MAX_BYTES", str(16 * 1024 * 1024)))
#: Capacity of the bounded log queue (records waiting for the writer thread).
LOG_QUEUE_SIZE = max(1, int(os.environ.get("REFAPP_LOG_QUEUE", "100000")))
#: Test knob: the writer thread sleeps this long per record (makes drops happen).
LOG_DELAY_S = float(os.environ.get("REFAPP_LOG_DELAY_MS", "0")) / 1000.0
#: Test knob: "histogram_reset" clears the latency histogram on every 3rd
#: /metrics scrape, which the I-OBS-1 self-check must catch.
FAULT = os.environ.get("REFAPP_FAULT", "").strip()
#: Spans kept in memory (newest); older ones are forgotten.
SPANS_KEPT = 512

MAX_CREDENTIAL = 256
MAX_TOKENS = 10_000
MAX_ITEMS_PER_USER = 200
MAX_ITEMS_TOTAL = 50_000
MAX_WORK_MS = 200

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --------------------------------------------------------------------------
# process-wide observable state (/debug/vars)
# --------------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.sse_open = 0
        self.ws_open = 0
        self.invariant_hits: Counter[str] = Counter()


STATS = _Stats()


# Engines that end by re-raising SIGTERM (uvicorn) skip atexit: the own temp
# log is removed when stopping begins (lines still written go to the unlinked inode).
SHUTDOWN = Shutdown(on_begin=lambda: _remove_default_log())

# --------------------------------------------------------------------------
# logging: structlog -> stdlib QueueHandler (bounded) -> writer thread
# --------------------------------------------------------------------------


class CountingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that never blocks and never prints a traceback when the
    bounded queue is full: it counts the record as dropped instead."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.enqueued = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return
        with self._lock:
            self.enqueued += 1


class CountingFileHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writer-thread side: one line per record, rotated by size, counted."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0
        self.errors = 0
        self._bytes = 0
        if path == "stderr":
            super().__init__(sys.stderr)
        else:
            stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - owned by the handler
            self._bytes = stream.tell()
            super().__init__(stream)

    def emit(self, record: logging.LogRecord) -> None:
        if LOG_DELAY_S:
            time.sleep(LOG_DELAY_S)
        try:
            line = self.format(record) + "\n"
            if self.path != "stderr" and self._bytes + len(line) > LOG_MAX_BYTES:
                self._rotate()
            self.stream.write(line)
            self.stream.flush()
            self._bytes += len(line)
            self.written += 1
        except Exception:  # noqa: BLE001 - never let the writer thread die
            self.errors += 1

    def _rotate(self) -> None:
        self.stream.close()
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path + ".1")
        self.stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._bytes = 0


LOG_QUEUE: queue.Queue[Any] = queue.Queue(maxsize=LOG_QUEUE_SIZE)
QUEUE_HANDLER = CountingQueueHandler(LOG_QUEUE)
QUEUE_HANDLER.setFormatter(logging.Formatter("%(message)s"))
WRITER = CountingFileHandler(LOG_FILE)
WRITER.setFormatter(logging.Formatter("%(message)s"))
LISTENER = logging.handlers.QueueListener(LOG_QUEUE, WRITER, respect_handler_level=False)
LISTENER.start()

_std_logger = logging.getLogger("refapp.observability.access")
_std_logger.setLevel(logging.INFO)
_std_logger.propagate = False
_std_logger.addHandler(QUEUE_HANDLER)

structlog.configure(
    processors=[
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.add_log_level,
        structlog.processors.JSONRenderer(sort_keys=False),
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)
ACCESS_LOG = structlog.get_logger("refapp.observability.access")


def _remove_default_log() -> None:
    if LOG_FILE_DEFAULTED:  # our own temp file: do not litter the temp folder
        for path in (LOG_FILE, LOG_FILE + ".1"):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _stop_logging() -> None:
    with contextlib.suppress(Exception):
        LISTENER.stop()  # drains what is queued
    _remove_default_log()


atexit.register(_stop_logging)


def log_counts() -> dict[str, int]:
    return {
        "log_enqueued": QUEUE_HANDLER.enqueued,
        "log_dropped": QUEUE_HANDLER.dropped,
        "log_written": WRITER.written,
        "log_write_errors": WRITER.errors,
        "log_queue_depth": LOG_QUEUE.qsize(),
    }


class LogDropCheck:
    """I-OBS-2: requests logged vs lines accepted; a drop fails the NEXT request."""

    def __init__(self) -> None:
        self.reported_dropped = 0
        self.reported_errors = 0
        self.logged = 0  # log calls made (one per completed request)
        self.checks = 0  # comparisons made (debug endpoint ``self_checks``)

    def violated(self) -> bool:
        self.checks += 1
        dropped, errors = QUEUE_HANDLER.dropped, WRITER.errors
        bad = dropped > self.reported_dropped or errors > self.reported_errors
        self.reported_dropped, self.reported_errors = dropped, errors
        return bad


LOG_CHECK = LogDropCheck()

# --------------------------------------------------------------------------
# metrics: prometheus_client, own registry
# --------------------------------------------------------------------------

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS_TOTAL = PromCounter(
    "http_requests", "HTTP requests completed", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency (application time)", ["method", "route"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being served", registry=REGISTRY)
SPANS_FINISHED = PromCounter("otel_spans_finished", "OpenTelemetry spans finished", registry=REGISTRY)
LOG_RECORDS = PromCounter("log_records", "request log records emitted (one per request)", registry=REGISTRY)


class MonotonicCheck:
    """I-OBS-1: every ``_bucket``/``_count``/``_sum`` (and counter ``_total``)
    sample is compared with the previous snapshot; none may decrease or vanish."""

    SUFFIXES = ("_bucket", "_count", "_sum", "_total")

    def __init__(self) -> None:
        self.snapshot: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.last_check = 0.0
        self.checks = 0
        self.lock = threading.Lock()
        self.last_violation: list[str] = []

    def check(self) -> list[str]:
        with self.lock:
            current: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            for metric in REGISTRY.collect():
                if metric.type not in ("histogram", "counter"):
                    continue
                for s in metric.samples:
                    if s.name.endswith(self.SUFFIXES):
                        current[(s.name, tuple(sorted(s.labels.items())))] = s.value
            bad = []
            for key, old in self.snapshot.items():
                new = current.get(key)
                if new is None or new < old:
                    bad.append(f"{key[0]}{dict(key[1])}: {old} -> {new}")
            self.snapshot = current
            self.checks += 1
            self.last_check = time.monotonic()
            if bad:
                self.last_violation = bad[:5]
            return bad

    def due(self) -> bool:
        return time.monotonic() - self.last_check >= 0.1


MONO = MonotonicCheck()

# --------------------------------------------------------------------------
# tracing: OpenTelemetry SDK, bounded in-memory exporter (no network)
# --------------------------------------------------------------------------


class BoundedMemoryExporter(SpanExporter):
    """Keeps the newest SPANS_KEPT finished spans in memory."""

    def __init__(self, keep: int) -> None:
        self.spans: collections.deque[ReadableSpan] = collections.deque(maxlen=keep)
        self.finished = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.spans.extend(spans)
            self.finished += len(spans)
        SPANS_FINISHED.inc(len(spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


SPAN_EXPORTER = BoundedMemoryExporter(SPANS_KEPT)
TRACER_PROVIDER = TracerProvider(resource=Resource.create({"service.name": "probatorium-refapp-observability"}))
TRACER_PROVIDER.add_span_processor(SimpleSpanProcessor(SPAN_EXPORTER))
TRACER = TRACER_PROVIDER.get_tracer("refapp.observability")

# --------------------------------------------------------------------------
# in-memory data: login tokens and per-user items
# --------------------------------------------------------------------------


class Store:
    def __init__(self) -> None:
        self.tokens: OrderedDict[str, str] = OrderedDict()  # token -> user
        self.items: dict[str, dict[int, dict[str, Any]]] = {}
        self.item_count = 0
        self._ids = itertools.count(1)

    def login(self, user: str) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = user
        while len(self.tokens) > MAX_TOKENS:
            self.tokens.popitem(last=False)
        return token

    def user_for(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        user = self.tokens.get(cred.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HTTPException(401, "login first (POST /login), then send Authorization: Bearer <token>")
        return user

    def create(self, user: str, name: str, value: Any) -> dict[str, Any]:
        mine = self.items.setdefault(user, {})
        if len(mine) >= MAX_ITEMS_PER_USER or self.item_count >= MAX_ITEMS_TOTAL:
            if not mine:
                self.items.pop(user, None)
            raise HTTPException(403, "item quota exceeded")
        iid = next(self._ids)
        item = {"id": iid, "name": name, "value": value}
        mine[iid] = item
        self.item_count += 1
        return item

    def get(self, user: str, iid: int) -> dict[str, Any]:
        item = self.items.get(user, {}).get(iid)
        if item is None:
            raise HTTPException(404, "no such item")
        return item

    def delete(self, user: str, iid: int) -> None:
        self.get(user, iid)
        mine = self.items[user]
        del mine[iid]
        self.item_count -= 1
        if not mine:
            del self.items[user]


STORE = Store()

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _text(data: dict[str, Any], key: str, lo: int, hi: int) -> str:
    return check_text(key, data.get(key), lo, hi)


def invariant(pred: str, detail: Any = None) -> Response:
    STATS.invariant_hits[pred] += 1
    body: dict[str, Any] = {"x-invariant": pred}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=500)


# --------------------------------------------------------------------------
# endpoints
# --------------------------------------------------------------------------


async def login(request: Request) -> Response:
    data = await read_json_object(request)
    user = _text(data, "username", 1, MAX_CREDENTIAL)
    _text(data, "password", 1, MAX_CREDENTIAL)  # any non-empty pair (contract)
    return JSONResponse({"user": user, "token": STORE.login(user)})


async def logout(request: Request) -> Response:
    STORE.user_for(request)
    _, _, cred = request.headers.get("authorization", "").partition(" ")
    STORE.tokens.pop(cred.strip(), None)
    return Response(status_code=204)


async def me(request: Request) -> Response:
    return JSONResponse({"user": STORE.user_for(request)})


async def items_collection(request: Request) -> Response:
    user = STORE.user_for(request)
    if request.method == "POST":
        data = await read_json_object(request)
        name = _text(data, "name", 1, 200)
        value = data.get("value", 0)
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**53:
            raise HTTPException(400, "'value' must be an integer (|value| <= 2^53)")
        item = STORE.create(user, name, value)
        return JSONResponse(item, status_code=201, headers={"Location": f"/api/items/{item['id']}"})
    return JSONResponse(list(STORE.items.get(user, {}).values()))


async def item_detail(request: Request) -> Response:
    user = STORE.user_for(request)
    iid: int = request.path_params["id"]
    if request.method == "DELETE":
        STORE.delete(user, iid)
        return Response(status_code=204)
    return JSONResponse(STORE.get(user, iid))


async def work(request: Request) -> Response:
    """Simulated work of ``ms`` milliseconds (0..200, default random 0..20) in a child span."""
    raw = request.query_params.get("ms")
    if raw is None:
        ms = random.randint(0, 20)
    elif raw.isascii() and raw.isdigit() and len(raw) <= 4 and int(raw) <= MAX_WORK_MS:
        ms = int(raw)
    else:
        raise HTTPException(400, f"'ms' must be an integer 0..{MAX_WORK_MS}")
    with TRACER.start_as_current_span("work") as span:
        span.set_attribute("work.ms", ms)
        await asyncio.sleep(ms / 1000.0)
    return JSONResponse({"slept_ms": ms})


async def metrics(request: Request) -> Response:
    if FAULT == "histogram_reset" and MONO.checks % 3 == 2:
        LATENCY.clear()  # planted bug: the self-check below must catch it
    bad = MONO.check()
    if bad:
        return invariant("I-OBS-1", bad[:5])
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _coro_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or type(coro).__name__


async def debug_vars(request: Request) -> Response:
    try:
        all_tasks = asyncio.all_tasks()
    except RuntimeError:
        all_tasks = set()
    body: dict[str, Any] = {
        "sse_open": STATS.sse_open,
        "ws_open": STATS.ws_open,
        "tasks": len(all_tasks),
        "requests": STATS.requests,
        **probes.debug_fields(),  # wt-wsasgi: the orphan-stream probe route (refapp_common/probes.py)
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - STATS.started, 3),
        "tasks_top": [[n, c] for n, c in Counter(_coro_name(t) for t in all_tasks).most_common(5)],
        "threads": threading.active_count(),
        "in_flight": int(IN_FLIGHT._value.get()),  # noqa: SLF001 - the gauge's own value
        "log_file": LOG_FILE,
        "log_requests": LOG_CHECK.logged,
        **log_counts(),
        "spans_finished": SPAN_EXPORTER.finished,
        "spans_kept": len(SPAN_EXPORTER.spans),
        "metric_checks": MONO.checks,
        # the self-check count contract (docs/contracts.md): comparisons each check made
        "self_checks": {"I-OBS-1": MONO.checks, "I-OBS-2": LOG_CHECK.checks},
        "invariant_hits": dict(STATS.invariant_hits),
        "last_obs1_violation": MONO.last_violation,
        "tokens": len(STORE.tokens),
        "items": STORE.item_count,
        "stopping": SHUTDOWN.stopping,
    }
    return JSONResponse(body)




@contextlib.asynccontextmanager
async def lifespan(_app: Starlette):
    SHUTDOWN.hook_signals()
    try:
        yield
    finally:
        SHUTDOWN.begin()


ROUTES = [
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/me", me, methods=["GET"]),
    Route("/api/items", items_collection, methods=["GET", "POST"]),
    Route("/api/items/{id:int}", item_detail, methods=["GET", "DELETE"]),
    Route("/api/work", work, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/debug/vars", debug_vars, methods=["GET"]),
    Route("/echo", EchoEndpoint()),
    Route("/echo/{rest:path}", EchoEndpoint()),
]

router_app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
router_app.router.redirect_slashes = False

# --------------------------------------------------------------------------
# observability middleware (pure ASGI: metrics + one log line per request)
# --------------------------------------------------------------------------


def route_template(scope: Scope) -> str:
    """The matched route's template (bounded label cardinality), else "<unmatched>"."""
    partial = None
    for route in ROUTES:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route.path
        if match is Match.PARTIAL and partial is None:
            partial = route.path  # path matched, method did not (405)
    return partial or "<unmatched>"


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ObservabilityMiddleware:
    """Counts, times and logs every HTTP request; runs the I-OBS-1/2 checks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        method = scope.get("method", "?")
        method_label = method if method in _KNOWN_METHODS else "OTHER"
        route = route_template(scope)
        status = 0
        sent_bytes = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        IN_FLIGHT.inc()
        try:
            failed: Response | None = None
            if LOG_CHECK.violated():
                failed = invariant("I-OBS-2", log_counts())
            elif route != "/metrics" and MONO.due():
                bad = MONO.check()
                if bad:
                    failed = invariant("I-OBS-1", bad[:5])
            if failed is not None:
                await failed(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            IN_FLIGHT.dec()
            REQUESTS_TOTAL.labels(method_label, route, str(status)).inc()
            LATENCY.labels(method_label, route).observe(elapsed)
            span_ctx = trace.get_current_span().get_span_context()
            client = scope.get("client")
            raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
            LOG_CHECK.logged += 1
            ACCESS_LOG.info(
                "request",
                seq=LOG_CHECK.logged,
                method=method,
                path=raw_path.decode("latin-1")[:512],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                bytes=sent_bytes,
                client=client[0] if client else None,
                http_version=scope.get("http_version"),
                trace_id=format(span_ctx.trace_id, "032x") if span_ctx.is_valid else None,
            )
            LOG_RECORDS.inc()


app = RequestCounter(
    OpenTelemetryMiddleware(
        ObservabilityMiddleware(router_app),
        tracer_provider=TRACER_PROVIDER,
        exclude_spans=["receive", "send"],
    ),
    STATS,
    SHUTDOWN,
)

if __name__ == "__main__":
    sys.exit(main("observability", __file__))
