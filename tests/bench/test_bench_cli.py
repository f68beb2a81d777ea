"""The command functions and their environment knobs (no real servers)."""

import json

from probatorium.bench import competitors as reg
from probatorium.bench.cli import bench_command, bench_since_command


def test_bench_command_env_knobs_and_not_applicable(tmp_path, monkeypatch, capsys):
    ghost = reg.Competitor(name="ghost", group="baseline", description="x", install="apt-get install ghost",
                           kind="cmd", cmd="ghost-xyz {port}", capabilities=("plaintext",),
                           executables=("ghost-xyz",))
    monkeypatch.setitem(reg.REGISTRY, "ghost", ghost)
    monkeypatch.setenv("BENCH_COMPETITORS", "ghost")
    monkeypatch.setenv("BENCH_CELLS", "plaintext,json")
    monkeypatch.setenv("BENCH_DURATION", "7s")
    monkeypatch.setenv("BENCH_WARMUP", "500ms")
    monkeypatch.setenv("BENCH_RUNS", "3")
    assert bench_command(out=tmp_path) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["runs"] == 3 and doc["config"]["duration_s"] == 7.0 and doc["config"]["warmup_s"] == 0.5
    assert [c["cell"] for c in doc["cells"]] == ["plaintext", "json"]
    assert all(c["status"] == "not_applicable" for c in doc["cells"])
    assert "ghost" in capsys.readouterr().out


def test_bench_command_usage_error_exits_2(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_COMPETITORS", "no-such-competitor")
    assert bench_command(out=tmp_path) == 2


def test_bench_since_command_env(tmp_path, monkeypatch, capsys):
    for name, version, rps in (("20260101T000000Z-bench-v1", "v1", 100.0), ("20260102T000000Z-bench-v2", "v2", 50.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "version": version, "partial": False,
            "cells": [{"competitor": "a", "cell": "plaintext", "status": "ok", "saturation": {"rps": rps}}]}))
    monkeypatch.setenv("PROBATORIUM_RESULTS", str(tmp_path))
    monkeypatch.setenv("BASELINE_VERSION", "v1")
    monkeypatch.setenv("REGRESSION_THRESHOLD", "0.6")
    assert bench_since_command() == 0  # -50 % is within a 60 % threshold
    assert bench_since_command(threshold=0.05) == 1
    assert "-50.0%" in capsys.readouterr().out
    monkeypatch.delenv("BASELINE_VERSION")
    assert bench_since_command() == 2


# ---- wt-progress: --json summaries (docs/json.md) ------------------------------------------------
def test_bench_json_summary_and_bench_since_json(tmp_path, monkeypatch, capsys):
    ghost = reg.Competitor(name="ghost", group="baseline", description="x", install="apt-get install ghost",
                           kind="cmd", cmd="ghost-xyz {port}", capabilities=("plaintext",),
                           executables=("ghost-xyz",))
    monkeypatch.setitem(reg.REGISTRY, "ghost", ghost)
    assert bench_command(competitors="ghost", cells="plaintext", out=tmp_path / "b", json_out=True) == 0
    out = json.loads(capsys.readouterr().out)  # stdout is the one object, nothing else
    assert (out["command"], out["exit_code"], out["status"]) == ("bench", 0, "ok")
    assert out["results"].endswith("results.json") and out["thresholds_broken"] == []
    assert [(c["competitor"], c["cell"], c["status"], c["saturation_rps"]) for c in out["cells"]] == [
        ("ghost", "plaintext", "not_applicable", None)]
    for name, version, rps in (("20260101T000000Z-bench-v1", "v1", 100.0), ("20260102T000000Z-bench-v2", "v2", 50.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "version": version, "partial": False,
            "cells": [{"competitor": "a", "cell": "plaintext", "status": "ok", "saturation": {"rps": rps}}]}))
    assert bench_since_command("v1", 0.05, tmp_path, json_out=True) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["command"], out["exit_code"], out["status"]) == ("bench-since", 1, "failed")
    assert out["baseline"]["version"] == "v1" and out["current"]["run"] == "20260102T000000Z-bench-v2"
    assert [(r["metric"], r["change"]) for r in out["regressions"]] == [("saturation_rps", -0.5)]
    assert bench_since_command("v9", 0.05, tmp_path, json_out=True) == 2
    res = capsys.readouterr()
    assert res.out == "" and res.err.startswith("probatorium: error: bench-since: no bench run of baseline")


def test_bench_progress_plan_and_skipped_cells(tmp_path, monkeypatch):
    import io

    from probatorium.bench.cells import CELLS
    from probatorium.bench.runner import BenchOptions, planned_seconds, run_bench
    from probatorium.progress import Progress

    opts = BenchOptions(runs=2, duration=5.0, warmup=1.0, max_probes=3)
    sse = next(c for c in CELLS.values() if not c.rate_search)
    assert planned_seconds(CELLS["plaintext"], opts) == (2 + 3) * 6.0 and planned_seconds(sse, opts) == 2 * 6.0
    ghost = reg.Competitor(name="ghost", group="baseline", description="x", install="apt-get install ghost",
                           kind="cmd", cmd="ghost-xyz {port}", capabilities=("plaintext",),
                           executables=("ghost-xyz",))
    out = io.StringIO()
    progress = Progress("bench", mode="lines", stream=out)
    run_bench([ghost], [CELLS["plaintext"], CELLS["json"]], BenchOptions(out_dir=tmp_path, runs=1, duration=1.0),
              echo=progress, progress=progress)
    assert progress.snapshot().total == 2 and progress.actual == [0.0, 0.0]  # not measured: no cost, no lesson
    assert progress.snapshot().eta_s == 0.0 and "progress:" not in out.getvalue()  # bench prints its own end lines
