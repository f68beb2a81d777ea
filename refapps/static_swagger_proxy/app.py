"""Reference app ``static_swagger_proxy`` for probatorium.

A Starlette application made of:

* static files from ``static/`` with ``starlette.staticfiles.StaticFiles``
  (ETag + Last-Modified, 304 on revalidation, HEAD, byte ranges);
* the OpenAPI contract as JSON at ``/openapi.json`` (from ``openapi.yaml``) and
  a Swagger UI page at ``/docs`` whose assets come from the
  ``swagger-ui-bundle`` package (served at ``/docs/assets``: no CDN);
* a reverse proxy ``/proxy/{path}`` built on ``httpx.AsyncClient`` to an
  upstream: ``PROXY_UPSTREAM`` (an http:// base URL on loopback) or, by
  default, the in-process upstream sub-app (``/upstream/...``) through
  ``httpx.ASGITransport``, which works the same on every engine.

X-Forwarded-For trust rules: a client-supplied ``X-Forwarded-For`` is kept
(and the peer appended) only when the peer address is in ``TRUSTED_PROXIES``
(comma-separated addresses/CIDRs, default: none); otherwise it is REPLACED by
the peer address, and ``Forwarded`` / ``X-Real-IP`` / ``X-Forwarded-Host`` /
``X-Forwarded-Proto`` are rewritten the same way. Self-check: if the proxy
would forward, or the upstream received, an untrusted client-supplied XFF
(or anything but the expected value), it answers 500
``{"x-invariant": "I-MW-XFF"}``.

Run on its own::

    python app.py [--port N] [--engine uvicorn|uvicorn-h11|hypercorn|granian|daphne]

prints ``ready addr=127.0.0.1:PORT`` once the port accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import swagger_ui_bundle
import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # refapps/: refapp_common
from refapp_common.contract import (  # noqa: E402
    EchoEndpoint,
    healthz,
    read_body,
    read_json_object,
    RequestCounter,
    Shutdown,
)
from refapp_common.runner import main  # noqa: E402
from refapp_common import probes  # noqa: E402

HERE_PATH = Path(__file__).resolve().parent

# --------------------------------------------------------------------------
# configuration (environment)
# --------------------------------------------------------------------------

#: Upstream base URL for /proxy/{path} (loopback only), e.g.
#: "http://127.0.0.1:9000/upstream". Empty: the in-process upstream sub-app.
PROXY_UPSTREAM = os.environ.get("PROXY_UPSTREAM", "").strip().rstrip("/")
#: Peers whose X-Forwarded-For is trusted (addresses or CIDRs, comma-separated).
TRUSTED_PROXIES_RAW = os.environ.get("TRUSTED_PROXIES", "").strip()
#: Test knob: "xff_passthrough" forwards untrusted XFF unchanged (planted bug
#: that the I-MW-XFF self-check must catch).
FAULT = os.environ.get("REFAPP_FAULT", "").strip()

MAX_PROXY_BODY = 1024 * 1024
MAX_JSON_BODY = 64 * 1024
MAX_CREDENTIAL = 256
MAX_TOKENS = 10_000
PROXY_TIMEOUT_S = 10.0
IN_PROCESS_UPSTREAM = "http://upstream.internal/upstream"
#: Characters kept as they are when the decoded {path} is re-encoded.
PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _parse_networks(raw: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for part in raw.split(","):
        part = part.strip()
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    return nets


TRUSTED_NETWORKS = _parse_networks(TRUSTED_PROXIES_RAW)


def _check_upstream(url: str) -> None:
    if not url:
        return
    parts = httpx.URL(url)
    if parts.scheme not in ("http", "https") or parts.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"PROXY_UPSTREAM must be an http(s) URL on loopback, got {url!r}")


_check_upstream(PROXY_UPSTREAM)

# --------------------------------------------------------------------------
# process-wide observable state (/debug/vars)
# --------------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.sse_open = 0
        self.ws_open = 0
        self.proxied = 0
        self.proxy_trusted = 0
        self.proxy_replaced = 0
        self.upstream_errors = 0
        self.xff_checks = 0
        self.invariant_hits: Counter[str] = Counter()


STATS = _Stats()


SHUTDOWN = Shutdown()
TOKENS: OrderedDict[str, str] = OrderedDict()

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def invariant(pred: str, detail: Any = None) -> Response:
    STATS.invariant_hits[pred] += 1
    body: dict[str, Any] = {"x-invariant": pred}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=500)


def describe_request(scope: Scope, body: bytes) -> dict[str, Any]:
    """The echo contract's shape (SPEC.md §3): what the application received."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes | bytearray) else scope.get("path", "")
    query = scope.get("query_string", b"") or b""
    return {
        "method": scope.get("method"),
        "target": path + ("?" + query.decode("latin-1") if query else ""),
        "http_version": scope.get("http_version"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope.get("headers", [])],
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


# --------------------------------------------------------------------------
# upstream sub-app (in-process default upstream; also reachable directly)
# --------------------------------------------------------------------------


async def upstream_echo(request: Request) -> Response:
    body = await read_body(request, MAX_PROXY_BODY)
    described = describe_request(request.scope, body)
    described["upstream"] = True
    described["x_forwarded_for"] = request.headers.get("x-forwarded-for")
    return JSONResponse(described)


class UpstreamEndpoint:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await upstream_echo(Request(scope, receive, send))
        await response(scope, receive, send)


upstream_app = Starlette(routes=[Route("/{rest:path}", UpstreamEndpoint())])

# --------------------------------------------------------------------------
# reverse proxy with X-Forwarded-For trust rules
# --------------------------------------------------------------------------

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "proxy-connection",
})
#: Client headers that claim to describe the client or the original request.
FORWARDING = frozenset({"x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host", "x-forwarded-proto"})


