"""Bench thresholds: judged per competitor x cell on the merged saturation, recorded, in the table, exit code."""

import json

import pytest

from probatorium.bench import competitors as reg
from probatorium.bench.cli import bench_command
from probatorium.bench.runner import broken_thresholds, format_table, judge_thresholds, merge_runs
from probatorium.loadgen import hist
from probatorium.loadgen.thresholds import parse_thresholds
from probatorium.results.schema import BenchCell, BenchConfig, BenchDocument


def _run(values_us, duration=1.0) -> dict:
    """A loadgen result dict as the bench keeps it in raw/ (only the fields merge_runs reads)."""
    h = hist.new_histogram()
    hist.record_many(h, values_us)
    return {"histogram": hist.encode(h), "requests": len(values_us), "duration_s": duration,
            "requests_per_sec": len(values_us) / duration,
            "errors": {"connect": 0, "reset": 0, "timeout": 0, "status": 0, "protocol": 0}}


def _cell(name, runs) -> BenchCell:
    rec = BenchCell(competitor="comp", cell=name, status="ok")
    rec.saturation = merge_runs(runs)
    return rec


def test_judged_on_the_merge_of_all_runs_and_shown():
    thresholds = parse_thresholds(["p99<10ms", "rps>=1000"])
    fast = _cell("plaintext", [_run([2000] * 1000), _run([3000] * 1000)])  # 2000 req / 2 s, p99 3 ms
    # the second run alone has p99 1 ms; the merge has 2 % at 50 ms -> p99 50 ms: merged, never averaged
    slow = _cell("json", [_run([1000] * 960 + [50_000] * 40), _run([1000] * 1000)])
    skipped = BenchCell(competitor="comp", cell="post-4k", status="not_applicable", reason="no")
    for rec in (fast, slow, skipped):
        judge_thresholds(rec, thresholds)
    assert [v["passed"] for v in fast.thresholds] == [True, True]
    assert [v["passed"] for v in slow.thresholds] == [False, True]
    assert slow.thresholds[0]["actual"] == pytest.approx(50.0, rel=0.01)
    assert skipped.thresholds is None  # nothing measured, nothing judged
    doc = BenchDocument(config=BenchConfig(thresholds=[t.expr for t in thresholds]), cells=[fast, slow, skipped])
    assert [(c.cell, v["threshold"]) for c, v in broken_thresholds(doc)] == [("json", "p99<10ms")]
    table = format_table(doc)
    assert "thresholds" in table.splitlines()[0]
    assert "2 passed" in table and "BROKEN p99<10ms" in table
    assert "comp / json: threshold p99<10ms: BROKEN (p99 = 50 ms)" in table
    # results.json round-trip keeps the verdicts
    back = BenchDocument.model_validate(json.loads(doc.model_dump_json()))
    assert back.cells[1].thresholds == slow.thresholds and back.config.thresholds == ["p99<10ms", "rps>=1000"]


def test_bench_command_records_thresholds_and_rejects_bad_ones(tmp_path, monkeypatch, capsys):
    ghost = reg.Competitor(name="ghost", group="baseline", description="x", install="apt-get install ghost",
                           kind="cmd", cmd="ghost-xyz {port}", capabilities=("plaintext",),
                           executables=("ghost-xyz",))
    monkeypatch.setitem(reg.REGISTRY, "ghost", ghost)
    monkeypatch.delenv("BENCH_TARGET", raising=False)
    assert bench_command(competitors="ghost", cells="plaintext", out=tmp_path, thresholds=["p99<50ms"]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["thresholds"] == ["p99<50ms"]
    assert doc["cells"][0]["status"] == "not_applicable" and "thresholds" not in doc["cells"][0]  # not judged
    capsys.readouterr()
    assert bench_command(competitors="ghost", cells="plaintext", out=tmp_path / "x", thresholds=["p99<<5ms"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad threshold 'p99<<5ms'" in err[0]
    assert not (tmp_path / "x").exists()  # rejected before anything ran
