"""``--driver ansible``: deploy to the inventory's hosts, validate from the client host, fetch, clean up.

deploy
    builds the wheelhouse (:mod:`.wheelhouse`), records the run in the
    controller's hosts manifest (kind ``ansible``) before touching a host, then
    one playbook: per host ``/tmp/probatorium-<run>/`` with its manifest, the
    wheelhouse and refapps, a venv installed with ``--no-index``; per server
    host a host agent (:mod:`.agent`) on its traffic address with a token the
    controller made.
run
    per server host (at once with VALIDATE_PARALLEL=1) a playbook runs
    ``probatorium validate`` on the client host, recorded in its manifest, with
    PROBATORIUM_TARGET_AGENT pointing at that server's agent; its result folder
    is fetched into ``results/<ts>-validate[-matrix]-<host>-<arch>/``.
cleanup
    a playbook that stops what each host manifest records (and any process
    carrying the run's marker) and removes the run folder; then the controller's
    entry is marked stopped. A controller killed with SIGKILL leaves the entry
    running: ``probatorium cleanup --inventory F`` undoes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from probatorium import procs
from probatorium.errors import InfraError, UsageError
from probatorium.hosts import playbooks as pb
from probatorium.hosts.agent_client import AGENT_ENV, HOST_NAME_ENV, TOKEN_ENV
from probatorium.hosts.cluster import HostRequest, HostRun, host_out_dir, validate_argv
from probatorium.hosts.inventory import Inventory, read_inventory
from probatorium.hosts.netns import hosts_manifest
from probatorium.hosts.wheelhouse import build_wheelhouse, competitor_engines, plan_wheels, wheelhouse_size
from probatorium.results.schema import normalize_arch
from probatorium.services.manifest import Manifest, now_iso, state_dir
from probatorium.targets.refapps import refapps_root

DEPLOY_TIMEOUT_S = 900.0
#: validate flags that name a file on the controller: the run on the client host could not read it.
CONTROLLER_FILE_FLAGS = ("--baseline", "--junit", "--sarif", "--spec", "--markov", "--app-dir")
COMPETITORS_ENV = "DEPLOY_COMPETITORS"


@dataclass
class Deployment:
    """One deployed run: where its files are, its agents, what each host is."""

    run_id: str
    inventory: Inventory
    workdir: Path
    entry_id: str
    agents: dict[str, dict] = field(default_factory=dict)  # server → {address, port, token}
    probes: dict[str, dict] = field(default_factory=dict)  # host → {machine, python}
    wheels: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    packages: int = 0

    @property
    def host_dir(self) -> str:
        return pb.run_folder_on_host(self.run_id)

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "inventory": str(self.inventory.path), "workdir": str(self.workdir),
                "hosts": {h.name: {"role": h.role, "address": h.address, **self.probes.get(h.name, {})}
                          for h in self.inventory.hosts},
                "agents": {k: {"address": v["address"], "port": v["port"]} for k, v in self.agents.items()},
                "wheelhouse": {"wheels": self.wheels[0], "bytes": self.wheels[1], "pinned_packages": self.packages},
                "seconds": round(self.seconds, 2)}


def _bundle(workdir: Path, wheelhouse: Path, refapps: tuple[str, ...]) -> Path:
    """One tar of the wheelhouse, the asked refapps and their shared helpers (one copy per host)."""
    path = workdir / "bundle.tar"
    root = refapps_root()
    skip = lambda info: None if "__pycache__" in info.name else info  # noqa: E731
    with tarfile.open(path, "w") as tar:
        for wheel in sorted(wheelhouse.glob("*.whl")):
            tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
        for slug in dict.fromkeys([*refapps, "refapp_common"]):
            if (root / slug).is_dir():
                tar.add(root / slug, arcname=f"refapps/{slug}", filter=skip)
    return path


def _deploy_plays(dep: Deployment, names: list[str], servers: list[str]) -> list[dict]:
    d = dep.host_dir
    local = str(dep.workdir / "hosts")
    fetch = lambda name: {"ansible.builtin.fetch": {  # noqa: E731
        "src": f"{d}/{name}", "dest": f"{local}/{{{{ inventory_hostname }}}}/{name}", "flat": True}}
    install = (f"set -e; cd {d}; mkdir -p cache state tmp home results; tar -xf bundle.tar; rm -f bundle.tar; "
               f"{pb.HOST_PYTHON} -m venv venv; "
               "venv/bin/python -m pip install --quiet --no-index --no-cache-dir --no-deps wheelhouse/*.whl; "
               "venv/bin/python -c 'import json, platform; print(json.dumps({\"machine\": platform.machine(), "
               "\"python\": platform.python_version()}))' > probe.json")
    agent = (f"cd {d} && setsid -f venv/bin/python -m probatorium.hosts.agent "
             f"--address {{{{ pb_addr[inventory_hostname] }}}} --run-dir {d} --token-file {d}/agent.token "
             f"> {d}/agent.log 2>&1 < /dev/null")
    return [
        {"name": f"probatorium deploy {dep.run_id}", "hosts": ",".join(names), "gather_facts": False, "tasks": [
            {"name": "run folder", "ansible.builtin.file": {"path": d, "state": "directory", "mode": "0700"}},
            {"name": "host manifest", "ansible.builtin.copy": {"dest": f"{d}/manifest.json",
                                                               "content": "{{ pb_manifest | to_json }}"}},
            {"name": "wheelhouse and refapps", "ansible.builtin.copy": {"src": "{{ pb_bundle }}",
                                                                        "dest": f"{d}/bundle.tar"}},
            {"name": "venv from the wheelhouse (no index)", "ansible.builtin.shell": install,
             "environment": "{{ pb_env }}"},
            {"name": "what this host is", **fetch("probe.json")}]},
        {"name": f"probatorium agents {dep.run_id}", "hosts": ",".join(servers), "gather_facts": False, "tasks": [
            {"name": "agent token", "ansible.builtin.copy": {
                "dest": f"{d}/agent.token", "content": "{{ pb_tokens[inventory_hostname] }}", "mode": "0600"}},
            {"name": "host agent", "ansible.builtin.shell": agent, "environment": "{{ pb_env }}"},
            {"name": "agent up", "ansible.builtin.wait_for": {"path": f"{d}/agent.json", "timeout": 60}},
            {"name": "agent address", **fetch("agent.json")}]}]


def _record(dep: Deployment, manifest: Manifest) -> None:
    owner = os.getpid()
    manifest.add({"id": dep.entry_id, "kind": "ansible", "run_id": dep.run_id, "state": "running",
                  "inventory": str(dep.inventory.path), "hosts": [h.name for h in dep.inventory.hosts],
                  "host_folder": dep.host_dir, "workdir": str(dep.workdir), "started_at": now_iso(),
                  "owner_pid": owner, "owner_start_ticks": procs.procfs.start_ticks(owner)})


def deploy(inventory: Inventory, refapps: tuple[str, ...], engines: tuple[str, ...],
           manifest: Manifest | None = None, say=print, distributions: tuple[str, ...] = ()) -> Deployment:
    """Build, record, then deploy a fresh run to every inventory host; InfraError (one line) on failure.
    `distributions`: more pinned packages to ship (the bench's Python competitors' frameworks)."""
    started = time.monotonic()
    manifest = manifest or hosts_manifest()
    plan = plan_wheels(tuple(dict.fromkeys([*engines, *competitor_engines(os.environ.get(COMPETITORS_ENV))])),
                       refapps, distributions=distributions)
    wheelhouse = build_wheelhouse(plan, state_dir() / "wheelhouse")
    run_id = secrets.token_hex(4)
    dep = Deployment(run_id, inventory, state_dir() / "ansible" / run_id, f"ansible-{run_id}",
                     wheels=wheelhouse_size(wheelhouse), packages=len(plan.pins))
    dep.workdir.mkdir(parents=True, exist_ok=True)
    _record(dep, manifest)  # before any host is touched: cleanup finds a run killed at any instant
    say(f"deploy {run_id}: wheelhouse {dep.wheels[0]} wheels, {dep.wheels[1] / 1e6:.1f} MB "
        f"({', '.join(plan.engines)}; {', '.join(refapps) or 'no refapps'}) to "
        + ", ".join(f"{h.name} ({h.role})" for h in inventory.hosts))
    servers = [h.name for h in inventory.servers]
    dep.agents = {s: {"token": secrets.token_urlsafe(24)} for s in servers}
    variables = {"pb_bundle": str(_bundle(dep.workdir, wheelhouse, refapps)),
                 "pb_env": pb.host_env(run_id), "pb_addr": {h.name: h.address for h in inventory.hosts},
                 "pb_tokens": {s: a["token"] for s, a in dep.agents.items()},
                 "pb_manifest": {"run": run_id, "entries": [{"kind": "folder", "path": dep.host_dir}]}}
    try:
        result = pb.run_playbook(dep.workdir, "deploy", _deploy_plays(dep, [h.name for h in inventory.hosts],
                                                                      servers),
                                 inventory.path, variables, f"{dep.host_dir}/.ansible", DEPLOY_TIMEOUT_S)
        if result.code != 0 or result.failures:
            raise InfraError(f"deploy {run_id} failed on {result.first_failure()} (log: {dep.workdir / 'deploy.log'})")
        _read_back(dep)
    except BaseException:
        _undo_failed(dep, manifest)  # a half-made deploy is removed at once, not left for a later cleanup
        raise
    finally:
        (dep.workdir / "bundle.tar").unlink(missing_ok=True)  # the hosts have it; the wheelhouse cache keeps the wheels
    dep.seconds = time.monotonic() - started
    return dep


def _undo_failed(dep: Deployment, manifest: Manifest) -> None:
    try:
        result = cleanup_run(dep, [dep.run_id], workdir=dep.workdir / "cleanup")
    except Exception:  # noqa: BLE001 - the deploy's own error is the one to report
        result = None
    if result is not None and not result.failures:
        manifest.mark(dep.entry_id, state="stopped", stopped_at=now_iso())
    else:
        print(f"probatorium: warning: the failed deploy {dep.run_id} is still on some hosts: "
              f"probatorium cleanup --inventory {dep.inventory.path}", file=sys.stderr, flush=True)


def _read_back(dep: Deployment) -> None:
    """The probes and agent addresses the deploy fetched into the controller's run folder."""
    for host in dep.inventory.hosts:
        try:
            dep.probes[host.name] = json.loads((dep.workdir / "hosts" / host.name / "probe.json").read_text())
            if host.role == "server":
                info = json.loads((dep.workdir / "hosts" / host.name / "agent.json").read_text())
                dep.agents[host.name].update(address=info["address"], port=int(info["port"]))
        except (OSError, ValueError, KeyError) as exc:
            raise InfraError(f"deploy {dep.run_id}: {host.name} sent back no usable probe/agent file ({exc})") from None


