"""probatorium never crashes or wedges, whatever the target does; every run ends with a valid document."""

from __future__ import annotations

import sys

import pytest

from probatorium.results.store import load_document

from e2e_helpers import REPO, load_doc, run_cli

HOSTILE = REPO / "tests" / "servers" / "hostile.py"


@pytest.mark.parametrize("mode", ["garbage", "flood", "silent", "crash", "slam"])
def test_hostile_target_ends_with_a_valid_document(tmp_path, mode):
    out = tmp_path / "run"
    res = run_cli(["validate", "--cmd", f"{sys.executable} {HOSTILE} --mode {mode}", "--duration", "6s",
                   "--concurrency", "4", "--quiet-timeout", "1", "--out", str(out)], timeout=120)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    load_document(out)
    doc = load_doc(out)
    cell = doc["validation_results"]["cells"][0]
    # Nothing correct was measured: the gate fails (exit 1), never a silent pass.
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    assert cell["status"] == "failed"
    assert doc["partial"] is False
    if mode in ("garbage", "flood"):
        assert "I-RFC-1" in {i["predicate"] for i in doc["incidents"]} or "measured nothing" in cell["reason"]
    if mode == "crash":
        assert "I-LIVENESS" in {i["predicate"] for i in doc["incidents"]}
