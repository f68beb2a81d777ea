"""ASGI probes (issue 12 items 10, 11): the pure scope and orphan rules, the refapp route's encoding,
and one short run against the strict planted server and its two planted variants."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from probatorium.validate.invariants import CATALOGUE, predicate_for
from probatorium.validate.tier1.asgi import judge as J
from probatorium.validate.tier1.asgi.probe import AsgiProbes

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "refapps"))
from refapp_common import probes as refapp_probes  # noqa: E402

H11, H10, FRAG = J.SCOPE_CASES
PORT = 8123


def conformant(case: J.ScopeCase, **over) -> dict:
    """The scope a conformant engine builds for `case`, as the refapp route encodes it."""
    raw = J.SCOPE_PATH + case.raw_path
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": case.version,
        "method": "GET", "scheme": "http", "path": J.unquote(raw), "raw_path": raw.encode(),
        "query_string": case.query.encode(), "root_path": "",
        "headers": [(b"host", b"x"), (J.PROBE_HEADER[0].lower().encode(), J.PROBE_HEADER[1].encode())],
        "server": ("127.0.0.1", PORT), "client": ("127.0.0.1", 50000),
    }
    scope.update(over)
    return refapp_probes.scope_record(scope)


def rules(case: J.ScopeCase, scope: dict) -> dict[str, bool]:
    return {d.rule: d.required for d in J.judge_scope(case, scope, PORT)}


def test_conformant_scopes_pass_every_case() -> None:
    for case in J.SCOPE_CASES:
        assert J.judge_scope(case, conformant(case), PORT) == []
        assert J.scope_verdict([]) == "scope_ok"


@pytest.mark.parametrize(("case", "over", "rule"), [
    (H11, {"server": ("127.0.0.1", str(PORT))}, "server_port_type"),  # granian 2.x
    (H11, {"client": ("127.0.0.1", "5")}, "client_port_type"),
    (H11, {"server": ("127.0.0.1", PORT + 1)}, "server_port_value"),
    (H11, {"server": ["127.0.0.1"]}, "server_shape"),
    (H10, {"http_version": "1"}, "http_version"),  # granian 2.x on HTTP/1.0
    (H10, {"http_version": "1.1"}, "http_version_value"),
    (H11, {"path": J.SCOPE_PATH + "/a%20b/%E2%9C%93/%2F"}, "path_decoded"),
    (H11, {"path": J.SCOPE_PATH + "/a b/\u2713//?q=1&x=%20"}, "path_query"),
    (FRAG, {"path": J.SCOPE_PATH + "/frag#frag"}, "path_fragment"),
    (FRAG, {"query_string": b"q=1#frag"}, "query_string_value"),  # daphne, hypercorn
    (H11, {"query_string": "q=1&x=%20"}, "query_string_type"),
    (H11, {"raw_path": J.SCOPE_PATH + "/a%20b/%E2%9C%93/%2F"}, "raw_path_type"),
    (H11, {"raw_path": (J.SCOPE_PATH + "/a%20b/%E2%9C%93/%2F?q=1&x=%20").encode()}, "raw_path_value"),
    (H11, {"headers": [("host", "x")]}, "headers_bytes"),
    (H11, {"headers": [(b"host", b"x")]}, "headers_missing"),
    (H11, {"root_path": b""}, "root_path_type"),
    (H11, {"type": "websocket"}, "type"),
    (H11, {"asgi": {}}, "asgi_version"),
    (H11, {"method": "get"}, "method"),
])
def test_each_required_rule_is_a_violation(case: J.ScopeCase, over: dict, rule: str) -> None:
    found = rules(case, conformant(case, **over))
    assert found.get(rule) is True, found
    assert J.scope_verdict(J.judge_scope(case, conformant(case, **over), PORT)) == "scope_violation"


def test_optional_keys_are_notes_not_violations() -> None:
    no_spec = conformant(H11, asgi={"version": "3.0"})  # daphne: spec_version not declared
    assert rules(H11, no_spec) == {"spec_version": False}
    assert J.scope_verdict(J.judge_scope(H11, no_spec, PORT)) == "scope_note"
    upper = conformant(H11, headers=[(b"Host", b"x"), (b"x-probatorium-scope", b"Mixed Case")])
    assert rules(H11, upper) == {"headers_lowercase": False}
    absent = conformant(H11)
    del absent["raw_path"], absent["root_path"], absent["server"]  # optional keys
    assert J.judge_scope(H11, absent, PORT) == []


def test_verdicts_map_to_the_catalogue() -> None:
    assert predicate_for("adversarial", "scope_violation") == "I-ASGI-SCOPE"
    assert predicate_for("adversarial", "scope_note") is None
    assert predicate_for("adversarial", "orphans_kept") == "I-CONN-ORPHAN"
    assert CATALOGUE["I-ASGI-SCOPE"].severity == "MED" and CATALOGUE["I-CONN-ORPHAN"].severity == "MED"


def test_scope_record_keeps_python_types() -> None:
    rec = refapp_probes.scope_record({"a": b"\xff", "b": ("h", 1), "state": {"k": object()}, "c": object()})
    assert rec["a"] == {"$bytes": "\xff"} and rec["b"] == ["h", 1] and rec["state"] == {"$keys": ["k"]}
    assert rec["c"]["$type"] == "object"


def test_orphan_rule() -> None:
    assert J.judge_orphans(None, None, [], 3).verdict == "orphans_absent"
    assert J.judge_orphans(2, 5, [(0.5, 2)], 3).verdict == "orphans_busy"
    assert J.judge_orphans(0, 1, [(0.5, 0)], 3).verdict == "orphans_not_counted"
    assert J.judge_orphans(0, 3, [(0.5, 3), (1.0, 0)], 3).verdict == "orphans_released"
    late = J.judge_orphans(0, 3, [(0.5, 3), (11.0, 0)], 3, 10.0)
    assert late.verdict == "orphans_kept" and "only 11.0 s" in late.reason  # too late
    kept = J.judge_orphans(0, 3, [(0.5, 3), (10.0, 2)], 3, 10.0)
    assert kept.verdict == "orphans_kept" and "still 2" in kept.reason


def test_debug_and_scope_parsing() -> None:
    body = b'{"orphans_open": 2}'
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert J.debug_orphans(resp) == 2
    assert J.debug_orphans(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") is None
    assert J.scope_from_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n") == (404, None)


def _start(*bugs: str) -> tuple[subprocess.Popen[bytes], int]:
    args = [sys.executable, str(REPO / "tests" / "servers" / "h1server.py"), "--port", "0"]
    for b in bugs:
        args += ["--bug", b]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline().decode() if ready else ""  # type: ignore[union-attr]
    assert line.startswith("ready addr="), line
    return proc, int(line.strip().rsplit(":", 1)[1])


def _probe(*bugs: str) -> tuple[AsgiProbes, list]:
    proc, port = _start(*bugs)
    found: list = []
    try:
        pr = AsgiProbes(lambda: "127.0.0.1", lambda: port, lambda: f"127.0.0.1:{port}", debug_path="/debug/vars",
                        report=found.append, settle_s=1.5)

        async def run() -> None:
            for case in J.SCOPE_CASES:
                await pr.scope_case(case)
            await pr.orphan_round()

        asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return pr, found


def test_strict_server_passes_and_each_planted_variant_is_caught() -> None:
    pr, found = _probe()
    c = pr.counters()
    assert found == [] and c["asgi_scope_checked"] == 2 and c["asgi_scope_violation"] == 0
    assert c["asgi_orphan_checked"] == 1 and c["asgi_orphan_kept"] == 0
    pr, found = _probe("scope-port-str", "orphan-kept")
    assert pr.counters()["asgi_scope_violation"] == 2 and pr.counters()["asgi_orphan_kept"] == 1
    preds = sorted({ev.predicate for ev in found})
    assert preds == ["I-ASGI-SCOPE", "I-CONN-ORPHAN"]
    assert all(ev.repro and "REPRODUCED" in ev.repro for ev in found)
