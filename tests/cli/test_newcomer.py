"""Issue 14 item 8: what a new user meets first (version, error lines, help, bench listing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def cli(*args: str, env: dict | None = None, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-m", "probatorium.cli", *args], cwd=cwd or REPO, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def test_version_flag():
    from probatorium import __version__

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"probatorium {__version__}"


@pytest.mark.parametrize("args, needle", [
    (["validate", "--bogus"], "No such option: --bogus"),
    (["nosuch"], "No such command 'nosuch'"),
    (["bench", "--runs", "x"], "'--runs'"),
    (["bench", "--competitors", "zz"], "unknown competitor 'zz'"),
    (["bench-since"], "--baseline VERSION"),
    (["loadgen", "http://10.0.0.1:80/"], "refusing non-loopback target 10.0.0.1"),
    (["validate", "--duration", "abc"], "invalid duration 'abc'"),
    (["validate", "--url", "127.0.0.1:18081"], "has no scheme: write it as http://127.0.0.1:18081"),
    (["loadgen", "127.0.0.1:18081"], "has no scheme: write it as http://127.0.0.1:18081"),
])
def test_every_error_is_one_prefixed_line(args, needle):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("probatorium: error: "), r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr


def test_help_has_examples_and_no_spec_reference():
    top, val = cli("--help"), cli("validate", "--help", env={"COLUMNS": "200"})
    assert top.returncode == val.returncode == 0
    assert "Examples:" in top.stdout and "probatorium bench --list" in top.stdout
    assert "Examples:" in val.stdout and "docs/contracts.md" in val.stdout
    assert "SPEC" not in top.stdout + val.stdout


def test_no_arguments_prints_help_exit_2():
    r = cli()
    assert r.returncode == 2 and "Usage: probatorium" in r.stdout and "Traceback" not in r.stderr


def test_bench_list_names_every_competitor_and_cell():
    from probatorium.bench.cells import CELLS
    from probatorium.bench.competitors import REGISTRY

    r = cli("bench", "--list")
    assert r.returncode == 0, r.stderr
    listed = {line[4:].split()[0] for line in r.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(REGISTRY) | set(CELLS)
    assert "  * plaintext" in r.stdout  # defaults are marked


def test_bench_since_results_dir(tmp_path):
    import json

    for name, version, rps in (("20260101T000000Z-bench-v1", "v1", 100.0), ("20260102T000000Z-bench-v2", "v2", 50.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "version": version, "partial": False,
            "cells": [{"competitor": "a", "cell": "plaintext", "status": "ok", "saturation": {"rps": rps}}]}))
    r = cli("bench-since", "--baseline", "v1", "--results-dir", str(tmp_path), "--threshold", "0.05",
            cwd=tmp_path.parent)
    assert r.returncode == 1 and "-50.0%" in r.stdout, r.stdout + r.stderr
    missing = cli("bench-since", "--baseline", "v1", "--results-dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.startswith("probatorium: error: bench-since: results folder")


def test_summary_reasons_are_whole_lines_and_not_judged_is_grouped():
    from probatorium.cli import reason_lines
    from probatorium.results import Cell, PropertyResult, ValidateDocument, ValidationResults

    long_reason = "ready: " + "boom " * 40
    c = Cell(refapp="cmd", engine="cmd", arch="amd64", status="not_run", reason=long_reason,
             properties={"I-WS-HANG": PropertyResult(status="not_judged", reason="endpoint_absent: GET /ws 404"),
                         "I-WS-CLOSE": PropertyResult(status="not_judged", reason="endpoint_absent: GET /ws 404"),
                         "I-RFC-1": PropertyResult(status="passed", evaluations=3)})
    doc = ValidateDocument(host_arch_pair="h-amd64", kind="single", probatorium_version="0",
                           validation_results=ValidationResults(started_at="t", cells=[c]))
    assert reason_lines(doc) == [f"cmd/cmd not_run: {long_reason}",
                                 "cmd/cmd not judged: I-WS-HANG, I-WS-CLOSE: endpoint_absent: GET /ws 404"]


def test_spec_without_operations_warns(tmp_path):
    from probatorium.validate.plan import TargetArgs, plan_cells, plan_warnings

    spec = tmp_path / "empty.yaml"
    spec.write_text('openapi: 3.0.3\ninfo: {title: t, version: "1"}\npaths: {}\n')
    plans = plan_cells(TargetArgs(url="http://127.0.0.1:9", spec=spec), None)
    [line] = plan_warnings(plans)
    assert "declares no operations" in line and "walkers will idle" in line and "I-API-* not judged" in line
    assert "walkers will idle" not in plan_warnings(plans, ["adversarial"])[0]
    assert "Tier 3" not in plan_warnings(plans, ["markov"], fuzz_only=True)[0]
    full = tmp_path / "one.yaml"
    full.write_text('openapi: 3.0.3\ninfo: {title: t, version: "1"}\n'
                    'paths: {/a: {get: {responses: {"200": {description: ok}}}}}\n')
    assert plan_warnings(plan_cells(TargetArgs(url="http://127.0.0.1:9", spec=full), None)) == []
