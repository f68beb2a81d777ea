"""End-to-end tests of the ``auth_session_ratelimit`` reference app.

The app is started for real, as a subprocess under each engine's own CLI, on
a free loopback port; every test talks to it over TCP. By default the engines
are uvicorn (uvloop + httptools) and hypercorn; set
``PROBATORIUM_REFAPP_ENGINES=uvicorn,uvicorn-h11,hypercorn,granian,daphne``
(or ``all``) to run the same checks on more engines.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "refapps" / "auth_session_ratelimit"
HOST = "127.0.0.1"

ALL_ENGINES = ("uvicorn", "uvicorn-h11", "hypercorn", "granian", "daphne")
_requested = os.environ.get("PROBATORIUM_REFAPP_ENGINES", "uvicorn,hypercorn").strip()
ENGINES = ALL_ENGINES if _requested == "all" else tuple(e.strip() for e in _requested.split(",") if e.strip())
# Engines under which the app's SIGTERM hook ends SSE streams cleanly (final
# chunk sent) and closes WebSockets with 1001. daphne is not among them: on
# SIGTERM Twisted cancels every application instance and drops the
# connections at once (SSE cut without the last chunk, WebSocket without a
# close frame).
GRACEFUL_STREAM_ENGINES = ("uvicorn", "uvicorn-h11", "hypercorn", "granian")


# --------------------------------------------------------------------------
# server management
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _engine_argv(engine: str, port: int) -> list[str]:
    py = sys.executable
    if engine in ("uvicorn", "uvicorn-h11"):
        loop, proto = ("uvloop", "httptools") if engine == "uvicorn" else ("asyncio", "h11")
        return [py, "-m", "uvicorn", "app:app", "--host", HOST, "--port", str(port), "--loop", loop,
                "--http", proto, "--lifespan", "on", "--no-access-log", "--log-level", "warning"]
    if engine == "hypercorn":
        # --workers 0: serve in this very process. With the default (1) the
        # CLI spawns a worker child that never sees SIGTERM (the master only
        # sets a multiprocessing event), so open SSE/WS streams are cut after
        # graceful_timeout with a CancelledError traceback, and the PID we
        # hold is not the serving process.
        return [py, "-m", "hypercorn", "--workers", "0", "--bind", f"{HOST}:{port}",
                "--log-level", "WARNING", "app:app"]
    if engine == "granian":
        return [py, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
                "--workers", "1", "--log-level", "warning", "app:app"]
    if engine == "daphne":
        return [py, "-m", "daphne", "-b", HOST, "-p", str(port), "-v", "0", "app:app"]
    raise ValueError(engine)


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} never opened")


@dataclass
class Server:
    engine: str
    port: int
    proc: subprocess.Popen
    log: Path

    def stderr(self) -> str:
        return self.log.read_text("utf-8", "replace")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _start(engine: str, env_extra: dict[str, str] | None = None) -> Server:
    port = _free_port()
    log = Path(tempfile.mkstemp(prefix=f"refapp-{engine}-", suffix=".log")[1])
    env = dict(os.environ)
    env.pop("REFAPP_RATE_LIMIT", None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(APP_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    with log.open("wb") as err:
        proc = subprocess.Popen(
            _engine_argv(engine, port), cwd=APP_DIR, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        _wait_port(port, proc)
    except BaseException:
        _stop(proc)
        raise
    return Server(engine, port, proc, log)


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = _start(request.param)
    try:
        yield srv
    finally:
        _stop(srv.proc)
        stderr = srv.stderr()
        srv.log.unlink(missing_ok=True)
    assert "Traceback" not in stderr, f"{srv.engine} logged a traceback:\n{stderr}"


# --------------------------------------------------------------------------
# tiny HTTP helpers (stdlib only)
# --------------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)


def call(port: int, method: str, path: str, body: bytes | dict | list | None = None,
         headers: list[tuple[str, str]] | None = None, cookie: str | None = None) -> Resp:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = list(headers or [])
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            hdrs.append(("Content-Type", "application/json"))
        if cookie:
            hdrs.append(("Cookie", cookie))
        if body is not None:
            hdrs.append(("Content-Length", str(len(body))))
        for k, v in hdrs:
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def login(port: int, name: str, password: str = "pw") -> tuple[str, str]:
    r = call(port, "POST", "/login", {"username": name, "password": password})
    assert r.status == 200, r.body
    data = r.json()
    assert data["user"] == name and isinstance(data["token"], str) and data["token"]
    set_cookie = r.header("set-cookie")
    assert set_cookie and set_cookie.startswith("session=")
    return set_cookie.split(";", 1)[0], data["token"]


def debug_vars(port: int) -> dict:
    r = call(port, "GET", "/debug/vars")
    assert r.status == 200
    return r.json()


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def open_sse(port: int, extra: bytes = b"", until: bytes = b"id: 2\n") -> tuple[socket.socket, bytes]:
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(f"GET /events HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n".encode()
              + extra + b"\r\n")
    buf = b""
    while until not in buf:
        chunk = s.recv(4096)
        assert chunk, f"SSE stream closed early: {buf!r}"
        buf += chunk
    return s, buf


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_health_and_debug_vars(server: Server) -> None:
    r = call(server.port, "GET", "/healthz")
    assert (r.status, r.body) == (200, b"ok")
    v1 = debug_vars(server.port)
    for key in ("sse_open", "ws_open", "tasks", "requests", "pid"):
        assert type(v1[key]) is int, (key, v1)
    assert isinstance(v1["uptime_s"], int | float)
    assert v1["pid"] > 0 and v1["tasks"] >= 1
    v2 = debug_vars(server.port)
    assert v2["requests"] >= v1["requests"] + 1


def _tamper(signed: str) -> str:
    """Change one character well inside the trailing signature (the last
    base64 character may carry padding bits, changing it can be a no-op)."""
    i = len(signed) - 10
    return signed[:i] + ("A" if signed[i] != "A" else "B") + signed[i + 1:]


def test_login_me_logout(server: Server) -> None:
    port = server.port
    cookie, token = login(port, f"alice-{server.engine}")
    r = call(port, "GET", "/me", cookie=cookie)
    assert r.status == 200 and r.json() == {"user": f"alice-{server.engine}"}
    # the token from the login body works as a bearer token
    r = call(port, "GET", "/me", headers=[("Authorization", f"Bearer {token}")])
    assert r.status == 200 and r.json() == {"user": f"alice-{server.engine}"}
    # tampered cookie / token are rejected
    assert call(port, "GET", "/me", cookie=_tamper(cookie)).status == 401
    assert call(port, "GET", "/me", headers=[("Authorization", f"Bearer {_tamper(token)}")]).status == 401
    # logout clears the session
    r = call(port, "POST", "/logout", cookie=cookie)
    assert r.status == 204 and r.body == b""
    cleared = r.header("set-cookie")
    assert cleared and cleared.startswith("session=")
    assert call(port, "GET", "/me", cookie=cleared.split(";", 1)[0]).status == 401


@pytest.mark.parametrize("payload", [
    {"username": "", "password": "x"},
    {"username": "x", "password": ""},
    {"username": "x"},
    {},
    [],
    {"username": 1, "password": "x"},
    b"{not json",
    b"",
    b'{"username": "\\ud800", "password": "x"}',
    b'{"username": "x", "password": "p", "n": 1' + b"0" * 5000 + b"}",
])
def test_login_rejects_bad_bodies(server: Server, payload) -> None:
    r = call(server.port, "POST", "/login", payload,
             headers=[("Content-Type", "application/json")] if isinstance(payload, bytes) else None)
    assert r.status in (400, 422), (r.status, r.body)
    assert isinstance(r.json()["error"], str)


@pytest.mark.parametrize("method,path", [
    ("GET", "/me"), ("POST", "/logout"), ("GET", "/api/users"), ("POST", "/api/users"),
    ("GET", "/api/users/1"), ("PUT", "/api/users/1"), ("DELETE", "/api/users/1"),
    ("GET", "/api/users/1/posts"), ("POST", "/api/users/1/posts"), ("GET", "/api/users/1/posts/1"),
])
def test_401_without_session(server: Server, method: str, path: str) -> None:
    r = call(server.port, method, path, {"name": "n", "email": "a@b.c"} if method in ("POST", "PUT") else None)
    assert r.status == 401, (method, path, r.status)
    assert r.header("www-authenticate")
    assert r.json()["error"]


def test_users_and_posts_crud(server: Server) -> None:
    port = server.port
    cookie, _ = login(port, f"bob-{server.engine}")
    other, _ = login(port, f"carol-{server.engine}")

    r = call(port, "POST", "/api/users", {"name": "Ann", "email": "ann@example.com"}, cookie=cookie)
    assert r.status == 201, r.body
    user = r.json()
    uid = user["id"]
    assert isinstance(uid, int) and user["name"] == "Ann" and user["email"] == "ann@example.com"
    assert r.header("location") == f"/api/users/{uid}"

    r = call(port, "GET", "/api/users", cookie=cookie)
    assert r.status == 200 and user in r.json()
    assert call(port, "GET", f"/api/users/{uid}", cookie=cookie).json() == user

    r = call(port, "PUT", f"/api/users/{uid}", {"name": "Anne", "email": "anne@example.com"}, cookie=cookie)
    assert r.status == 200 and r.json() == {"id": uid, "name": "Anne", "email": "anne@example.com"}

    r = call(port, "POST", f"/api/users/{uid}/posts", {"title": "t", "body": "b"}, cookie=cookie)
    assert r.status == 201, r.body
    post = r.json()
    pid = post["id"]
    assert r.header("location") == f"/api/users/{uid}/posts/{pid}"
    assert post == {"id": pid, "user_id": uid, "title": "t", "body": "b"}
    assert call(port, "GET", f"/api/users/{uid}/posts", cookie=cookie).json() == [post]
    assert call(port, "GET", f"/api/users/{uid}/posts/{pid}", cookie=cookie).json() == post

    # another user cannot see or touch it
    assert call(port, "GET", f"/api/users/{uid}", cookie=other).status == 404
    assert call(port, "DELETE", f"/api/users/{uid}", cookie=other).status == 404
    assert call(port, "GET", f"/api/users/{uid}/posts/{pid}", cookie=other).status == 404
    assert user not in call(port, "GET", "/api/users", cookie=other).json()

    # validation errors are 4xx JSON, never 5xx, and create nothing
    before = len(call(port, "GET", "/api/users", cookie=cookie).json())
    for bad in ({"name": "x"}, {"name": "", "email": "a@b"}, {"name": "x", "email": "nope"},
                {"name": ["x"], "email": "a@b"}, [1, 2], b"\xff\xfe", b"[" * 50_000,
                b'{"name": "\\udc80", "email": "a@b"}', {"name": "x" * 201, "email": "a@b"}):
        r = call(port, "POST", "/api/users", bad, cookie=cookie,
                 headers=[("Content-Type", "application/json")] if isinstance(bad, bytes) else None)
        assert r.status in (400, 422), (bad if not isinstance(bad, bytes) else bad[:10], r.status)
        assert "error" in r.json()
    r = call(port, "POST", "/api/users", b'{"name":"x","email":"a@b"}', cookie=cookie,
             headers=[("Content-Type", "text/plain")])
    assert r.status == 415
    assert len(call(port, "GET", "/api/users", cookie=cookie).json()) == before

    # delete, then everything under it is gone
    r = call(port, "DELETE", f"/api/users/{uid}", cookie=cookie)
    assert r.status == 204 and r.body == b""
    for path in (f"/api/users/{uid}", f"/api/users/{uid}/posts", f"/api/users/{uid}/posts/{pid}"):
        assert call(port, "GET", path, cookie=cookie).status == 404
    assert call(port, "PUT", f"/api/users/{uid}", {"name": "a", "email": "a@b"}, cookie=cookie).status == 404
    assert call(port, "GET", "/api/users/999999999", cookie=cookie).status == 404
    assert call(port, "GET", "/api/users/abc", cookie=cookie).status == 404


def test_echo_exact(server: Server) -> None:
    body = os.urandom(3000)
    r = call(server.port, "PUT", "/echo/a%20b/c?x=%41&y=1", body,
             headers=[("X-Dup", "one"), ("X-Other", "v"), ("X-Dup", "two")])
    assert r.status == 200
    assert r.header("content-type").startswith("application/json")
    data = r.json()
    assert set(data) == {"method", "target", "http_version", "headers", "body_length", "body_sha256"}
    assert data["method"] == "PUT"
    assert data["target"] == "/echo/a%20b/c?x=%41&y=1"
    assert data["http_version"] == "1.1"
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    hdrs = [(k.lower(), v) for k, v in data["headers"]]
    assert all(isinstance(h, list) and len(h) == 2 for h in data["headers"])
    dups = [v for k, v in hdrs if k == "x-dup"]
    assert dups == ["one", "two"], hdrs
    if server.engine not in ("granian", "daphne"):
        # granian (Rust http::HeaderMap) and daphne (Twisted Headers) group
        # fields by name: values of one name keep their order, interleaving
        # with other names is lost, which RFC 9110 section 5.3 permits. The
        # others pass the wire order through.
        assert hdrs.index(("x-dup", "one")) < hdrs.index(("x-other", "v")) < hdrs.index(("x-dup", "two"))

    r = call(server.port, "GET", "/echo")
    data = r.json()
    assert (data["method"], data["target"], data["body_length"]) == ("GET", "/echo", 0)
    assert data["body_sha256"] == hashlib.sha256(b"").hexdigest()
    for method in ("DELETE", "PATCH", "OPTIONS", "POST"):
        r = call(server.port, method, "/echo/m", b"z")
        assert r.status == 200 and r.json()["method"] == method
    r = call(server.port, "HEAD", "/echo")
    assert r.status == 200 and r.body == b""


def test_ws_echo_and_ws_open(server: Server) -> None:
    from websockets.sync.client import connect

    port = server.port
    base = debug_vars(port)["ws_open"]
    with connect(f"ws://{HOST}:{port}/ws", open_timeout=5, close_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"
        assert wait_until(lambda: debug_vars(port)["ws_open"] == base + 1)
    assert wait_until(lambda: debug_vars(port)["ws_open"] == base)


def test_sse_and_sse_open(server: Server) -> None:
    port = server.port
    base = debug_vars(port)["sse_open"]
    s, buf = open_sse(port)
    try:
        head = buf.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200")
        assert b"content-type: text/event-stream" in head
        ids = [int(m) for m in re.findall(rb"^id: (\d+)$", buf, re.M)]
        assert ids[:2] == [1, 2]
        assert wait_until(lambda: debug_vars(port)["sse_open"] == base + 1)
    finally:
        s.close()
    # the server notices the disconnect and frees the slot
    assert wait_until(lambda: debug_vars(port)["sse_open"] == base)


def test_sse_last_event_id(server: Server) -> None:
    s, buf = open_sse(server.port, b"Last-Event-ID: 41\r\n", until=b"id: 43\n")
    s.close()
    assert re.findall(rb"^id: (\d+)$", buf, re.M)[:2] == [b"42", b"43"]
    # a latin-1 "superscript two" is str.isdigit() but not a number: ignored
    s, buf = open_sse(server.port, b"Last-Event-ID: \xb2\r\n")
    s.close()
    assert re.findall(rb"^id: (\d+)$", buf, re.M)[:2] == [b"1", b"2"]


def test_open_routes_have_no_session_or_limit(server: Server) -> None:
    for path in ("/healthz", "/debug/vars", "/echo"):
        r = call(server.port, "GET", path)
        assert r.status == 200
        assert r.header("set-cookie") is None and r.header("vary") is None


@pytest.mark.parametrize("engine", ENGINES)
def test_rate_limit_and_graceful_shutdown(engine: str) -> None:
    from websockets.sync.client import connect

    srv = _start(engine, {"REFAPP_RATE_LIMIT": "5/minute"})
    try:
        port = srv.port
        cookie, _ = login(port, "rl")  # counted against the peer-address key
        statuses = [call(port, "GET", "/me", cookie=cookie).status for _ in range(7)]
        assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429], statuses
        r = call(port, "GET", "/api/users", cookie=cookie)
        assert r.status == 429 and "error" in r.json()
        assert int(r.header("retry-after")) >= 1
        # a different client key (another user) has its own budget
        other, _ = login(port, "rl2")
        assert call(port, "GET", "/me", cookie=other).status == 200
        # open routes are never limited
        for _ in range(10):
            assert call(port, "GET", "/healthz").status == 200
            assert call(port, "POST", "/echo", b"x").status == 200

        # graceful shutdown with an SSE stream and a WebSocket open
        s, _ = open_sse(port)
        with connect(f"ws://{HOST}:{port}/ws", open_timeout=5, close_timeout=2) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
            assert wait_until(lambda: (v := debug_vars(port))["sse_open"] == 1 and v["ws_open"] == 1)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            s.settimeout(8)
            rest = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(4096):
                    rest += chunk
            s.close()
            with contextlib.suppress(Exception):
                while True:
                    ws.recv(timeout=8)
            close_code = ws.close_code
        srv.proc.wait(timeout=15)
        elapsed = time.monotonic() - t0
        assert elapsed < 5, f"{engine} took {elapsed:.1f}s to stop with open SSE/WS"
        stderr = srv.stderr()
        assert "Traceback" not in stderr, stderr
        if engine in GRACEFUL_STREAM_ENGINES:
            # the app ended the stream itself: chunked body properly terminated
            assert rest.endswith(b"0\r\n\r\n"), rest[-80:]
            assert close_code == 1001, close_code
    finally:
        _stop(srv.proc)
        srv.log.unlink(missing_ok=True)


def test_standalone_ready_line() -> None:
    proc = subprocess.Popen([sys.executable, str(APP_DIR / "app.py"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"ready addr=127\.0\.0\.1:(\d+)$", line.strip())
        assert m, line
        r = call(int(m.group(1)), "GET", "/healthz")
        assert (r.status, r.body) == (200, b"ok")
    finally:
        _stop(proc)
    assert proc.returncode is not None


# --------------------------------------------------------------------------
# contract files
# --------------------------------------------------------------------------

MARKOV_STATUS = {
    "me": 200, "list_users": 200, "create_user": 201, "get_user": 200, "update_user": 200,
    "create_post": 201, "get_post": 200, "list_posts": 200, "delete_user": 204, "logout": 204,
}


def _markov() -> dict:
    import yaml

    return yaml.safe_load((APP_DIR / "markov.yaml").read_text())


def _openapi() -> dict:
    import yaml

    return yaml.safe_load((APP_DIR / "openapi.yaml").read_text())


def test_markov_matches_openapi_and_is_well_formed() -> None:
    doc, api = _markov(), _openapi()
    assert doc["login"] == "POST /login"
    states = doc["states"]
    assert doc["start"] in states
    assert set(MARKOV_STATUS) == set(states)
    for name, st in states.items():
        method, path = st["request"].split(" ", 1)
        assert method.lower() in api["paths"][path], st["request"]
        for target, weight in st.items():
            if target == "request":
                continue
            assert target in states and isinstance(weight, int | float) and weight > 0, (name, target)
    assert [k for k in states["logout"] if k != "request"] == []  # terminal
    # {id}/{post_id} states are entered only from states that already hold one
    needs_id = {n for n, st in states.items() if "{id}" in st["request"]}
    holds_id = (needs_id - {"delete_user"}) | {"create_user"}  # delete_user releases it
    for name, st in states.items():
        for target in st:
            if target in needs_id:
                assert name in holds_id, (name, target)
            if target != "request" and "{post_id}" in states.get(target, {}).get("request", ""):
                assert name == "create_post", (name, target)
    # a walker never leaves a user behind: out of the id-holding states the
    # only exit is delete_user
    for name in holds_id:
        for target in states[name]:
            if target != "request":
                assert target in holds_id or target == "delete_user", (name, target)


def test_openapi_operations_cover_every_route() -> None:
    api = _openapi()
    assert api["openapi"] == "3.0.3"
    paths = api["paths"]
    expected = {
        "/login": {"post"}, "/logout": {"post"}, "/me": {"get"},
        "/api/users": {"get", "post"}, "/api/users/{id}": {"get", "put", "delete"},
        "/api/users/{id}/posts": {"get", "post"}, "/api/users/{id}/posts/{post_id}": {"get"},
        "/healthz": {"get"}, "/debug/vars": {"get"}, "/events": {"get"}, "/ws": {"get"},
        "/echo": {"get", "head", "post", "put", "patch", "delete", "options"},
        "/echo/{rest}": {"get", "head", "post", "put", "patch", "delete", "options"},
    }
    methods = {"get", "head", "post", "put", "patch", "delete", "options", "trace"}
    assert {p: {m for m in ops if m in methods} for p, ops in paths.items()} == expected
    for p in ("/api/users", "/api/users/{id}/posts"):
        created = paths[p]["post"]["responses"]["201"]
        assert created["headers"]["Location"]["required"] is True
    assert api["components"]["securitySchemes"]["sessionCookie"] == {
        "type": "apiKey", "in": "cookie", "name": "session",
        "description": api["components"]["securitySchemes"]["sessionCookie"]["description"],
    }


def test_markov_walk_against_server(server: Server) -> None:
    """A seeded single walker follows markov.yaml: every step gets its
    expected status, with ids captured from the previous responses."""
    import random

    doc = _markov()
    states = doc["states"]
    rng = random.Random(1234)
    port = server.port
    cookie = None
    state = None
    captured: dict[str, int] = {}
    visited: set[str] = set()
    for step in range(400):
        if state is None:
            assert doc["login"] == "POST /login"
            cookie, _ = login(port, f"walker-{server.engine}")
            state = doc["start"]
        st = states[state]
        method, path = st["request"].split(" ", 1)
        for key, value in captured.items():
            path = path.replace("{" + key + "}", str(value))
        assert "{" not in path, (state, path)
        body = None
        if state in ("create_user", "update_user"):
            body = {"name": f"n{step}", "email": f"n{step}@example.com"}
        elif state == "create_post":
            body = {"title": f"t{step}", "body": "x" * (step % 50)}
        r = call(port, method, path, body, cookie=cookie)
        assert r.status == MARKOV_STATUS[state], (step, state, path, r.status, r.body[:200])
        visited.add(state)
        if state == "create_user":
            captured["id"] = r.json()["id"]
            assert r.header("location") == f"/api/users/{captured['id']}"
        elif state == "create_post":
            captured["post_id"] = r.json()["id"]
        choices = [(k, w) for k, w in st.items() if k != "request"]
        if not choices:
            state, cookie, captured = None, None, {}
            continue
        state = rng.choices([k for k, _ in choices], weights=[w for _, w in choices])[0]
    assert visited == set(states), set(states) - visited
    assert debug_vars(port)["users"] <= 3  # walkers (of all tests) do not pile up users


# --------------------------------------------------------------------------
# self-checks I-MW-SESSION / I-MW-RATELIMIT and their counts (/debug/vars self_checks)
# --------------------------------------------------------------------------


def test_self_checks_count_and_hold(server: Server) -> None:
    port = server.port
    before = debug_vars(port)["self_checks"]
    alice, _ = login(port, "sc-alice")
    bob, _ = login(port, "sc-bob")
    for _ in range(3):
        assert call(port, "GET", "/me", cookie=alice).json() == {"user": "sc-alice"}
        assert call(port, "GET", "/me", cookie=bob).json() == {"user": "sc-bob"}
    assert call(port, "POST", "/logout", cookie=alice).status == 204
    # a replayed cookie is still validly signed: its session still matches the login's record
    assert call(port, "GET", "/me", cookie=alice).status == 200
    after = debug_vars(port)["self_checks"]
    assert after["I-MW-SESSION"] - before["I-MW-SESSION"] >= 8  # every request that carried a session
    assert after["I-MW-RATELIMIT"] - before["I-MW-RATELIMIT"] >= 10  # every admitted guarded request


def test_self_checks_fire_on_planted_defects() -> None:
    srv = _start("uvicorn", {"REFAPP_FAULT": "session_mixup"})
    try:
        alice, _ = login(srv.port, "mix-alice")
        assert call(srv.port, "GET", "/me", cookie=alice).status == 200  # cached under the shared prefix
        bob, _ = login(srv.port, "mix-bob")
        r = call(srv.port, "GET", "/me", cookie=bob)
        assert r.status == 500 and r.json()["x-invariant"] == "I-MW-SESSION", r.body
        assert "mix-alice" in r.json()["error"] and "mix-bob" in r.json()["error"]
    finally:
        _stop(srv.proc)
        srv.log.unlink(missing_ok=True)
    srv = _start("uvicorn", {"REFAPP_FAULT": "ratelimit_overadmit", "REFAPP_RATE_LIMIT": "5/minute"})
    try:
        statuses = [call(srv.port, "GET", "/me").status for _ in range(8)]
        # the planted limiter admits 10 a minute: the 6th admission breaks the limit of 5
        assert statuses[:5] == [401] * 5 and statuses[5] == 500, statuses
        r = call(srv.port, "GET", "/me")
        assert r.status == 500 and r.json()["x-invariant"] == "I-MW-RATELIMIT", r.body
        assert "limit 5" in r.json()["error"]
    finally:
        _stop(srv.proc)
        srv.log.unlink(missing_ok=True)


def test_session_check_catches_a_validly_signed_session_of_another_user() -> None:
    from base64 import b64encode

    from itsdangerous import TimestampSigner

    secret = "test-secret-for-a-forged-session"
    srv = _start("uvicorn", {"REFAPP_SECRET_KEY": secret})
    try:
        alice, _ = login(srv.port, "forge-alice")
        signer = TimestampSigner(secret)
        sid = json.loads(b64decode_cookie(alice, signer))["sid"]
        forged = signer.sign(b64encode(json.dumps({"sid": sid, "user": "forge-bob"}).encode())).decode()
        r = call(srv.port, "GET", "/me", cookie="session=" + forged)
        assert r.status == 500 and r.json()["x-invariant"] == "I-MW-SESSION", r.body
        assert call(srv.port, "GET", "/me", cookie=alice).status == 200
    finally:
        _stop(srv.proc)
        srv.log.unlink(missing_ok=True)


def b64decode_cookie(cookie: str, signer) -> bytes:
    from base64 import b64decode

    return b64decode(signer.unsign(cookie.partition("=")[2].encode()))
