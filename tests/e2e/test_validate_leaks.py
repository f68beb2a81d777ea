"""End-to-end: a target with a strong leak is caught by the leak judges within a minute of its cell."""

from __future__ import annotations

from datetime import datetime

from e2e_helpers import h1cmd, load_doc, run_cli


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_strong_leaks_are_caught_within_a_minute(tmp_path):
    """One cell, two planted leaks (64 KiB of RSS and one fd per request): each judge catches its
    own within the first minute (one run for both keeps the suite a minute shorter)."""
    out = tmp_path / "run"
    res = run_cli(["validate", "--cmd", h1cmd("leak-mem", "leak-fd"), "--slices", "adversarial", "--duration", "66s",
                   "--concurrency", "4", "--out", str(out)], timeout=240)
    doc = load_doc(out)
    cell = doc["validation_results"]["cells"][0]
    for predicate in ("I-MEM-1", "I-FD-1"):
        found = [i for i in doc["incidents"] if i["predicate"] == predicate]
        assert found, (predicate, cell["properties"], res.stderr[-2000:])
        assert (_ts(found[0]["first_seen"]) - _ts(cell["started_at"])).total_seconds() <= 60.0
        assert cell["properties"][predicate]["status"] == "failed"
    assert res.returncode == 1
    assert (out / cell["folder"] / "resources.json").is_file()