def cleanup_run(dep_or_inventory: Deployment | Inventory, only: list[str] | None, skip: list[str] | None = None,
                hosts: list[str] | None = None, workdir: Path | None = None,
                known: list[str] | None = None) -> pb.PlaybookResult:
    """The cleanup playbook on `hosts` (default all): the runs `only` names, or every run but `skip`
    (and, given `known`, but the live runs this controller does not know)."""
    inventory = dep_or_inventory.inventory if isinstance(dep_or_inventory, Deployment) else dep_or_inventory
    names = hosts or [h.name for h in inventory.hosts]
    token = secrets.token_hex(4)
    workdir = workdir or state_dir() / "ansible" / f"cleanup-{token}"
    return pb.run_playbook(workdir, "cleanup", pb.cleanup_play(names, skip or [], only, known), inventory.path, {},
                           f"/tmp/.probatorium-ansible-{token}", 300.0)


def _run_on_client(dep: Deployment, request: HostRequest, run: HostRun, budget_s: float) -> HostRun:
    """One server host's validate, run on the client host, its folder fetched into run.out_dir (bounded by
    twice the run's budget plus ten minutes of start-up and judging)."""
    venv = f"{dep.host_dir}/venv/bin/python"
    out = client_out(dep, run.host)
    return run_on_client(dep, run, "validate", validate_argv(request.forwarded, Path(out), request.json_out,
                                                             python=venv),
                         request.env, budget_s * 2 + 600.0)