def peer_trusted(host: str | None) -> bool:
    if not host or not TRUSTED_NETWORKS:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in TRUSTED_NETWORKS)


#: uvicorn's own XFF trust list (its --forwarded-allow-ips default comes from
#: this variable, else "127.0.0.1"); see tcp_peer().
ENGINE_FORWARDED_ALLOW = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1").strip()


def tcp_peer(scope: Scope, incoming: list[tuple[str, str]]) -> str:
    """The address of the TCP peer that sent this request.

    uvicorn (proxy_headers on by default, trusting 127.0.0.1) replaces
    ``scope["client"]`` with the X-Forwarded-For entry it believes and port 0
    before the app runs. Port 0 never comes from a real socket, so when it
    shows up together with an XFF header the engine already consumed XFF, and
    the real peer was one of the engine's trusted addresses: we take that
    address when it is a single literal IP, else "unknown". Other engines
    report the socket peer as is.
    """
    client = scope.get("client")
    if not client:
        return "unknown"
    host, port = client[0], client[1] if len(client) > 1 else None
    if port == 0 and any(k == "x-forwarded-for" for k, _ in incoming):
        try:
            return str(ipaddress.ip_address(ENGINE_FORWARDED_ALLOW))
        except ValueError:
            return "unknown"
    return host


def forwarding_headers(scope: Scope, incoming: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str, str | None, bool]:
    """Outgoing request headers, the XFF we must send, the client's XFF, trusted?"""
    peer = tcp_peer(scope, incoming)
    trusted = peer_trusted(peer)
    connection_listed = {
        t.strip().lower() for k, v in incoming if k == "connection" for t in v.split(",") if t.strip()
    }
    client_xff_parts = [v.strip() for k, v in incoming if k == "x-forwarded-for" and v.strip()]
    client_xff = ", ".join(client_xff_parts) if client_xff_parts else None
    out: list[tuple[str, str]] = []
    for k, v in incoming:
        if k in HOP_BY_HOP or k in connection_listed or k in ("host", "content-length"):
            continue
        if k in FORWARDING and not trusted:
            continue  # untrusted claims are dropped and replaced below
        if k == "x-forwarded-for":
            continue  # rebuilt below in both cases
        out.append((k, v))
    if trusted and client_xff:
        xff = f"{client_xff}, {peer}"
    else:
        xff = peer
    if FAULT == "xff_passthrough" and client_xff:
        xff = client_xff  # planted bug
    out.append(("x-forwarded-for", xff))
    if not trusted:
        host = next((v for k, v in incoming if k == "host"), "")
        out.append(("x-real-ip", peer))
        out.append(("x-forwarded-proto", scope.get("scheme", "http")))
        if host:
            out.append(("x-forwarded-host", host))
    out.append(("via", f"{scope.get('http_version', '1.1')} refapp-proxy"))
    return out, xff, client_xff, trusted


