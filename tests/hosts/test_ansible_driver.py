"""The ansible driver end to end: real sshd hosts in network namespaces, real ansible, the pristine rule.

One netns cluster with an sshd per host (each with its own /tmp; tests/hosts/sshd_hosts.py)
serves every test of this module. The pristine snapshot of a host is its /tmp listing (seen
through its sshd's mount namespace), the processes carrying a run marker, and the
controller's hosts manifest entries still running: identical before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probatorium.hosts.hostside import MARKER_ENV, marked_processes

sys.path.insert(0, str(Path(__file__).parent))
from sshd_hosts import start_hosts, stop_hosts  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DURATION = "12s"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, mount namespaces, sshd)"
    for tool in ("ip", "unshare", "nsenter", "ssh-keygen", "ssh"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"needs {tool}"
    if not Path("/usr/sbin/sshd").exists():
        reason = "needs /usr/sbin/sshd (apt-get install openssh-server)"
        if os.environ.get("PROBATORIUM_REQUIRE_SERVICES") == "1":
            pytest.fail(reason + " under PROBATORIUM_REQUIRE_SERVICES=1")
        return reason
    return None


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    why = _missing()
    if why:
        pytest.skip(why)
    state = tmp_path_factory.mktemp("controller-state")
    root = Path("/var/tmp") / f"pb-sshd-test-{os.getpid()}"  # not under /tmp: each host's /tmp is a private tmpfs
    shutil.rmtree(root, ignore_errors=True)
    old = os.environ.get("PROBATORIUM_STATE_DIR")
    os.environ["PROBATORIUM_STATE_DIR"] = str(state)  # the test's cluster goes into the controller's manifest
    try:
        up = start_hosts(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield up, up.inventory(root / "inventory.yml"), state
    finally:
        stop_hosts(up)
        shutil.rmtree(root, ignore_errors=True)
        if old is None:
            os.environ.pop("PROBATORIUM_STATE_DIR", None)
        else:
            os.environ["PROBATORIUM_STATE_DIR"] = old


def _env(state: Path, results: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "PROBATORIUM_STATE_DIR": str(state),
            "PROBATORIUM_RESULTS": str(results), "VALIDATE_PARALLEL": "1"}


def _cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "probatorium.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def _snapshot(up, state: Path) -> dict:
    manifest = json.loads((state / "hosts.json").read_text()) if (state / "hosts.json").exists() else {}
    running = sorted(e["id"] for e in manifest.get("entries", []) if e.get("state") == "running")
    return {"tmp": {h: up.tmp_listing(h) for h in up.sshd}, "marked": sorted(p["pid"] for p in marked_processes()),
            "running_entries": running}


def _validate_argv(inventory: Path) -> list[str]:
    return ["validate", "--driver", "ansible", "--inventory", str(inventory), "--matrix",
            "--refapps", "auth_session_ratelimit", "--engines", "uvicorn,hypercorn", "--duration", DURATION]


def test_deploy_validate_fetch_cleanup_pristine(hosts, tmp_path):
    up, inventory, state = hosts
    results = tmp_path / "results"
    env = _env(state, results)
    before = _snapshot(up, state)
    assert not before["marked"], f"processes with {MARKER_ENV} before the test: {before['marked']}"

    started = time.monotonic()
    done = _cli(env, "deploy", "--inventory", str(inventory), "--refapps", "auth_session_ratelimit",
                "--engines", "uvicorn,hypercorn", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    deployed = json.loads(done.stdout)
    print(f"deploy: {time.monotonic() - started:.1f} s, wheelhouse {deployed['wheelhouse']}")
    run_dir = f"probatorium-{deployed['run_id']}"
    assert all(run_dir in up.tmp_listing(h) for h in up.sshd)
    status = json.loads(_cli(env, "status", "--inventory", str(inventory), "--json").stdout)
    assert all(h["reachable"] for h in status["hosts"].values()), status
    assert {r["run_id"] for r in status["ansible_runs"]} == {deployed["run_id"]}

    started = time.monotonic()
    done = _cli(env, *_validate_argv(inventory), "--json", timeout=400)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    print(f"validate --driver ansible: {time.monotonic() - started:.1f} s, exit {done.returncode}")
    summary = json.loads(done.stdout)
    documents = {h: Path(r["document"]) for h, r in summary["hosts"].items()}
    assert set(documents) == {"server-a", "server-b"}
    for host, path in documents.items():
        _check_document(host, path)
    diff = _cli(env, "validate-diff", str(documents["server-a"]), str(documents["server-b"]), "--json")
    assert diff.returncode in (0, 1), diff.stderr[-2000:]
    assert json.loads(diff.stdout)["command"] == "validate-diff"

    done = _cli(env, "cleanup", "--inventory", str(inventory), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _snapshot(up, state) == before
    assert _cli(env, "cleanup", "--inventory", str(inventory)).returncode == 0  # idempotent
    assert _snapshot(up, state) == before


def _check_document(host: str, path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["host_arch_pair"].startswith(f"{host}-"), doc["host_arch_pair"]
    assert path.parent.name.endswith(f"-validate-matrix-{doc['host_arch_pair']}")
    cells = doc["validation_results"]["cells"]
    print(f"{doc['host_arch_pair']}: " + ", ".join(f"{c['engine']} {c['status']}" for c in cells))
    assert sorted(c["engine"] for c in cells) == ["hypercorn", "uvicorn"]
    for cell in cells:
        assert cell["status"] in ("ok", "failed"), (cell["status"], cell.get("reason"))
        for pred in ("I-MEM-1", "I-FD-1", "I-TASK-1"):
            prop = cell["properties"][pred]
            assert prop["status"] == "not_judged", (pred, prop)
            assert f"remote host {host}" in prop["reason"], prop["reason"]
        assert cell["tier_3"]["faults_target-kill"] == 0 and cell["tier_3"]["faults_fd-squeeze"] == 0
        assert cell["properties"]["I-LIVENESS"]["status"] == "passed"  # the agent watches the process it started


def test_sigkill_mid_run_then_cleanup_is_pristine(hosts, tmp_path):
    up, inventory, state = hosts
    env = _env(state, tmp_path / "results")
    before = _snapshot(up, state)
    proc = subprocess.Popen([sys.executable, "-m", "probatorium.cli", *_validate_argv(inventory)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        seen = []
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if not line or line.startswith("deployed "):
                break
        assert any(s.startswith("deployed ") for s in seen), "".join(seen)[-2000:]
        time.sleep(6)  # the run is under way on the client host
        assert _snapshot(up, state)["marked"], "nothing ran on the hosts"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    left = json.loads(_cli(env, "status", "--json").stdout)["ansible_runs"]
    assert [r["owner_alive"] for r in left] == [False], left  # the killed run is still recorded
    done = _cli(env, "cleanup", "--inventory", str(inventory), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    deadline = time.monotonic() + 20  # the controller's orphaned ssh sessions end once their commands did
    while time.monotonic() < deadline and _snapshot(up, state) != before:
        time.sleep(0.5)
    assert _snapshot(up, state) == before


def test_bench_on_both_server_hosts_pristine(hosts, tmp_path):
    """bench --driver ansible: one Python competitor x one cell x one short run per server host, the
    competitor started by each server's agent on its address, server CPU not measured, hosts pristine."""
    up, inventory, state = hosts
    results = tmp_path / "results"
    env = {**_env(state, results), "PROBATORIUM_TARGET_VERSION": "e2e"}
    for name in ("BENCH_TARGET", "BENCH_COMPETITORS", "BENCH_CELLS", "PROBATORIUM_VALIDATE_DRIVER"):
        env.pop(name, None)
    before = _snapshot(up, state)
    started = time.monotonic()
    done = _cli(env, "bench", "--driver", "ansible", "--inventory", str(inventory), "--target-host", "all",
                "--competitors", "bench_app-uvicorn", "--cells", "plaintext", "--runs", "1", "-d", "2s",
                "--warmup", "0.5s", "--max-probes", "0", "--json", "--quiet", timeout=300)
    print(f"bench --driver ansible: {time.monotonic() - started:.1f} s, exit {done.returncode}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    [folder] = [p for p in results.iterdir() if p.name.endswith("-bench-e2e")]
    assert summary["results"] == str(folder / "results.json") and summary["driver"] == "ansible"
    rollup = json.loads((folder / "results.json").read_text())
    assert rollup["driver"] == "ansible" and not rollup["partial"]
    for host in ("server-a", "server-b"):
        doc = json.loads((folder / "raw" / f"{host}.json").read_text())
        address = up.cluster.addresses[host]  # exists only inside that host's namespace
        assert (doc["host"]["server_host"], doc["host"]["server_address"]) == (host, address)
        [cell] = doc["cells"]
        assert cell["status"] == "ok" and cell["target"].rsplit(":", 1)[0] == address
        assert cell["saturation"]["requests"] > 0
        observer = cell["observer"]
        assert observer["samples"] == 0 and "steady" not in observer, observer  # never 0 %, never another process
        assert f"remote host {host}" in observer["not_measured"], observer
        if doc["host"]["server_cpus"]:  # the agent pinned it to the bench's server CPUs (the same machine here)
            assert observer["server_cpus_pinned_by_agent"] == doc["host"]["server_cpus"], observer
        entry = next(h for h in rollup["hosts"] if h["name"] == host)
        assert entry["address"] == address and entry["raw"] == f"raw/{host}.json"
        cell_dir = folder / entry["folder"] / cell["folder"]
        assert (cell_dir / "loadgen.json").is_file()
        # the server's own word, from its host's agent: it listened on that host's address
        assert f"running on http://{cell['target']}" in (cell_dir / "server.log").read_text()
    assert [(c["host"], c["status"]) for c in rollup["cells"]] == [("server-a", "ok"), ("server-b", "ok")]
    assert _snapshot(up, state) == before
