"""Verification, the registry's not_applicable, and one real tiny bench (real sockets)."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from probatorium.bench.cells import CELLS
from probatorium.bench.competitors import REGISTRY, Competitor, not_applicable_reason, select_competitors
from probatorium.bench.runner import BenchOptions, format_table, run_bench
from probatorium.bench.verify import judge_http
from probatorium.loadgen.thresholds import parse_thresholds

HERE = Path(__file__).resolve().parent


def test_judge_http_wrong_answers_are_invalid():
    cell = CELLS["plaintext"]
    assert judge_http(cell, 200, "text/plain; charset=utf-8", b"Hello, World!").ok
    assert "body" in judge_http(cell, 200, "text/plain", b"Hello, World?").reason
    assert "status" in judge_http(cell, 404, "text/plain", b"Hello, World!").reason
    assert "content type" in judge_http(cell, 200, "application/json", b"Hello, World!").reason
    js = CELLS["json"]
    assert judge_http(js, 200, "application/json", b'{ "message" : "Hello, World!" }').ok
    assert not judge_http(js, 200, "application/json", b'{"message":"hi"}').ok


def test_registry_has_at_least_12_entries_and_missing_toolchain_is_not_applicable(tmp_path):
    assert len(REGISTRY) >= 12
    ghost = Competitor(name="ghost", group="baseline", description="x", install="apt-get install ghost",
                       kind="cmd", cmd="ghost-server-xyz {port}", capabilities=("plaintext",),
                       executables=("ghost-server-xyz",))
    reason = not_applicable_reason(ghost)
    assert reason and "ghost-server-xyz" in reason and "apt-get install ghost" in reason
    missing_pkg = Competitor(name="nopkg", group="python", description="x", install="pip install nopkg-xyz",
                             kind="app", app="a:app", capabilities=("plaintext",), distributions=("nopkg-xyz",))
    assert "pip install nopkg-xyz" in not_applicable_reason(missing_pkg)
    doc = run_bench([ghost, missing_pkg], [CELLS["plaintext"]], BenchOptions(out_dir=tmp_path), echo=lambda _: None)
    assert [c.status for c in doc.cells] == ["not_applicable", "not_applicable"]
    assert doc.partial is False
    assert json.loads((tmp_path / "results.json").read_text())["competitors"][0]["status"] == "not_applicable"


def test_wrong_answer_makes_the_cell_invalid(tmp_path):
    wrong = Competitor(name="wrong", group="baseline", description="answers the wrong body", install="-",
                       kind="cmd", cmd=f"{sys.executable} {HERE / 'wrong_server.py'} {{port}}",
                       capabilities=("plaintext",))
    doc = run_bench([wrong], [CELLS["plaintext"]], BenchOptions(out_dir=tmp_path, duration=1, warmup=0),
                    echo=lambda _: None)
    cell = doc.cells[0]
    assert cell.status == "invalid", cell
    assert "Goodbye" in cell.reason
    assert cell.saturation is None  # never measured
    assert (tmp_path / cell.folder / "server.log").is_file()


@pytest.mark.e2e
def test_real_tiny_bench_bench_app_on_uvicorn(tmp_path):
    comps = select_competitors("bench_app-uvicorn")
    if not_applicable_reason(comps[0]):
        pytest.skip(not_applicable_reason(comps[0]))
    doc = run_bench(comps, [CELLS["plaintext"]],
                    BenchOptions(runs=1, duration=2.0, warmup=0.5, out_dir=tmp_path, max_probes=1,
                                 thresholds=parse_thresholds(["p99<10s", "rps>1e9"])),
                    echo=lambda _: None)
    cell = doc.cells[0]
    assert cell.status == "ok", cell
    # judged on the cell's saturation: a bound that cannot fail and one that cannot pass
    assert [(v["threshold"], v["passed"]) for v in cell.thresholds] == [("p99<10s", True), ("rps>1e9", False)]
    assert cell.thresholds[1]["actual"] == cell.saturation.rps
    assert cell.saturation.rps > 100 and cell.saturation.count > 0
    assert set(cell.latency_at_slo) == {"10", "50", "100", "500", "1000"}
    assert len(cell.rate_search["probes"]) == 1
    folder = tmp_path / cell.folder
    loadgen = json.loads((folder / "loadgen.json").read_text())
    assert loadgen["saturation_runs"][0]["requests"] > 0
    assert (folder / "observer.sqlite").is_file() and (folder / "server.log").is_file()
    assert list((tmp_path / "raw").glob("*-sat-1.json"))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["partial"] is False and saved["host"]["kernel"]
    assert saved["config"]["thresholds"] == ["p99<10s", "rps>1e9"] and saved["cells"][0]["thresholds"] == cell.thresholds
    assert cell.observer["samples"] >= 2
    with sqlite3.connect(folder / "observer.sqlite") as con:
        rows = con.execute("SELECT phase, cpu_pct, rss_kb, fds, threads, voluntary_ctxt, tcp_established "
                           "FROM samples").fetchall()
    assert len(rows) == cell.observer["samples"]
    assert max(r[2] for r in rows) > 0 and max(r[4] for r in rows) >= 1
    assert any(r[0] == "measure" for r in rows)
    assert cell.observer["peak"]["tcp_established"] >= 1  # the 64 load connections were seen
    assert "bench_app-uvicorn" in format_table(doc) and "BROKEN rps>1e9" in format_table(doc)
