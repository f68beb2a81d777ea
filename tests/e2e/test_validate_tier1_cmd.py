"""End-to-end: the ws, sse and h2c slices (and a spec-listed crash path) through `probatorium validate
--cmd` against tests/servers/t1server.py, an independent asyncio server, strict unless a bug is planted.

The judged form (SPEC.md §8) is `--duration 60s`; detection here is fast, so shorter cells keep the file
within its CI budget. The strong leaks (I-MEM-1, I-FD-1) need a minute of samples and are covered by
test_validate_leaks.py and scripts/detect_planted_bugs.py.
"""

from __future__ import annotations

import sys
from datetime import datetime

import pytest

from e2e_helpers import REPO, load_doc, run_cli

T1SERVER = REPO / "tests" / "servers" / "t1server.py"
T1SPEC = REPO / "tests" / "servers" / "t1server.openapi.yaml"

pytestmark = pytest.mark.e2e


def t1cmd(*bugs: str) -> str:
    return f"{sys.executable} {T1SERVER} --port {{port}}" + "".join(f" --bug {b}" for b in bugs)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _validate(tmp_path, bugs: tuple[str, ...], slices: str, seconds: int, concurrency: int = 20):
    out = tmp_path / "run"
    res = run_cli(["validate", "--cmd", t1cmd(*bugs), "--spec", str(T1SPEC), "--slices", slices,
                   "--duration", f"{seconds}s", "--concurrency", str(concurrency), "--out", str(out)],
                  timeout=seconds + 90)
    doc = load_doc(out)
    return res, doc, doc["validation_results"]["cells"][0]


def test_strict_server_under_every_slice_has_no_high_finding(tmp_path):
    res, doc, cell = _validate(tmp_path, (), "markov,adversarial,h2c,ws,sse", 20)
    highs = [(i["predicate"], i.get("detail", "")[:120]) for i in doc["incidents"] if i["severity"] != "LOW"]
    assert highs == [], highs
    assert res.returncode == 0, res.stderr[-2000:]
    props = cell["properties"]
    for p in ("I-WS-ACCEPTED", "I-WS-HANG", "I-CONN-2", "I-LIVENESS"):
        assert props[p]["status"] == "passed", (p, props[p])
    t1 = cell["tier_1"]
    assert t1["ws_torture"]["ws_upgraded"] > 0 and t1["ws_torture"]["ws_closed_correctly"] > 0
    assert t1["sse_kill"]["sse_established"] > 0 and t1["sse_kill"]["sse_fin_closed"] > 0
    assert t1["h2c_churn"]["h2c_sent"] > 0


@pytest.mark.parametrize("bugs,slices,seconds,predicate", [
    (("ws-accept-bad-frame",), "ws", 8, "I-WS-ACCEPTED"),   # bad frames echoed (RSV, opcodes, UTF-8)
    (("ws-ignore-bad-frame",), "ws", 8, "I-WS-ACCEPTED"),   # bad frames skipped, the connection goes on
    (("ws-hang-close",), "ws", 8, "I-WS-HANG"),             # no close frame, TCP never closed
    (("ws-hang-on-close",), "ws", 8, "I-WS-HANG"),          # close answered, TCP never closed
    (("sse-leak",), "sse", 15, "I-CONN-2"),                 # slot kept when the client resets
    (("sse-leak-fin",), "sse", 15, "I-CONN-2"),             # slot kept when the client closes cleanly
    (("h2c-crash",), "h2c", 10, "I-H2C-CRASHED"),           # exits on any Upgrade: h2c
    (("h2c-crash-settings",), "h2c", 10, "I-H2C-CRASHED"),  # exits on a malformed HTTP2-Settings
    (("h2c-crash-body",), "h2c", 10, "I-H2C-CRASHED"),      # exits on an upgrade request with a body
    (("h2c-crash-late",), "h2c", 10, "I-LIVENESS"),         # exits just after answering the upgrade
    (("crash-path",), "markov", 10, "I-LIVENESS"),          # exits on GET /report (listed in the spec)
], ids=lambda v: ",".join(v) if isinstance(v, tuple) else None)
def test_planted_bug_is_caught_with_its_predicate(tmp_path, bugs, slices, seconds, predicate):
    res, doc, cell = _validate(tmp_path, bugs, slices, seconds)
    found = [i for i in doc["incidents"] if i["predicate"] == predicate]
    assert found, ([(i["predicate"], i.get("detail", "")[:100]) for i in doc["incidents"]], res.stderr[-2000:])
    assert found[0]["severity"] == "HIGH"
    after = (_ts(found[0]["first_seen"]) - _ts(cell["started_at"])).total_seconds()
    assert after <= 60.0 and after <= seconds + 15, after
    assert cell["properties"][predicate]["status"] == "failed"
    assert res.returncode == 1