def client_out(dep: Deployment, server: str) -> str:
    """The folder on the client host where the run for `server` writes (packed and fetched when it ends)."""
    return f"{dep.host_dir}/results/{server}"


def agent_env(dep: Deployment, server: str) -> dict[str, str]:
    """What a run on the client host needs to have `server`'s agent start its targets, named after it."""
    agent = dep.agents[server]
    return {AGENT_ENV: f"http://{agent['address']}:{agent['port']}", TOKEN_ENV: agent["token"],
            HOST_NAME_ENV: server, "PROBATORIUM_VALIDATE_DRIVER": "local",
            "PROBATORIUM_HOST_ARCH": dep.probes.get(server, {}).get("machine", "")}


def run_on_client(dep: Deployment, run: HostRun, what: str, argv: list[str], env: dict[str, str],
                  timeout: float) -> HostRun:
    """`argv` (a probatorium command writing into client_out) on the client host for server run.host,
    recorded in its host manifest, with that server's agent env; its folder fetched into run.out_dir."""
    d, server = dep.host_dir, run.host
    out = client_out(dep, server)
    argv = [f"{d}/venv/bin/python", "-m", "probatorium.hosts.hostside", "run", f"{d}/manifest.json",
            f"{out}/.host-run", "--", *argv]
    env = {**pb.host_env(dep.run_id), **env, **agent_env(dep, server)}
    local = dep.workdir / "hosts" / server
    plays = [{"name": f"{what} {server} from {dep.inventory.client.name}", "hosts": dep.inventory.client.name,
              "gather_facts": False, "tasks": [
                  {"name": what, "ansible.builtin.command": {"argv": argv}, "environment": "{{ pb_env }}",
                   "failed_when": False},
                  {"name": "pack results", "ansible.builtin.shell": f"tar -C {out} -czf {d}/results-{server}.tgz ."},
                  {"name": "fetch results", "ansible.builtin.fetch": {
                      "src": f"{d}/results-{server}.tgz", "dest": f"{local}/results.tgz", "flat": True}},
                  {"name": "drop the pack", "ansible.builtin.file": {"path": f"{d}/results-{server}.tgz",
                                                                     "state": "absent"}}]}]
    result = pb.run_playbook(local, "run", plays, dep.inventory.path, {"pb_env": env}, f"{d}/.ansible", timeout)
    if result.failures:
        run.error = f"the run on {dep.inventory.client.name} failed: {result.first_failure()}"
        return run
    _unpack(local / "results.tgz", run)
    return run


