"""bench --driver netns end to end: real namespaces, one competitor x one cell x one short run per host.

Needs root and iproute2; without them the test skips with the reason, except on CI
(PROBATORIUM_REQUIRE_SERVICES=1), where a machine that cannot run it is a failure
(as tests/hosts/test_netns_driver.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from probatorium.hosts.netns import NETNS_DIR, NetnsError, check_can_create
from pristine import differences, snapshot

SRC = Path(__file__).resolve().parents[2] / "src"


def _why_not() -> str:
    try:
        check_can_create()
    except NetnsError as exc:
        return str(exc)
    return ""


_why = _why_not()
if _why and os.environ.get("PROBATORIUM_REQUIRE_SERVICES"):
    raise RuntimeError(f"the bench netns driver test must run on CI: {_why}")
pytestmark = pytest.mark.skipif(bool(_why), reason=f"bench --driver netns: {_why}")


def test_bench_on_both_server_hosts(tmp_path: Path):
    results = tmp_path / "results"
    before = snapshot(tmp_path / "state")
    env = {**os.environ, "PYTHONPATH": str(SRC), "PROBATORIUM_RESULTS": str(results),
           "PROBATORIUM_STATE_DIR": str(tmp_path / "state"), "PROBATORIUM_TARGET_VERSION": "e2e"}
    for name in ("BENCH_TARGET", "BENCH_COMPETITORS", "BENCH_CELLS", "PROBATORIUM_VALIDATE_DRIVER"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "probatorium.cli", "bench", "--driver", "netns", "--target-host",
                           "all", "--competitors", "bench_app-uvicorn", "--cells", "plaintext", "--runs", "1",
                           "-d", "1s", "--warmup", "0.5s", "--max-probes", "1", "--json", "--quiet"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    [folder] = [p for p in results.iterdir() if p.name.endswith("-bench-e2e")]
    assert summary["results"] == str(folder / "results.json")
    raw = {host: json.loads((folder / "raw" / f"{host}.json").read_text()) for host in ("server-a", "server-b")}
    rollup = json.loads((folder / "results.json").read_text())
    addresses = {h["name"]: h["address"] for h in rollup["hosts"]}
    assert set(addresses) == {"server-a", "server-b"} and addresses["server-a"] != addresses["server-b"]
    for host, doc in raw.items():
        address = ipaddress.ip_address(addresses[host])
        assert not address.is_loopback and address in ipaddress.ip_network("10.213.0.0/16")
        # the competitor listened on the server namespace's address (which exists only inside it)
        assert (doc["host"]["server_host"], doc["host"]["server_address"]) == (host, addresses[host])
        [cell] = doc["cells"]
        assert cell["status"] == "ok" and cell["target"].rsplit(":", 1)[0] == addresses[host]
        assert cell["saturation"]["requests"] > 0
        host_folder = next(h["folder"] for h in rollup["hosts"] if h["name"] == host)
        assert (folder / host_folder / cell["folder"] / "loadgen.json").is_file()
    assert [(c["host"], c["status"]) for c in rollup["cells"]] == [("server-a", "ok"), ("server-b", "ok")]
    # nothing left: the cluster's namespaces are gone and its manifest entry is stopped
    [run_id] = set(re.findall(r"netns cluster ([0-9a-f]{8}):", done.stderr))
    assert not [p for p in NETNS_DIR.glob(f"pb-{run_id[:6]}-*")], "a namespace of the run was left behind"
    entries = json.loads((tmp_path / "state" / "hosts.json").read_text())
    entries = entries.get("entries", entries) if isinstance(entries, dict) else entries
    assert [e["state"] for e in entries if e.get("run_id") == run_id] == ["stopped"]
    assert left_behind(differences(before, snapshot(tmp_path / "state")), run_id) == {}


def left_behind(changed: dict, run_id: str) -> dict:
    """What this run left: its own namespaces, links and processes, any new probatorium /tmp folder, any
    sysctl. Other sessions' clusters that come and go meanwhile (a shared machine) are not ours to judge."""
    out = {}
    for key, value in changed.items():
        if key in ("namespaces", "links"):  # pristine.differences lists what was added
            mine = [x for x in value if run_id[:6] in x]
        elif key == "processes":
            mine = [line for line in value if line.startswith(run_id)]
        elif key == "tmp_folders":
            mine = value
        else:
            mine = value
        if mine:
            out[key] = mine
    return out
