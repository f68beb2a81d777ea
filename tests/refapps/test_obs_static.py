"""End-to-end tests of the ``observability`` and ``static_swagger_proxy`` refapps.

Each refapp is started by the real launcher under a real engine (uvicorn and
hypercorn by default; ``PROBATORIUM_REFAPP_ENGINES=all`` runs all five) and
driven over loopback TCP.

observability: two ``/metrics`` scrapes are monotonic in every histogram
``_bucket``/``_count``/``_sum`` series; every request produced exactly one
JSON log line; the planted faults make the I-OBS-1 / I-OBS-2 self-checks
answer 500. static_swagger_proxy: static 200/304/HEAD/206, ``/openapi.json``
and ``/docs``, the X-Forwarded-For trust rules (untrusted replaced, trusted
extended), a real loopback upstream, and the planted XFF pass-through caught as
I-MW-XFF. Finally a short ``probatorium validate`` Markov run per refapp has
no 5xx and no I-OBS-*/I-MW-* incident.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from probatorium.targets.launcher import RunningTarget, TargetSpec, start_target

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parents[2]
ALL_ENGINES = ("uvicorn", "uvicorn-h11", "hypercorn", "granian", "daphne")
_requested = os.environ.get("PROBATORIUM_REFAPP_ENGINES", "uvicorn,hypercorn").strip()
ENGINES = ALL_ENGINES if _requested == "all" else tuple(e.strip() for e in _requested.split(",") if e.strip())

_NEEDED = {
    "observability": ("structlog", "prometheus_client", "opentelemetry.sdk", "opentelemetry.instrumentation.asgi"),
    "static_swagger_proxy": ("httpx", "yaml", "swagger_ui_bundle"),
}


def _missing(refapp: str) -> list[str]:
    out = []
    for mod in _NEEDED[refapp]:
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            out.append(mod)
    return out


needs_obs = pytest.mark.skipif(bool(_missing("observability")),
                               reason=f"observability refapp needs {_missing('observability')}")
needs_ssp = pytest.mark.skipif(bool(_missing("static_swagger_proxy")),
                               reason=f"static_swagger_proxy refapp needs {_missing('static_swagger_proxy')}")


@contextmanager
def running(refapp: str, engine: str, tmp_path: Path, **env: str) -> Iterator[RunningTarget]:
    target = start_target(TargetSpec(kind="refapp", refapp=refapp, engine=engine, env=dict(env)),
                          tmp_path / f"{refapp}-{engine}-{len(list(tmp_path.iterdir()))}")
    try:
        yield target
    finally:
        target.stop()


def request(t: RunningTarget, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(t.host, t.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def get_json(t: RunningTarget, method: str, path: str, payload: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    h = dict(headers or {})
    body = None
    if payload is not None:
        body = json.dumps(payload).encode()
        h["Content-Type"] = "application/json"
    status, _, data = request(t, method, path, body, h)
    return status, (json.loads(data) if data[:1] in (b"{", b"[") else data)


# --------------------------------------------------------------------------
# observability


HIST_RE = re.compile(r"^(http_request_duration_seconds_(?:bucket|count|sum))(\{[^}]*\})? (\S+)$")


def scrape(t: RunningTarget) -> dict[str, float]:
    status, headers, data = request(t, "GET", "/metrics")
    assert status == 200, data[:300]
    assert headers["content-type"].startswith("text/plain")
    series = {}
    for line in data.decode().splitlines():
        m = HIST_RE.match(line)
        if m:
            series[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return series


def _traffic(t: RunningTarget, n: int) -> None:
    status, body = get_json(t, "POST", "/login", {"username": "walker", "password": "pw"})
    assert status == 200 and body["token"]
    auth = {"Authorization": f"Bearer {body['token']}"}
    for i in range(n):
        status, item = get_json(t, "POST", "/api/items", {"name": f"n{i}", "value": i}, auth)
        assert status == 201, item
        assert get_json(t, "GET", f"/api/items/{item['id']}", headers=auth) == (200, item)
        assert get_json(t, "GET", "/api/work?ms=3", headers=auth)[0] == 200
        assert request(t, "DELETE", f"/api/items/{item['id']}", headers=auth)[0] == 204
    assert get_json(t, "GET", "/me")[0] == 401


@needs_obs
@pytest.mark.parametrize("engine", ENGINES)
def test_observability_metrics_logs_spans(engine: str, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with running("observability", engine, tmp_path, REFAPP_LOG_FILE=str(log)) as t:
        _traffic(t, 5)
        first = scrape(t)
        _traffic(t, 5)
        second = scrape(t)
        key = 'http_request_duration_seconds_count{method="POST",route="/api/items"}'
        assert first[key] == 5 and second[key] == 10
        assert any(k.startswith("http_request_duration_seconds_bucket") and 'le="0.005"' in k for k in second)
        for name, value in first.items():
            assert name in second and second[name] >= value, (name, value, second.get(name))
        assert 'le="+Inf"' in "".join(second)
        # log lines == requests: wait for the writer thread, then compare
        deadline = time.monotonic() + 5
        while True:
            _, dv = get_json(t, "GET", "/debug/vars")
            if dv["log_written"] == dv["log_requests"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for k in ("sse_open", "ws_open", "tasks", "requests"):
            assert isinstance(dv[k], int)
        # the /debug/vars request itself is counted but not yet logged
        assert dv["log_requests"] == dv["requests"] - 1
        assert dv["log_written"] == dv["log_requests"] == dv["log_enqueued"]
        assert dv["log_dropped"] == 0 and dv["log_write_errors"] == 0
        assert dv["spans_finished"] >= dv["log_requests"]
        assert dv["invariant_hits"] == {}
        # the file ends with one line per request, the /debug/vars one included
        deadline = time.monotonic() + 5
        while len(lines := log.read_text().splitlines()) < dv["requests"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(lines) == dv["requests"]
        records = [json.loads(line) for line in lines]
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        assert {"method", "path", "route", "status", "duration_ms", "trace_id", "timestamp"} <= set(records[0])
        assert sum(1 for r in records if r["route"] == "/api/items" and r["method"] == "POST") == 10
        # echo contract
        status, echo = get_json(t, "PUT", "/echo/x?y=1", {"a": 1})
        assert status == 200 and echo["method"] == "PUT" and echo["target"] == "/echo/x?y=1"


@needs_obs
def test_observability_self_checks_fire(tmp_path: Path) -> None:
    engine = ENGINES[0]
    with running("observability", engine, tmp_path, REFAPP_FAULT="histogram_reset",
                 REFAPP_LOG_FILE=str(tmp_path / "a.jsonl")) as t:
        _traffic(t, 1)
        statuses = []
        for _ in range(4):
            status, _, data = request(t, "GET", "/metrics")
            statuses.append(status)
            if status == 500:
                assert json.loads(data)["x-invariant"] == "I-OBS-1"
        assert 500 in statuses, statuses
    with running("observability", engine, tmp_path, REFAPP_LOG_QUEUE="1", REFAPP_LOG_DELAY_MS="200",
                 REFAPP_LOG_FILE=str(tmp_path / "b.jsonl")) as t:
        hits = 0
        for _ in range(8):
            status, _, data = request(t, "GET", "/healthz")
            if status == 500:
                assert json.loads(data)["x-invariant"] == "I-OBS-2"
                hits += 1
        assert hits >= 1


# --------------------------------------------------------------------------
# static_swagger_proxy


STATIC = REPO / "refapps" / "static_swagger_proxy" / "static"


@needs_ssp
@pytest.mark.parametrize("engine", ENGINES)
def test_static_docs_proxy(engine: str, tmp_path: Path) -> None:
    with running("static_swagger_proxy", engine, tmp_path) as t:
        # static: 200 + validators, 304 on revalidation, HEAD, Range
        status, h, body = request(t, "GET", "/static/style.css")
        assert status == 200 and body == (STATIC / "style.css").read_bytes()
        etag, last_modified = h["etag"], h["last-modified"]
        assert email.utils.parsedate_to_datetime(last_modified)
        assert request(t, "GET", "/static/style.css", headers={"If-None-Match": etag})[0] == 304
        assert request(t, "GET", "/static/style.css", headers={"If-Modified-Since": last_modified})[0] == 304
        status, h, body = request(t, "GET", "/static/")
        assert status == 200 and b"static_swagger_proxy" in body
        logo = (STATIC / "logo.png").read_bytes()
        status, h, body = request(t, "HEAD", "/static/logo.png")
        assert status == 200 and body == b"" and int(h["content-length"]) == len(logo)
        status, h, body = request(t, "GET", "/static/logo.png")
        assert status == 200 and body == logo and h["content-type"] == "image/png"
        status, h, body = request(t, "GET", "/static/logo.png", headers={"Range": "bytes=8-15"})
        assert status == 206 and body == logo[8:16], (status, h)
        assert request(t, "GET", "/static/nope.txt")[0] == 404
        # docs
        status, spec = get_json(t, "GET", "/openapi.json")
        assert status == 200 and spec["openapi"] == "3.0.3" and "/proxy/{path}" in spec["paths"]
        status, _, page = request(t, "GET", "/docs")
        assert status == 200 and b"/openapi.json" in page and b"/docs/assets/swagger-ui-bundle.js" in page
        assert request(t, "GET", "/docs/assets/swagger-ui.css")[0] == 200
        # proxy, untrusted peer (default TRUSTED_PROXIES is empty): XFF replaced
        payload = b'{"note": "hi"}'
        status, h, data = request(t, "POST", "/proxy/api/items?q=1", payload, {
            "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6",
            "Content-Type": "application/json"})
        assert status == 200, data
        seen = json.loads(data)
        assert seen["x_forwarded_for"] == "127.0.0.1"
        assert seen["target"] == "/upstream/api/items?q=1"
        assert seen["body_sha256"] == hashlib.sha256(payload).hexdigest()
        assert not any("6.6.6.6" in v for _, v in seen["headers"]), seen["headers"]
        _, dv = get_json(t, "GET", "/debug/vars")
        assert dv["proxy_replaced"] == 1 and dv["invariant_hits"] == {}
        for k in ("sse_open", "ws_open", "tasks", "requests"):
            assert isinstance(dv[k], int)
    # trusted peer: XFF kept and extended with the peer
    with running("static_swagger_proxy", engine, tmp_path, TRUSTED_PROXIES="127.0.0.1/32,::1") as t:
        status, seen = get_json(t, "GET", "/proxy/x", headers={"X-Forwarded-For": "6.6.6.6, 10.0.0.1"})
        assert status == 200 and seen["x_forwarded_for"] == "6.6.6.6, 10.0.0.1, 127.0.0.1"
        status, seen = get_json(t, "GET", "/proxy/x")
        assert status == 200 and seen["x_forwarded_for"] == "127.0.0.1"


@needs_ssp
def test_proxy_real_upstream_and_xff_fault(tmp_path: Path) -> None:
    engine = ENGINES[0]
    with running("static_swagger_proxy", engine, tmp_path) as upstream:
        base = f"http://127.0.0.1:{upstream.port}/upstream"
        with running("static_swagger_proxy", engine, tmp_path, PROXY_UPSTREAM=base) as t:
            status, seen = get_json(t, "GET", "/proxy/deep/path?a=b", headers={"X-Forwarded-For": "6.6.6.6"})
            assert status == 200 and seen["target"] == "/upstream/deep/path?a=b"
            assert seen["x_forwarded_for"] == "127.0.0.1"
    with running("static_swagger_proxy", engine, tmp_path, REFAPP_FAULT="xff_passthrough") as t:
        status, body = get_json(t, "GET", "/proxy/x", headers={"X-Forwarded-For": "6.6.6.6"})
        assert status == 500 and body["x-invariant"] == "I-MW-XFF"
        assert get_json(t, "GET", "/proxy/x")[0] == 200  # no client XFF: nothing to leak


# --------------------------------------------------------------------------
# a short Markov validation per refapp


@pytest.mark.parametrize("refapp", ["observability", "static_swagger_proxy"])
def test_validate_markov_clean(refapp: str, tmp_path: Path) -> None:
    if _missing(refapp):
        pytest.skip(f"{refapp} needs {_missing(refapp)}")
    out = tmp_path / "run"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "probatorium"), "validate", "--refapp", refapp, "--engine", "uvicorn",
         "--slices", "markov", "--duration", "6s", "--concurrency", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=80, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((out / "validate-results.json").read_text())
    markov = doc["validation_results"]["tier_1"]["markov"]
    assert markov["requests"] > 50 and markov["2xx"] > 0
    assert markov["5xx"] == 0 and markov["invariant_hits"] == 0 and markov["errors"] == 0, markov
    bad = [i["predicate"] for i in doc["incidents"] if i["predicate"].startswith(("I-OBS-", "I-MW-"))]
    assert bad == []
