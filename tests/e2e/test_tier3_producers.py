"""End-to-end Tier 3 through Tier 2 producers: restserver has no key/value contract, so Tier 3
writes through POST /items and reads back GET /items/{itemId} (logged in per the login contract);
the planted use-after-delete (DELETE 204, the item stays readable) is an acknowledged delete
that did not hold: I-T3-LOST-WRITE."""

from __future__ import annotations

import json
import sys

import pytest

from e2e_helpers import REPO, load_doc, run_cli

RESTSERVER = REPO / "tests" / "servers" / "restserver.py"
SPEC = RESTSERVER.with_name("restserver.openapi.yaml")

pytestmark = pytest.mark.e2e


def test_producer_writes_find_a_delete_that_did_not_hold(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBATORIUM_TIER3_SHRINK", "1,5")
    out = tmp_path / "run"
    r = run_cli(["validate", "--cmd", f"{sys.executable} {RESTSERVER} --port {{port}} --bug use-after-delete",
                 "--spec", str(SPEC), "--tiers", "3", "--faults", "net-latency", "--seeds", "1", "--out", str(out),
                 "--duration", "30s"], timeout=120)  # under 55 s: no leak-judge settle after the one seed
    assert r.returncode == 1, r.stderr[-3000:]
    cell = load_doc(out)["validation_results"]["cells"][0]
    assert cell["properties"]["I-T3-LOST-WRITE"]["status"] == "failed"
    tally = json.loads((out / cell["folder"] / "tier3_tally.json").read_text())
    assert [p["create"] for p in tally["profile"]["producers"]] == ["/items"] and tally["profile"]["login"] == "/login"
    seed = tally["seeds"][0]
    reqs = seed["timeline"]["requests"]
    assert any(q["op"] == "create" and q["status"] == 201 for q in reqs)
    assert any(q["op"] == "verify" and q["status"] == 200 and q["got"] == f"{q['key']}:1" for q in reqs)
    bad = seed["predicates"]["I-T3-LOST-WRITE"]["violations"]
    assert bad and all("acknowledged absent" in v and "read back" in v for v in bad)