def expected_xff(scope: Scope, incoming: list[tuple[str, str]], client_xff: str | None, trusted: bool) -> str:
    peer = tcp_peer(scope, incoming)
    return f"{client_xff}, {peer}" if trusted and client_xff else peer


class _Clients:
    """One httpx.AsyncClient per event loop (engines may run several loops)."""

    def __init__(self) -> None:
        self.by_loop: dict[int, httpx.AsyncClient] = {}

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self.by_loop.get(id(loop))
        if client is None:
            if PROXY_UPSTREAM:
                client = httpx.AsyncClient(
                    timeout=PROXY_TIMEOUT_S, follow_redirects=False, trust_env=False,
                    limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                )
            else:
                client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=upstream_app, client=("127.0.0.1", 0)),
                    timeout=PROXY_TIMEOUT_S, follow_redirects=False, trust_env=False,
                )
            self.by_loop[id(loop)] = client
        return client

    async def close(self) -> None:
        clients, self.by_loop = list(self.by_loop.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()


CLIENTS = _Clients()


async def proxy(request: Request) -> Response:
    scope = request.scope
    incoming = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
    headers, xff, client_xff, trusted = forwarding_headers(scope, incoming)
    want = expected_xff(scope, incoming, client_xff, trusted)
    STATS.xff_checks += 1
    if xff != want:
        # never let an untrusted client-supplied XFF (or any other value than
        # the rules give) leave this process
        return invariant("I-MW-XFF", {"stage": "outgoing", "client_xff": client_xff, "sent": xff, "expected": want})
    body = await read_body(request, MAX_PROXY_BODY)
    rest = request.path_params.get("path", "")
    query = scope.get("query_string", b"") or b""
    base = PROXY_UPSTREAM or IN_PROCESS_UPSTREAM
    try:
        url = httpx.URL(f"{base}/{quote(rest, safe=PATH_SAFE)}", query=query)
    except (httpx.InvalidURL, ValueError, UnicodeError):
        return JSONResponse({"error": "path cannot be forwarded"}, status_code=400)
    # bytes, exactly as received: header values may carry obs-text (latin-1)
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    try:
        upstream = await CLIENTS.get().request(request.method, url, headers=raw_headers, content=body)
    except (ValueError, UnicodeError) as exc:  # a method or header httpx refuses to send
        return JSONResponse({"error": f"cannot forward: {type(exc).__name__}"}, status_code=400)
    except httpx.HTTPError as exc:
        STATS.upstream_errors += 1
        return JSONResponse({"error": f"upstream error: {type(exc).__name__}"}, status_code=502)
    STATS.proxied += 1
    if trusted:
        STATS.proxy_trusted += 1
    else:
        STATS.proxy_replaced += 1
    content = upstream.content
    if upstream.headers.get("content-type", "").startswith("application/json"):
        try:
            seen = json.loads(content)
        except ValueError:
            seen = None
        if isinstance(seen, dict) and seen.get("upstream") is True and seen.get("x_forwarded_for") != want:
            return invariant("I-MW-XFF", {"stage": "upstream", "client_xff": client_xff,
                                          "received": seen.get("x_forwarded_for"), "expected": want})
    out_headers = {
        k: v for k, v in upstream.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-length", "content-encoding", "server", "date")
    }
    out_headers["via"] = "1.1 refapp-proxy"
    return Response(content, status_code=upstream.status_code, headers=out_headers)


class ProxyEndpoint:
    """ASGI endpoint so the proxy route accepts ANY method."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await proxy(request)
        except HTTPException as exc:
            response = JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        await response(scope, receive, send)


# --------------------------------------------------------------------------
# OpenAPI + Swagger UI
# --------------------------------------------------------------------------

with open(HERE_PATH / "openapi.yaml", encoding="utf-8") as fh:
    OPENAPI_DOC = yaml.safe_load(fh)
OPENAPI_JSON = json.dumps(OPENAPI_DOC, separators=(",", ":")).encode("utf-8")

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>static_swagger_proxy - Swagger UI</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""


async def openapi_json(request: Request) -> Response:
    return Response(OPENAPI_JSON, media_type="application/json")


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


# --------------------------------------------------------------------------
# login, health, debug, echo
# --------------------------------------------------------------------------


def _credential(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not (1 <= len(value) <= MAX_CREDENTIAL):
        raise HTTPException(400, f"'{key}' must be a string of 1..{MAX_CREDENTIAL} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPException(400, f"'{key}' is not valid Unicode text") from None
    return value


async def login(request: Request) -> Response:
    data = await read_json_object(request, MAX_JSON_BODY)
    user = _credential(data, "username")
    _credential(data, "password")  # any non-empty pair (contract)
    token = secrets.token_urlsafe(24)
    TOKENS[token] = user
    while len(TOKENS) > MAX_TOKENS:
        TOKENS.popitem(last=False)
    return JSONResponse({"user": user, "token": token})


async def logout(request: Request) -> Response:
    scheme, _, cred = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or TOKENS.pop(cred.strip(), None) is None:
        raise HTTPException(401, "login first (POST /login)", headers={"WWW-Authenticate": 'Bearer realm="refapp"'})
    return Response(status_code=204)


def _coro_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or type(coro).__name__


async def debug_vars(request: Request) -> Response:
    try:
        all_tasks = asyncio.all_tasks()
    except RuntimeError:
        all_tasks = set()
    return JSONResponse({
        "sse_open": STATS.sse_open,
        "ws_open": STATS.ws_open,
        "tasks": len(all_tasks),
        "requests": STATS.requests,
        **probes.debug_fields(),  # wt-wsasgi: the orphan-stream probe route (refapp_common/probes.py)
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - STATS.started, 3),
        "tasks_top": [[n, c] for n, c in Counter(_coro_name(t) for t in all_tasks).most_common(5)],
        "threads": threading.active_count(),
        "proxied": STATS.proxied,
        "proxy_trusted": STATS.proxy_trusted,
        "proxy_replaced": STATS.proxy_replaced,
        "upstream_errors": STATS.upstream_errors,
        "xff_checks": STATS.xff_checks,
        # the self-check count contract (docs/contracts.md): each proxied request's XFF comparison
        "self_checks": {"I-MW-XFF": STATS.xff_checks},
        "upstream": PROXY_UPSTREAM or "in-process",
        "trusted_proxies": [str(n) for n in TRUSTED_NETWORKS],
        "invariant_hits": dict(STATS.invariant_hits),
        "tokens": len(TOKENS),
        "stopping": SHUTDOWN.stopping,
    })


async def root(request: Request) -> Response:
    return RedirectResponse("/static/", status_code=307)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette):
    SHUTDOWN.hook_signals()
    try:
        yield
    finally:
        SHUTDOWN.begin()
        await CLIENTS.close()


router_app = Starlette(
    routes=[
        Route("/", root, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/assets", app=StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"),
        Mount("/static", app=StaticFiles(directory=str(HERE_PATH / "static"), html=True), name="static"),
        Route("/proxy/{path:path}", ProxyEndpoint()),
        Mount("/upstream", app=upstream_app),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/debug/vars", debug_vars, methods=["GET"]),
        Route("/echo", EchoEndpoint()),
        Route("/echo/{rest:path}", EchoEndpoint()),
    ],
    exception_handlers={HTTPException: http_error},
    lifespan=lifespan,
)
router_app.router.redirect_slashes = False


app = RequestCounter(router_app, STATS, SHUTDOWN)

if __name__ == "__main__":
    sys.exit(main("static_swagger_proxy", __file__))
