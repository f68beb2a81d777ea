"""End-to-end: a target with a strong leak is caught by the leak judges within a minute of its cell."""

from __future__ import annotations

from datetime import datetime

import pytest

from e2e_helpers import h1cmd, load_doc, run_cli


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("bug,predicate", [("leak-mem", "I-MEM-1"), ("leak-fd", "I-FD-1")])
def test_strong_leak_is_caught_within_a_minute(tmp_path, bug, predicate):
    out = tmp_path / "run"
    res = run_cli(["validate", "--cmd", h1cmd(bug), "--slices", "adversarial", "--duration", "66s",
                   "--concurrency", "4", "--out", str(out)], timeout=240)
    doc = load_doc(out)
    cell = doc["validation_results"]["cells"][0]
    found = [i for i in doc["incidents"] if i["predicate"] == predicate]
    assert found, (cell["properties"], res.stderr[-2000:])
    assert (_ts(found[0]["first_seen"]) - _ts(cell["started_at"])).total_seconds() <= 60.0
    assert cell["properties"][predicate]["status"] == "failed"
    assert res.returncode == 1
    assert (out / cell["folder"] / "resources.json").is_file()
