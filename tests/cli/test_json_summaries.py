"""`--json` on every command: one object on stdout, {command, exit_code, status, ...} first (docs/json.md).

In-process (main() with argv), no server started: the commands that need a target or a
load are covered where they run (tests/bench/test_bench_cli.py, tests/loadgen, tests/e2e).
"""

from __future__ import annotations

import json
import sys

import pytest

from probatorium import __version__
from probatorium.cli import main
from probatorium.results import Cell, PropertyResult, ValidateDocument, ValidationResults, write_json_atomic


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["probatorium", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def envelope(out: str, command: str, code: int = 0) -> dict:
    doc = json.loads(out)  # the whole of stdout is one object
    assert list(doc)[:3] == ["command", "exit_code", "status"], doc
    assert (doc["command"], doc["exit_code"], doc["status"]) == (command, code, {0: "ok", 1: "failed"}[code])
    return doc


def test_catalogue_commands(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "version", "--json")
    assert code == 0 and envelope(out, "version")["version"] == __version__
    code, out, _ = run(monkeypatch, capsys, "refapps", "--json")
    assert code == 0 and "kitchen_sink" in envelope(out, "refapps")["refapps"]
    code, out, _ = run(monkeypatch, capsys, "invariants", "--json")
    rows = envelope(out, "invariants")["invariants"]
    assert code == 0 and {"id": "I-LIVENESS"}.items() <= next(r for r in rows if r["id"] == "I-LIVENESS").items()
    code, out, _ = run(monkeypatch, capsys, "ci-tier", "pr", "--plan", "--json")
    doc = envelope(out, "ci-tier")
    assert code == 0 and doc["plan_only"] is True and doc["tier"] == "pr" and doc["phases"]
    code, out, _ = run(monkeypatch, capsys, "bench", "--list", "--json")
    doc = envelope(out, "bench")
    assert code == 0 and any(c["default"] for c in doc["competitors"]) and doc["cells"]


def test_corpus_actions_and_a_bad_action_is_one_line(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "corpus", "list", "--limit", "2", "--json")
    doc = envelope(out, "corpus")
    assert code == 0 and doc["action"] == "list" and [r["i"] for r in doc["rows"]] == [0, 1]
    code, out, _ = run(monkeypatch, capsys, "corpus", "show", doc["rows"][1]["seed"], "--json")
    assert code == 0 and envelope(out, "corpus")["plan"]["seed"] == doc["rows"][1]["seed"]
    code, out, err = run(monkeypatch, capsys, "corpus", "nope", "--json")
    assert code == 2 and out == "" and err.count("\n") == 1 and "unknown corpus action" in err


def _run_folder(root, engine: str):
    cell = Cell(refapp="app", engine=engine, arch="amd64", status="ok", folder=f"cell-01-app-{engine}",
                properties={"I-ADV-ACCEPTED": PropertyResult(status="passed", evaluations=1)})
    doc = ValidateDocument(host_arch_pair="h-amd64", kind="single", probatorium_version=__version__,
                           validation_results=ValidationResults(started_at="2026-01-01T00:00:00Z", cells=[cell]))
    write_json_atomic(root / engine / "validate-results.json", doc)
    return root / engine


def test_validate_diff_and_repro_check(monkeypatch, capsys, tmp_path):
    a, b = _run_folder(tmp_path, "uvicorn"), _run_folder(tmp_path, "hypercorn")
    code, out, _ = run(monkeypatch, capsys, "validate-diff", str(a), str(b), "--out", str(tmp_path / "d"), "--json")
    doc = envelope(out, "validate-diff")
    assert code == 0 and doc["findings"] == [] and len(doc["documents"]) == 2
    assert json.loads((tmp_path / "d" / "diff.json").read_text())["summary"] == doc["summary"]
    code, out, _ = run(monkeypatch, capsys, "repro-check", str(a), "--json")
    doc = envelope(out, "repro-check")
    assert code == 0 and (doc["reproduced"], doc["total"], doc["results"]) == (0, 0, [])
