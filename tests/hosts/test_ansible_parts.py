"""The ansible driver's parts without SSH: inventory, lock closure, oneline parsing, host cleanup, the agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from probatorium.errors import TargetStartError, UsageError
from probatorium.hosts import hostside
from probatorium.hosts.inventory import parse_listing, read_inventory
from probatorium.hosts.playbooks import parse_oneline
from probatorium.hosts.wheelhouse import closure, competitor_engines, parse_lock, plan_wheels, requirement_names

LISTING = {
    "_meta": {"hostvars": {"c1": {"ansible_host": "192.0.2.1", "lan_ip": "10.0.0.1"},
                           "s1": {"ansible_host": "192.0.2.2", "lan_ip": "10.0.0.2"}, "s2": {}}},
    "all": {"children": ["ungrouped", "client", "server"]},
    "client": {"hosts": ["c1"]},
    "server": {"children": ["arm"], "hosts": ["s1"]},
    "arm": {"hosts": ["s2"]},
}


def test_inventory_roles_and_addresses():
    inv = parse_listing(Path("inv.yml"), LISTING, use_lan=False)
    assert inv.client.name == "c1" and inv.client.address == "192.0.2.1"
    assert [h.name for h in inv.servers] == ["s1", "s2"]  # child groups of server count
    assert inv.servers[1].address == "s2"  # no ansible_host: the inventory name
    assert [h.name for h in inv.pick("c1,s2")] == ["c1", "s2"]
    lan = parse_listing(Path("inv.yml"), {**LISTING, "arm": {"hosts": []}}, use_lan=True)
    assert [h.address for h in lan.hosts] == ["10.0.0.1", "10.0.0.2"]


@pytest.mark.parametrize("change, words", [
    ({"client": {"hosts": []}}, "no host in group 'client'"),
    ({"client": {"hosts": ["c1", "s1"]}}, "exactly one"),
    ({"server": {"hosts": []}, "arm": {"hosts": []}}, "no host in group 'server'"),
    ({"server": {"hosts": ["c1"]}, "arm": {"hosts": []}}, "both groups"),
])
def test_inventory_errors_are_one_line(change, words):
    with pytest.raises(UsageError, match=words):
        parse_listing(Path("inv.yml"), {**LISTING, **change}, use_lan=False)
    with pytest.raises(UsageError, match="no lan_ip"):
        parse_listing(Path("inv.yml"), LISTING, use_lan=True)  # s2 has none


def test_inventory_read_by_ansible_ini_and_missing(tmp_path):
    ini = tmp_path / "hosts.ini"
    ini.write_text("[client]\nloadbox ansible_host=192.0.2.9\n\n[server]\nsrv1 ansible_host=192.0.2.10 lan_ip=10.1.1.1\n")
    inv = read_inventory(ini)
    assert (inv.client.name, inv.client.address, inv.servers[0].address) == ("loadbox", "192.0.2.9", "192.0.2.10")
    with pytest.raises(UsageError, match="no such file"):
        read_inventory(tmp_path / "nope.yml")
    with pytest.raises(UsageError, match="--inventory"):
        read_inventory(None)


LOCK = """\
# header comment
alpha==1.0
    # via -r requirements/core.in
beta==2.0
    # via alpha
gamma==3.0
    # via
    #   beta
    #   zeta
zeta==9.0
    # via -r requirements/test.in
"""


def test_lock_closure_follows_via_lines():
    pins = parse_lock(LOCK)
    assert pins["gamma"] == ("3.0", frozenset({"beta", "zeta"}))
    assert closure(pins, {"alpha"}) == {"alpha", "beta", "gamma"}  # zeta is not needed by alpha's tree
    with pytest.raises(UsageError, match="not pinned"):
        closure(pins, {"omega"})
    assert requirement_names("Foo_Bar[x]>=1  # c\n-r other.in\n\nbaz\n") == ["foo-bar", "baz"]


def test_wheel_plan_ships_what_the_hosts_need_only():
    plan = plan_wheels(("uvicorn", "hypercorn"), ("auth_session_ratelimit",))
    for needed in ("typer", "pydantic", "uvicorn", "httptools", "hypercorn", "h2", "starlette", "slowapi"):
        assert needed in plan.pins
    for controller_or_unasked in ("ansible-core", "granian", "daphne", "pytest", "schemathesis"):
        assert controller_or_unasked not in plan.pins
    assert competitor_engines("python-only") and competitor_engines(None) == ()
    with pytest.raises(UsageError, match="Python engines only"):
        competitor_engines("nginx")
    assert "flask" not in plan.pins and "gunicorn" not in plan.pins
    bench = plan_wheels(("uvicorn",), ("bench_app",), distributions=("flask", "gunicorn"))  # bench --driver ansible
    assert "flask" in bench.pins and "gunicorn" in bench.pins and "werkzeug" in bench.pins  # with its closure


def test_agent_checks_what_it_starts(tmp_path):
    """refapp/app/cmd only; a cmd only of the agent's own Python binding {host}:{port}; CPUs it has."""
    from probatorium.errors import ProbatoriumError
    from probatorium.hosts.agent import checked_spec

    with pytest.raises(ProbatoriumError, match="refapp, app and cmd"):
        checked_spec({"kind": "url", "url": "http://x"}, tmp_path / "a")
    for cmd in ("/bin/sh -c 'nc -l {host} {port}'", f"{sys.executable} -m http.server {{port}}"):
        with pytest.raises(ProbatoriumError, match="its own Python"):
            checked_spec({"kind": "cmd", "cmd": cmd}, tmp_path / "b")
    own = sorted(os.sched_getaffinity(0))
    spec, cpus = checked_spec({"kind": "cmd", "cmd": f"{sys.executable} -m gunicorn --bind {{host}}:{{port}} a:b",
                               "app_dir": "/client/only/dir", "cpus": [own[0], 4096]}, tmp_path / "c")
    assert spec.app_dir == str(tmp_path / "c") and (tmp_path / "c").is_dir()  # the client's folder is not here
    assert cpus == [own[0]] and spec.cpus == (own[0],)  # a CPU this host lacks is dropped
    spec, cpus = checked_spec({"kind": "refapp", "refapp": "bench_app", "engine": "uvicorn", "cpus": [4096]},
                              tmp_path / "d")
    assert cpus is None and spec.cpus is None  # none of the asked CPUs here: not pinned


