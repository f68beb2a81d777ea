"""End-to-end against real engines: the refapp on uvicorn (httptools) and hypercorn (h11),
as a two-cell matrix, then validate-diff on the document it wrote. C=8: a 12 s cell then covers the
whole adversarial catalogue (162 cases; at C=4 it no longer did, and a case the test names went unsent)."""

from __future__ import annotations

import json

from probatorium.results.store import load_document

from e2e_helpers import load_doc, run_cli


def test_matrix_two_engines_and_diff(tmp_path):
    out = tmp_path / "matrix"
    res = run_cli(["validate", "--matrix", "--refapps", "auth_session_ratelimit", "--engines", "uvicorn,hypercorn",
                   "--slices", "adversarial", "--duration", "24s", "--concurrency", "8", "--quiet-timeout", "2",
                   "--out", str(out)], timeout=240)
    doc = load_doc(out)
    load_document(out)
    cells = doc["validation_results"]["cells"]
    assert [c["engine"] for c in cells] == ["uvicorn", "hypercorn"], res.stderr[-2000:]
    for c in cells:
        assert c["status"] in ("ok", "failed"), c["reason"]
        assert c["tier_1"]["adversarial"]["adv_sent"] > 0
        assert c["properties"]["I-ADV-ACCEPTED"]["status"] in ("passed", "failed")
        assert c["properties"]["I-ADV-ACCEPTED"]["evaluations"] > 0
        assert c["versions"]["starlette"]
        cell_doc = json.loads((out / c["folder"] / "validate-results.json").read_text())
        assert cell_doc["validation_results"]["cells"][0]["engine"] == c["engine"]
        assert (out / c["folder"] / "stderr.log").exists()
    # httptools does not enforce RFC 9112 §3.2 (Host); h11 does: a known divergence of today's releases.
    tallies = {c["engine"]: json.loads((out / c["folder"] / "tier1_tally.json").read_text())["adversarial"]["cases"]
               for c in cells}
    assert tallies["uvicorn"]["host_missing_http11"]["verdict"] == "wrong_accepted"
    assert tallies["hypercorn"]["host_missing_http11"]["verdict"] == "well_rejected"
    assert res.returncode == 1  # HIGH findings on the engines gate the run

    diff_dir = tmp_path / "diff"
    d = run_cli(["validate-diff", str(out), "--out", str(diff_dir)], timeout=60)
    assert d.returncode == 1, d.stderr
    diff = json.loads((diff_dir / "diff.json").read_text())
    cases = {f.get("case") for f in diff["findings"] if f["kind"] == "case"}
    assert "host_missing_http11" in cases
    assert "host_missing_http11" in (diff_dir / "diff.txt").read_text()