def _unpack(pack: Path, run: HostRun) -> None:
    """Extract a fetched result folder into run.out_dir; exit code and output from its .host-run/."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(pack) as tar:
        tar.extractall(run.out_dir, filter="data")
    pack.unlink()
    meta = run.out_dir / ".host-run"
    try:
        run.exit_code = int(json.loads((meta / "exit.json").read_text())["exit_code"])
    except (OSError, ValueError, KeyError):
        run.error = "the client host recorded no exit status"
    for line in (meta / "stderr.txt").read_text(errors="replace").splitlines()[-15:] if meta.is_dir() else []:
        print(f"[{run.host}] {line}", file=sys.stderr, flush=True)
    stdout = (meta / "stdout.txt").read_text(errors="replace").strip() if (meta / "stdout.txt").is_file() else ""
    if stdout:
        try:
            run.summary = json.loads(stdout)
        except ValueError:
            run.summary = None


def finish(dep: Deployment, manifest: Manifest) -> None:
    result = cleanup_run(dep, [dep.run_id], workdir=dep.workdir / "cleanup")
    if result.failures:
        print(f"probatorium: warning: cleanup of {dep.run_id} failed on {result.first_failure()}; "
              f"run: probatorium cleanup --inventory {dep.inventory.path}", file=sys.stderr, flush=True)
        return
    manifest.mark(dep.entry_id, state="stopped", stopped_at=now_iso())
    print(f"ansible run {dep.run_id}: hosts cleaned ({', '.join(h.name for h in dep.inventory.hosts)})",
          file=sys.stderr, flush=True)


def run_ansible(request: HostRequest, inventory_path: Path | None,
                cells: list[tuple[str, str]] | None = None, budget_s: float = 60.0) -> list[HostRun]:
    """Deploy fresh, validate each chosen server host from the client host, fetch, clean up."""
    shipped_not = [f for f in CONTROLLER_FILE_FLAGS if f in request.forwarded]
    if shipped_not:
        raise UsageError(f"--driver ansible does not ship controller files to the client host: drop "
                         f"{', '.join(shipped_not)} (or use --driver local / netns)")
    inventory = read_inventory(inventory_path)
    servers = [inventory.server(h).name for h in request.hosts] if request.hosts else \
        [h.name for h in inventory.servers]
    refapps = tuple(dict.fromkeys(r for r, _ in cells or []))
    engines = tuple(dict.fromkeys(e for _, e in cells or []))
    if not refapps:
        raise UsageError("--driver ansible deploys refapps: give --refapp, --matrix or --cells")
    manifest = hosts_manifest()
    inventory = dataclasses.replace(inventory, servers=tuple(inventory.server(s) for s in servers))  # only those asked
    dep = deploy(inventory, refapps, engines, manifest, say=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"deployed {dep.run_id} in {dep.seconds:.1f} s", file=sys.stderr, flush=True)
    runs: list[HostRun] = []
    try:
        for server in servers:
            arch = dep.probes.get(server, {}).get("machine")
            runs.append(HostRun(server, host_out_dir(request, server, normalize_arch(arch) if arch else None)))

        def start(run: HostRun) -> HostRun:
            return _run_on_client(dep, request, run, budget_s)

        if request.parallel and len(runs) > 1:
            with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="host") as pool:
                return list(pool.map(start, runs))
        return [start(run) for run in runs]
    except KeyboardInterrupt:  # ^C: the hosts are still cleaned (finally), each run says it was cut short
        for run in runs:
            run.error = run.error or "interrupted"
        return runs
    finally:
        finish(dep, manifest)