def test_oneline_results_and_failures():
    out = "\n".join([
        'client | CHANGED | rc=0 | (stdout) PBRESULT {"cleaned": [{"run": "ab"}]}',
        'server-a | FAILED! => {"changed": false, "msg": "boom\\nsecond line"}',
        'server-b | UNREACHABLE!: Failed to connect to the host via ssh',
        "PLAY RECAP ***",
    ])
    results, failures = parse_oneline(out)
    assert results == {"client": [{"cleaned": [{"run": "ab"}]}]}
    assert failures["server-a"] == "second line" and failures["server-b"].startswith("unreachable")


def test_host_cleanup_stops_recorded_and_marked_processes(tmp_path, monkeypatch):
    prefix = str(tmp_path / "probatorium-")
    monkeypatch.setattr(hostside, "RUN_PREFIX", prefix)
    run = f"{os.getpid() & 0xffffffff:08x}"
    folder = Path(prefix + run)
    (folder / "sub").mkdir(parents=True)
    other = Path(prefix + "replay-0bzi8cdm")  # another tool's folder that shares the prefix
    other.mkdir()
    manifest = str(folder / "manifest.json")
    recorded = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    marked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, hostside.MARKER_ENV: run})
    try:
        hostside.record_process(manifest, recorded.pid, "sleeper")
        hostside.record(manifest, {"kind": "process", "pid": os.getpid(), "start_ticks": 1})  # a reused pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not hostside.marked_processes(run):
            time.sleep(0.05)
        assert [p["pid"] for p in hostside.marked_processes(run)] == [marked.pid]
        state = hostside.status()
        assert state["runs"][0]["state"] == "running"
        done = hostside.cleanup(skip=set(), known={"another-run"})  # live, and not this controller's: kept
        assert done["cleaned"][0]["kept"] and folder.exists() and recorded.poll() is None
        done = hostside.cleanup(skip=set(), known={run})
        assert done["cleaned"][0]["removed"] and not folder.exists()
        assert recorded.wait(timeout=10) is not None and marked.wait(timeout=10) is not None
        assert hostside.cleanup(skip=set()) == {"cleaned": []}  # idempotent
        assert other.is_dir()  # never a run folder
    finally:
        for p in (recorded, marked):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_agent_serves_a_remote_target(tmp_path, monkeypatch):
    """A real agent on loopback, a real refapp under uvicorn: the launcher's RemoteTarget has no local process."""
    from probatorium.hosts import agent as agent_mod
    from probatorium.targets.launcher import RemoteTarget, TargetSpec, start_target

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    token = "t0k3n"
    server_box: dict = {}
    real_server = agent_mod.ThreadingHTTPServer

    def capture(*args, **kwargs):
        server_box["server"] = real_server(*args, **kwargs)
        return server_box["server"]

    monkeypatch.setattr(agent_mod, "ThreadingHTTPServer", capture)
    thread = threading.Thread(target=agent_mod.serve, args=("127.0.0.1", run_dir, token), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (run_dir / "agent.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    info = json.loads((run_dir / "agent.json").read_text())
    monkeypatch.setenv("PROBATORIUM_TARGET_AGENT", f"http://127.0.0.1:{info['port']}")
    monkeypatch.setenv("PROBATORIUM_TARGET_AGENT_TOKEN", "wrong")
    monkeypatch.setenv("PROBATORIUM_HOST_NAME", "server-x")
    spec = TargetSpec(kind="refapp", refapp="auth_session_ratelimit", engine="uvicorn", ready_timeout=30)
    try:
        with pytest.raises(TargetStartError, match="bearer token"):
            start_target(spec, tmp_path / "denied")
        monkeypatch.setenv("PROBATORIUM_TARGET_AGENT_TOKEN", token)
        target = start_target(spec, tmp_path / "cell")
        assert isinstance(target, RemoteTarget) and target.pid is None and target.spawned is None
        assert "remote host server-x" in target.no_process_reason
        assert target.versions.get("uvicorn") and target.port > 0
        first = target.remote_pid
        target.restart()
        assert target.remote_pid != first and target.remote_pid is not None
        entries = hostside.read_manifest(str(run_dir / "manifest.json"))["entries"]
        assert {e["pid"] for e in entries} >= {info["pid"], first, target.remote_pid}
        assert target.alive() and target.process is not None and target.process.pid == target.remote_pid
        os.kill(target.remote_pid, signal.SIGKILL)  # a crash on the "server host": the agent says so
        assert _gone(target.remote_pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and target.alive():
            time.sleep(0.2)
        assert not target.alive() and target.exit_code() == -signal.SIGKILL
        target.stop()
    finally:
        server_box["server"].shutdown()
        thread.join(timeout=15)


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and hostside.same_process(pid, None):
        time.sleep(0.05)
    return not hostside.same_process(pid, None)
