"""End-to-end tests of the ``auth_jwt_csrf`` and ``kitchen_sink`` reference apps.

Each app is started through probatorium's own launcher (``start_target``) on
a free loopback port under uvicorn and hypercorn, and driven over TCP with the
standard library. Plus one short ``probatorium validate`` Markov run per app.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from probatorium.targets.launcher import TargetSpec, start_target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
ALL_ENGINES = ("uvicorn", "uvicorn-h11", "hypercorn", "granian", "daphne")
# PROBATORIUM_REFAPP_ENGINES=all (or a csv) runs the same checks on more engines
_requested = os.environ.get("PROBATORIUM_REFAPP_ENGINES", "uvicorn,hypercorn").strip()
ENGINES = ALL_ENGINES if _requested == "all" else tuple(e.strip() for e in _requested.split(",") if e.strip())
JWT_SECRET = "test-secret-" + "x" * 40  # >= 32 bytes: no InsecureKeyLengthWarning
STATIC_KEY = "static-test-key-0123456789"


# --------------------------------------------------------------------------
# stdlib HTTP helpers
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


def call(port: int, method: str, path: str, body: bytes | dict | None = None,
         headers: list[tuple[str, str]] | None = None, timeout: float = 10) -> Resp:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = list(headers or [])
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            hdrs.append(("Content-Type", "application/json"))
        if body is not None:
            hdrs.append(("Content-Length", str(len(body))))
        for k, v in hdrs:
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def assert_ints(port: int) -> None:
    v = call(port, "GET", "/debug/vars")
    assert v.status == 200
    data = v.json()
    for key in ("sse_open", "ws_open", "tasks", "requests"):
        assert type(data[key]) is int, (key, data)
    assert data["tasks"] >= 1 and data["requests"] >= 1


@dataclass
class Target:
    engine: str
    port: int


def _start(refapp: str, engine: str, tmp: Path, env: dict[str, str]) -> Iterator[Target]:
    target = start_target(TargetSpec(kind="refapp", refapp=refapp, engine=engine, env=env), tmp)
    try:
        yield Target(engine, target.port)
    finally:
        target.stop()
    stderr = (tmp / "stderr.log").read_text("utf-8", "replace")
    assert "Traceback" not in stderr, stderr


@pytest.fixture(scope="module", params=ENGINES)
def jwt_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    yield from _start("auth_jwt_csrf", request.param, tmp_path_factory.mktemp(f"jwt-{request.param}"),
                      {"REFAPP_JWT_SECRET": JWT_SECRET, "REFAPP_API_KEYS": STATIC_KEY})


@pytest.fixture(scope="module", params=ENGINES)
def ks_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    yield from _start("kitchen_sink", request.param, tmp_path_factory.mktemp(f"ks-{request.param}"),
                      {"REFAPP_TIMEOUT_S": "0.5", "REFAPP_BREAKER_RESET_S": "30"})


# --------------------------------------------------------------------------
# auth_jwt_csrf
# --------------------------------------------------------------------------


def jwt_login(port: int, name: str) -> tuple[str, dict]:
    r = call(port, "POST", "/login", {"username": name, "password": "pw"})
    assert r.status == 200, r.body
    token = r.json()["token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return token, claims


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def test_jwt_login_and_rejections(jwt_app: Target) -> None:
    import jwt as pyjwt  # the refapp's dependency, installed in the dev venv
    from cryptography.hazmat.primitives.asymmetric import rsa

    port = jwt_app.port
    token, claims = jwt_login(port, f"alice-{jwt_app.engine}")
    assert call(port, "GET", "/me", headers=bearer(token)).json()["user"] == f"alice-{jwt_app.engine}"
    assert call(port, "GET", "/me").status == 401
    assert call(port, "GET", "/me", headers=[("Authorization", "Bearer not.a.jwt")]).status == 401
    # alg: none, with the very same claims
    none = b64url({"alg": "none", "typ": "JWT"}) + "." + b64url(claims) + "."
    r = call(port, "GET", "/me", headers=bearer(none))
    assert r.status == 401 and "x-invariant" not in r.json()
    # forged: signed with another key; other HMAC size; RS256 (key confusion)
    forged = pyjwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    assert call(port, "GET", "/me", headers=bearer(forged)).status == 401
    assert call(port, "GET", "/me", headers=bearer(pyjwt.encode(claims, JWT_SECRET + "z" * 30,
                                                                 algorithm="HS512"))).status == 401
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert call(port, "GET", "/me", headers=bearer(pyjwt.encode(claims, rsa_key, algorithm="RS256"))).status == 401
    # expired (valid signature)
    expired = pyjwt.encode(dict(claims, exp=int(time.time()) - 5), JWT_SECRET, algorithm="HS256")
    r = call(port, "GET", "/me", headers=bearer(expired))
    assert r.status == 401 and "expired" in r.json()["error"]
    # a correctly signed token for a session that does not exist
    assert call(port, "GET", "/me", headers=bearer(
        pyjwt.encode(dict(claims, sid="nope"), JWT_SECRET, algorithm="HS256"))).status == 401
    assert_ints(port)


def test_csrf_synchronizer(jwt_app: Target) -> None:
    port = jwt_app.port
    token, _ = jwt_login(port, f"bob-{jwt_app.engine}")
    note = {"title": "t", "body": "b"}
    r = call(port, "POST", "/api/notes", note, headers=bearer(token))
    assert r.status == 403 and "x-invariant" not in r.json()
    csrf = call(port, "GET", "/csrf", headers=bearer(token)).json()["csrf_token"]
    assert call(port, "POST", "/api/notes", note, headers=bearer(token) + [("X-CSRF-Token", "wrong")]).status == 403
    # another session's token is not this session's
    other, _ = jwt_login(port, f"bob-{jwt_app.engine}")
    other_csrf = call(port, "GET", "/csrf", headers=bearer(other)).json()["csrf_token"]
    assert other_csrf != csrf
    assert call(port, "POST", "/api/notes", note, headers=bearer(token) + [("X-CSRF-Token", other_csrf)]).status == 403
    ok = bearer(token) + [("X-CSRF-Token", csrf)]
    r = call(port, "POST", "/api/notes", note, headers=ok)
    assert r.status == 201 and r.header("location") == f"/api/notes/{r.json()['id']}"
    nid = r.json()["id"]
    assert call(port, "DELETE", f"/api/notes/{nid}", headers=bearer(token)).status == 403
    assert call(port, "PUT", f"/api/notes/{nid}", {"title": "u", "body": ""}, headers=ok).json()["title"] == "u"
    assert call(port, "DELETE", f"/api/notes/{nid}", headers=ok).status == 204
    # logout needs the token too, then the JWT is dead
    assert call(port, "POST", "/logout", headers=bearer(token)).status == 403
    assert call(port, "POST", "/logout", headers=ok).status == 204
    assert call(port, "GET", "/me", headers=bearer(token)).status == 401


def test_api_key(jwt_app: Target) -> None:
    port = jwt_app.port
    assert call(port, "GET", "/api/keyed/whoami").status == 401
    assert call(port, "GET", "/api/keyed/whoami", headers=[("X-API-Key", "nope")]).status == 401
    # a bearer JWT is not an API key
    token, _ = jwt_login(port, f"carol-{jwt_app.engine}")
    assert call(port, "GET", "/api/keyed/whoami", headers=bearer(token)).status == 401
    assert call(port, "GET", "/api/keyed/whoami", headers=[("X-API-Key", STATIC_KEY)]).json()["user"] == "static"
    csrf = call(port, "GET", "/csrf", headers=bearer(token)).json()["csrf_token"]
    r = call(port, "POST", "/api/keys", headers=bearer(token) + [("X-CSRF-Token", csrf)])
    assert r.status == 201
    r = call(port, "GET", "/api/keyed/whoami", headers=[("X-API-Key", r.json()["key"])])
    assert r.status == 200 and r.json()["user"] == f"carol-{jwt_app.engine}"


# --------------------------------------------------------------------------
# kitchen_sink
# --------------------------------------------------------------------------


def test_ks_basics(ks_app: Target) -> None:
    port = ks_app.port
    assert call(port, "GET", "/healthz").body == b"ok"
    assert_ints(port)
    r = call(port, "POST", "/login", {"username": "u", "password": "p"})
    assert r.status == 200
    assert call(port, "GET", "/me", headers=[("Authorization", "Bearer " + r.json()["token"])]).status == 200
    r = call(port, "GET", "/api/catalog", headers=[("X-Request-Id", "abc.DEF-1")])
    assert r.header("x-request-id") == "abc.DEF-1"
    assert r.header("x-content-type-options") == "nosniff" and r.header("x-frame-options") == "DENY"
    r = call(port, "GET", "/api/catalog", headers=[("X-Request-Id", "bad id<script>")])
    rid = r.header("x-request-id")
    assert rid and rid != "bad id<script>" and rid.isalnum()
    # recovery: 500 JSON, nothing of the exception leaks
    r = call(port, "GET", "/panic")
    assert r.status == 500 and r.json()["error"] == "internal server error"
    assert b"do-not-leak" not in r.body and b"Traceback" not in r.body
    # redirect (fixed Location), rewrite, method override on POST only
    r = call(port, "GET", "/old-catalog?next=https://evil.example")
    assert r.status == 301 and r.header("location") == "/api/catalog"
    assert call(port, "GET", "/v1/items/x").json()["path"] == "/api/items/x"
    assert call(port, "POST", "/api/items/x", headers=[("X-HTTP-Method-Override", "DELETE")]).json()["method"] == "DELETE"
    assert call(port, "PUT", "/api/items/x", headers=[("X-HTTP-Method-Override", "DELETE")]).json()["method"] == "PUT"
    assert call(port, "POST", "/api/items/x", headers=[("X-HTTP-Method-Override", "TRACE")]).status == 400


def test_ks_body_limit_etag_cors_basic_auth(ks_app: Target) -> None:
    port = ks_app.port
    r = call(port, "POST", "/api/orders", b"{" + b" " * (70 * 1024) + b"}", headers=[("Content-Type", "application/json")])
    assert r.status == 413
    # chunked: no Content-Length to judge from, the limit applies while streaming
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(OSError):  # the server may stop reading once it answered
            for _ in range(10):
                s.sendall(b"2000\r\n" + b" " * 0x2000 + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 413")
    r = call(port, "GET", "/api/catalog")
    etag = r.header("etag")
    assert r.status == 200 and etag and etag.startswith('"')
    head = call(port, "HEAD", "/api/catalog")
    assert head.header("etag") == etag and head.header("content-length") == r.header("content-length")
    r = call(port, "GET", "/api/catalog", headers=[("If-None-Match", etag)])
    assert r.status == 304 and r.body == b"" and r.header("etag") == etag
    assert call(port, "GET", "/api/catalog", headers=[("If-None-Match", '"other"')]).status == 200
    pre = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST"),
           ("Access-Control-Request-Headers", "Idempotency-Key")]
    r = call(port, "OPTIONS", "/api/orders", headers=pre)
    assert r.status == 200 and r.header("access-control-allow-origin") == "https://app.example"
    assert call(port, "OPTIONS", "/api/orders", headers=[("Origin", "https://evil.example")] + pre[1:]).status == 400
    assert call(port, "GET", "/admin").status == 401
    assert "Basic" in (call(port, "GET", "/admin").header("www-authenticate") or "")
    bad = base64.b64encode(b"admin:wrong").decode()
    assert call(port, "GET", "/admin", headers=[("Authorization", f"Basic {bad}")]).status == 401
    good = base64.b64encode(b"admin:admin-secret").decode()
    assert call(port, "GET", "/admin", headers=[("Authorization", f"Basic {good}")]).status == 200


def test_ks_idempotency_rate_limit_timeout_breaker_singleflight(ks_app: Target) -> None:
    port = ks_app.port
    key = [("Idempotency-Key", f"k-{ks_app.engine}-{time.time_ns()}")]
    a = call(port, "POST", "/api/orders", {"sku": "a", "quantity": 1}, headers=key)
    b = call(port, "POST", "/api/orders", {"sku": "a", "quantity": 1}, headers=key)
    assert a.status == b.status == 201 and a.body == b.body and b.header("idempotent-replayed") == "true"
    assert call(port, "POST", "/api/orders", {"sku": "a", "quantity": 2}, headers=key).status == 422
    statuses = [call(port, "GET", "/api/limited").status for _ in range(8)]
    assert statuses.count(200) <= 5 and 429 in statuses and 500 not in statuses, statuses
    r = call(port, "GET", "/slow?ms=2000")
    assert r.status == 503 and r.header("retry-after")
    assert call(port, "GET", "/slow?ms=10").status == 200
    fails = [call(port, "GET", "/upstream?fail=1").status for _ in range(4)]
    assert fails == [502, 502, 502, 503], fails
    assert call(port, "GET", "/upstream").status == 503  # open: short-circuited
    before = call(port, "GET", "/debug/vars").json()["singleflight_computations"]
    topic = f"/api/report?topic=t{time.time_ns()}"
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: call(port, "GET", topic), range(5)))
    assert all(r.status == 200 for r in results)
    assert {r.json()["computation"] for r in results} == {results[0].json()["computation"]}
    after = call(port, "GET", "/debug/vars").json()["singleflight_computations"]
    assert after - before == 1, (before, after, [r.header("x-singleflight") for r in results])


# --------------------------------------------------------------------------
# a short Markov validation run per refapp
# --------------------------------------------------------------------------


@pytest.mark.parametrize("refapp", ["auth_jwt_csrf", "kitchen_sink"])
def test_validate_markov(refapp: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("probatorium")), "validate", "--refapp", refapp, "--engine", "uvicorn",
         "--slices", "markov", "--duration", "6s", "--concurrency", "3", "--seed", "7", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=50, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((out / "validate-results.json").read_text())
    results = doc["validation_results"]
    markov = results["tier_1"]["markov"]
    assert markov["requests"] > 50 and markov["logins"] >= 1
    assert markov["5xx"] == 0 and markov["invariant_hits"] == 0, markov
    incidents = list(doc.get("incidents") or [])
    for cell in results.get("cells") or []:
        incidents += cell.get("incidents") or []
    assert not [i for i in incidents if str(i.get("predicate", "")).startswith("I-MW-")], incidents
