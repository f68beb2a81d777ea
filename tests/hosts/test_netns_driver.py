"""--driver netns for real: namespaces, veth, a bridge, targets inside the server namespaces,
one document per host, validate-diff on them, cleanup, and the pristine rule (also after SIGKILL).

Needs root and iproute2; without them the tests skip with the reason, except on CI
(PROBATORIUM_REQUIRE_SERVICES=1), where a machine that cannot run them is a failure.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.hosts.cluster import pick_hosts
from probatorium.hosts.netns import (HOSTS, cleanup_netns, create_cluster, destroy_cluster, hosts_manifest,
                                     in_namespace, namespace_pids, parse_host_names)
from e2e_helpers import CLI, REPO
from e2e_helpers import run_cli as _cli_run
from pristine import differences, snapshot

_why = ("needs root" if os.geteuid() != 0 else
        "needs iproute2's ip" if not (shutil.which("ip") or os.path.exists("/usr/sbin/ip")) else "")
if _why and os.environ.get("PROBATORIUM_REQUIRE_SERVICES"):
    raise RuntimeError(f"the netns driver tests must run on CI: {_why}")
pytestmark = pytest.mark.skipif(bool(_why), reason=f"the netns driver {_why}")


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    """A private state dir: this test's hosts manifest, nobody else's."""
    path = tmp_path / "state"
    monkeypatch.setenv("PROBATORIUM_STATE_DIR", str(path))
    return path


def _cli(args: list[str], env: dict, timeout: float):
    return _cli_run(args, timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------------
# the cluster itself


def test_cluster_hosts_reach_each_other_over_the_bridge_and_vanish_on_destroy(state_dir):
    before = snapshot(state_dir)
    cluster = create_cluster("t1" + os.urandom(3).hex())
    try:
        assert all(Path("/run/netns", ns).exists() for ns in cluster.namespaces.values())
        net = ipaddress.ip_network(cluster.subnet)
        assert all(ipaddress.ip_address(a) in net for a in cluster.addresses.values())
        # a listener inside server-a, reached from inside the client namespace over the veths
        server_addr = cluster.addresses["server-a"]

        def listen() -> socket.socket:
            sock = socket.socket()
            sock.bind((server_addr, 0))
            sock.listen(1)
            return sock

        listener = in_namespace(cluster.namespaces["server-a"], listen)
        port = listener.getsockname()[1]
        reached = in_namespace(cluster.namespaces["client"],
                               lambda: socket.create_connection((server_addr, port), timeout=2).close() or True)
        assert reached
        listener.close()
        # the server's address is not reachable from a namespace's loopback: traffic really crosses
        with pytest.raises(OSError):
            in_namespace(cluster.namespaces["client"], lambda: socket.create_connection(("127.0.0.1", port), 1))
        entry = [e for e in hosts_manifest().running() if e["id"] == cluster.entry_id]
        assert entry and entry[0]["namespaces"] == cluster.namespaces
    finally:
        destroy_cluster(cluster)
    assert differences(before, snapshot(state_dir)) == {}


def test_cleanup_removes_only_clusters_whose_run_is_gone(state_dir):
    dead = subprocess.Popen(["true"])
    dead.wait()
    cluster = create_cluster("t2" + os.urandom(3).hex(), owner_pid=dead.pid)
    live = create_cluster("t3" + os.urandom(3).hex())  # owned by this (live) process
    try:
        lines = cleanup_netns(("server-b",))
        assert any("server-b: removed namespace" in line for line in lines), lines
        assert Path("/run/netns", cluster.namespaces["client"]).exists()  # not asked for
        assert any("left running" in line and live.run_id in line for line in lines)
        lines = cleanup_netns()
        assert not any(Path("/run/netns", ns).exists() for ns in cluster.namespaces.values())
        assert any(f"removed bridge {cluster.bridge}" in line for line in lines)
        assert cleanup_netns() == [f"netns cluster {live.run_id}: left running (its run pid {os.getpid()} is alive)"]
    finally:
        destroy_cluster(live)
        destroy_cluster(cluster)
    assert not any(Path("/run/netns", ns).exists() for ns in live.namespaces.values())


def test_host_names_parse_and_unknown_hosts_are_refused():
    assert parse_host_names(None) is None and parse_host_names("all") is None
    assert parse_host_names("server-a, server-b") == ("server-a", "server-b")
    assert pick_hosts(None) == ("server-a", "server-b") == pick_hosts("all")
    assert pick_hosts("server-b") == ("server-b",)
    with pytest.raises(UsageError, match="unknown target host client"):
        pick_hosts("client")
    with pytest.raises(UsageError):
        parse_host_names(" , ")
    assert HOSTS == ("client", "server-a", "server-b")


# ---------------------------------------------------------------------------------------------
# validate --driver netns, end to end


def test_url_and_service_targets_are_refused_with_one_line(state_dir):
    done = _cli(["validate", "--driver", "netns", "--url", "http://127.0.0.1:9", "-d", "5s"], {}, 60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--driver netns starts the target on each server host" in done.stderr
    done = _cli(["validate", "--driver", "netns", "--refapp", "driver_redis", "-d", "5s"], {}, 60)
    assert done.returncode == 2 and "cannot give targets backing services yet (redis)" in done.stderr
    done = _cli(["validate", "--driver", "nope", "-d", "5s"], {}, 60)
    assert done.returncode == 2 and "unknown driver 'nope'; drivers: local, netns, ansible" in done.stderr


def test_matrix_runs_once_per_server_host_in_parallel_and_leaves_nothing(state_dir, tmp_path):
    before = snapshot(state_dir)
    results = tmp_path / "results"
    # 2 cells × 8 s per host, Tier 1 only: enough for both hosts to serve traffic from their namespaces
    args = ["validate", "--driver", "netns", "--matrix", "--refapps", "auth_session_ratelimit",
            "--engines", "uvicorn,hypercorn", "-d", "16s", "--tiers", "1", "--seed", "0x5eed",
            "--results-dir", str(results), "--json"]
    started = time.monotonic()
    done = _cli(args, {"VALIDATE_PARALLEL": "1", "PROBATORIUM_PROGRESS": "0"}, 240)
    wall = time.monotonic() - started
    assert done.returncode in (0, 1), done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["driver"] == "netns" and summary["seed"] == "0x5eed"
    assert set(summary["hosts"]) == {"server-a", "server-b"}
    subnets = set()
    for host, part in summary["hosts"].items():
        doc = json.loads(Path(part["document"]).read_text())
        assert doc["host_arch_pair"].startswith(f"{host}-")
        assert Path(part["document"]).parent.name.endswith(doc["host_arch_pair"])
        cells = doc["validation_results"]["cells"]
        assert sorted(c["engine"] for c in cells) == ["hypercorn", "uvicorn"]
        assert all(c["status"] in ("ok", "failed") for c in cells), [c["reason"] for c in cells]
        assert all(int(c["tier_1"]["requests_sent"]) > 0 for c in cells)
        # every cell's target listened on its server namespace's address, not on loopback
        for c in cells:
            address = c["target"]["address"].rpartition(":")[0]
            assert not ipaddress.ip_address(address).is_loopback, address
            subnets.add(str(ipaddress.ip_network(f"{address}/24", strict=False)))
    assert len(subnets) == 1  # both hosts in the one cluster's subnet
    # hosts ran side by side: well under twice one host's share (one host alone is ≥ 16 s + start-up)
    assert wall < 2 * 16 + 60
    docs = [part["document"] for part in summary["hosts"].values()]
    diff = _cli(["validate-diff", *docs, "--json"], {}, 60)
    assert diff.returncode in (0, 1), diff.stderr[-2000:]
    compared = json.loads(diff.stdout)
    assert {d["host_arch_pair"] for d in compared["documents"]} == {f"{h}-{_arch(docs, h)}" for h in summary["hosts"]}
    assert differences(before, snapshot(state_dir)) == {}


def _arch(docs: list[str], host: str) -> str:
    for path in docs:
        pair = json.loads(Path(path).read_text())["host_arch_pair"]
        if pair.startswith(f"{host}-"):
            return pair[len(host) + 1:]
    raise AssertionError(host)


def test_sigkilled_run_leaves_nothing_after_cleanup(state_dir, tmp_path):
    before = snapshot(state_dir)
    proc = subprocess.Popen(CLI + ["validate", "--driver", "netns", "--refapp", "kitchen_sink", "-d", "60s",
                                   "--tiers", "1", "--results-dir", str(tmp_path / "results")],
                            cwd=REPO, env={**os.environ, "VALIDATE_PARALLEL": "1", "PROBATORIUM_PROGRESS": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        servers: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            entries = hosts_manifest().running()
            servers = [e["namespaces"][h] for e in entries for h in ("server-a", "server-b")]
            if servers and all(namespace_pids(ns) for ns in servers):
                break  # both targets are up inside their namespaces
            time.sleep(0.2)
        assert servers and all(namespace_pids(ns) for ns in servers), proc.stderr.read()[-2000:] \
            if proc.poll() is not None else "targets did not start"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # the children die with the controller (death signal), their targets with them
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(namespace_pids(ns) for ns in servers):
            time.sleep(0.2)
        assert not any(namespace_pids(ns) for ns in servers)
        left = snapshot(state_dir)
        assert left["namespaces"] and left["manifest_running"]  # SIGKILL: the cluster stays for cleanup
        done = _cli(["cleanup"], {}, 60)
        assert done.returncode == 0, done.stderr
        assert "removed bridge" in done.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cleanup_netns(include_live=True)
    assert differences(before, snapshot(state_dir)) == {}
