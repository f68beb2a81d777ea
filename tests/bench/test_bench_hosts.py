"""bench --driver netns without namespaces: the roll-up, bench-since / report / publish on it, the refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probatorium.bench.cells import select_cells
from probatorium.bench.cli import split_bench_target
from probatorium.bench.competitors import select_competitors, target_spec
from probatorium.bench.since import bench_since, since_result
from probatorium.errors import UsageError
from probatorium.hosts.bench_hosts import HostBench, check_placeable, roll_up, unplaceable_reason
from probatorium.publish.runinfo import read_run
from probatorium.report.sources import load_run
from probatorium.results.schema import (BenchCell, BenchCompetitor, BenchConfig, BenchDocument, BenchHost,
                                        Saturation)
from probatorium.results.store import write_json_atomic
from probatorium.targets.launcher import placeable

SRC = Path(__file__).resolve().parents[2] / "src"
ADDRESSES = {"server-a": "10.213.7.3", "server-b": "10.213.7.4"}


def host_document(folder: Path, host: str, rps: float) -> BenchDocument:
    """What one host's bench writes: its results.json and one measured cell folder."""
    cell = BenchCell(index=1, competitor="bench_app-uvicorn", cell="plaintext", status="ok",
                     folder="01-bench_app-uvicorn-plaintext", target=f"{ADDRESSES[host]}:40000",
                     saturation=Saturation(rps=rps, runs=1), latency_at_slo={"10": rps / 2})
    doc = BenchDocument(version="v1", started_at="2026-12-04T00:00:00Z", finished_at="2026-12-04T00:00:05Z",
                        host=BenchHost(machine="x86_64", server_cpus=[0], client_cpus=[1], server_host=host,
                                       server_address=ADDRESSES[host]),
                        config=BenchConfig(runs=1, duration_s=1.0, slos_ms=[10], competitors=["bench_app-uvicorn"],
                                           cells=["plaintext"]),
                        competitors=[BenchCompetitor(name="bench_app-uvicorn", group="ours")], cells=[cell])
    (folder / cell.folder).mkdir(parents=True)
    write_json_atomic(folder / "results.json", doc)
    return doc


def rolled_up(root: Path, name: str, rps: dict[str, float], missing: str | None = None) -> BenchDocument:
    out = root / name
    runs = []
    for i, host in enumerate(ADDRESSES):
        run = HostBench(host, out / f"20261204T00000{i}Z-bench-{host}", address=ADDRESSES[host])
        run.out_dir.mkdir(parents=True)
        if host != missing:
            host_document(run.out_dir, host, rps[host])
            run.exit_code = 0
        else:
            run.exit_code, run.error = 2, "its --json output was not JSON: ''"
        runs.append(run)
    return roll_up(out, runs, "v1", "2026-12-04T00:00:00Z", planned=len(ADDRESSES))


def test_roll_up_layout_cells_and_raw_copies(tmp_path: Path):
    doc = rolled_up(tmp_path, "20261204T000000Z-bench-v1", {"server-a": 1000.0, "server-b": 2000.0})
    out = tmp_path / "20261204T000000Z-bench-v1"
    assert doc.path == str(out / "results.json") and not doc.partial and doc.driver == "netns"
    assert sorted(p.name for p in (out / "raw").iterdir()) == ["server-a.json", "server-b.json"]
    # raw/<host>.json is the host's own document, byte for byte
    own = out / "20261204T000001Z-bench-server-b" / "results.json"
    assert (out / "raw" / "server-b.json").read_bytes() == own.read_bytes()
    assert [(c.index, c.host, c.folder, c.target) for c in doc.cells] == [
        (1, "server-a", "20261204T000000Z-bench-server-a/01-bench_app-uvicorn-plaintext", "10.213.7.3:40000"),
        (2, "server-b", "20261204T000001Z-bench-server-b/01-bench_app-uvicorn-plaintext", "10.213.7.4:40000")]
    assert all((out / c.folder).is_dir() for c in doc.cells)
    assert [(h.name, h.address, h.raw, h.exit_code) for h in doc.hosts] == [
        ("server-a", "10.213.7.3", "raw/server-a.json", 0), ("server-b", "10.213.7.4", "raw/server-b.json", 0)]
    assert [c.name for c in doc.competitors] == ["bench_app-uvicorn"]
    stored = json.loads((out / "results.json").read_text())
    assert stored["schema"] == "bench/1" and stored["cells"][1]["host"] == "server-b"


def test_roll_up_with_a_host_that_wrote_nothing_is_partial(tmp_path: Path):
    doc = rolled_up(tmp_path, "20261204T000000Z-bench-v1", {"server-a": 1000.0}, missing="server-b")
    assert doc.partial and [c.host for c in doc.cells] == ["server-a"]
    entry = doc.hosts[1]
    assert entry.name == "server-b" and entry.raw == "" and "not JSON" in entry.error


def test_bench_since_compares_roll_ups_per_host(tmp_path: Path):
    rolled_up(tmp_path, "20261204T000000Z-bench-v1", {"server-a": 1000.0, "server-b": 2000.0})
    doc = rolled_up(tmp_path, "20261205T000000Z-bench-v2", {"server-a": 1000.0, "server-b": 1000.0})
    assert doc.version == "v1"  # the label rolled up is the one given; make the newer run v2
    doc.version = "v2"
    write_json_atomic(doc.path, doc)
    code, result = since_result(tmp_path, "v1", 0.05)
    assert code == 1
    assert {(r["host"], r["metric"]) for r in result["regressions"]} == {
        ("server-b", "saturation_rps"), ("server-b", "latency_at_slo@10ms")}
    code, text = bench_since(tmp_path, "v1", 0.05)
    assert code == 1 and text.splitlines()[2].split()[0] == "host" and "server-b" in text and "server-a" not in text


def test_report_and_publish_read_a_roll_up(tmp_path: Path):
    rolled_up(tmp_path, "20261204T000000Z-bench-v1", {"server-a": 1000.0, "server-b": 2000.0})
    run = load_run(tmp_path / "20261204T000000Z-bench-v1")
    assert run.kind == "bench" and len(run.document.cells) == 2
    from probatorium.report import build_report

    html = build_report([run])
    assert "bench_app-uvicorn @ server-a" in html and "bench_app-uvicorn @ server-b" in html
    info = read_run(tmp_path / "20261204T000000Z-bench-v1", version="v1")
    assert info.kind == "bench" and info.status == "passed"


def test_bench_target_names_hosts_or_competitors():
    assert split_bench_target("server-a") == ("server-a", [])
    assert split_bench_target("all") == ("all", [])
    assert split_bench_target("bench_app-uvicorn") == (None, ["bench_app-uvicorn"])
    assert split_bench_target(" server-b , nginx ") == ("server-b", ["nginx"])
    assert split_bench_target(None) == (None, [])


def test_every_registry_competitor_can_be_placed_except_service_cells():
    cells = select_cells("all")
    placed = {c.name: unplaceable_reason(c, cells) for c in select_competitors("all")}
    assert {n for n, why in placed.items() if why} == {
        "driver_postgres-uvicorn", "driver_redis-uvicorn", "driver_memcached-uvicorn"}
    assert "backing services (redis)" in placed["driver_redis-uvicorn"]
    # cmd competitors bind where they are told: {host} and {port}
    for comp in select_competitors("all"):
        if comp.kind == "cmd":
            assert placeable(target_spec(comp, {"python": "py", "apps": "a", "dir": "d"})), comp.name
    with pytest.raises(UsageError, match="cannot place competitor driver_redis-uvicorn"):
        check_placeable(select_competitors("bench_app-uvicorn,driver_redis-uvicorn"), cells)
    check_placeable(select_competitors("driver_redis-uvicorn"), select_cells("plaintext"))  # no service cell


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    full.pop("PROBATORIUM_VALIDATE_DRIVER", None)
    full.pop("BENCH_TARGET", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "probatorium.cli", "bench", *args], capture_output=True, text=True,
                          timeout=60, env=full)


@pytest.mark.parametrize("args, env, message", [
    # the default competitors include nginx and node-http: the ansible driver deploys Python ones only
    (["--driver", "ansible"], {}, "deploys Python competitors only, not nginx, node-http"),
    (["--driver", "ssh", "--competitors", "go-nethttp,bench_app-uvicorn"], {},
     "deploys Python competitors only, not go-nethttp"),
    ([], {"PROBATORIUM_VALIDATE_DRIVER": "ansible", "BENCH_COMPETITORS": "nginx"},
     "deploys Python competitors only, not nginx"),
    (["--driver", "ansible", "--competitors", "driver_redis-uvicorn", "--cells", "redis-get"], {},
     "--driver ansible cannot place competitor driver_redis-uvicorn"),
    (["--driver", "ansible", "--competitors", "bench_app-uvicorn", "--inventory", "/nonexistent/inv.yml"], {},
     "inventory /nonexistent/inv.yml: no such file"),
    (["--target-host", "server-a"], {}, "need a multi-host driver: add --driver netns"),
    ([], {"BENCH_TARGET": "server-b"}, "need a multi-host driver: add --driver netns"),
    (["--driver", "netns", "--target-host", "server-c"], {}, "unknown target host server-c"),
    (["--driver", "netns", "--competitors", "driver_redis-uvicorn", "--cells", "redis-get"], {},
     "cannot place competitor driver_redis-uvicorn"),
])
def test_cli_refusals_are_one_line(args, env, message, tmp_path: Path):
    done = _cli(*args, "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_ansible_bad_inventory_makes_no_results_folder(tmp_path: Path):
    done = _cli("--driver", "ansible", "--competitors", "bench_app-uvicorn", "--inventory", str(tmp_path / "none.yml"),
                env={"PROBATORIUM_RESULTS": str(tmp_path / "results")})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no such file" in done.stderr, done.stderr
    assert not (tmp_path / "results").exists()
