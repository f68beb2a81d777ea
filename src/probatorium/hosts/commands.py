"""``probatorium deploy``, ``status`` and the ansible part of ``cleanup`` (the CLI wiring calls these).

Each returns the exit status and prints either lines for a person or one
``--json`` envelope (docs/json.md). Errors are one line on stderr, exit 2.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from probatorium.errors import ProbatoriumError, error_line
from probatorium.hosts import playbooks as pb
from probatorium.hosts.ansible_driver import cleanup_run, deploy
from probatorium.hosts.inventory import read_inventory
from probatorium.hosts.netns import hosts_manifest, owner_alive, recorded_clusters
from probatorium.jsonsummary import print_json
from probatorium.services.manifest import now_iso, state_dir


def _err(message: object) -> None:
    print(error_line(message), file=sys.stderr, flush=True)


def deploy_command(inventory: Path | None, refapps: list[str], engines: list[str], as_json: bool) -> int:
    """Deploy a run to the inventory's hosts and leave it there (``cleanup --inventory`` removes it)."""
    try:
        inv = read_inventory(inventory)
        dep = deploy(inv, tuple(refapps), tuple(engines or ["uvicorn"]),
                     say=lambda m: print(m, file=sys.stderr, flush=True))
    except ProbatoriumError as e:
        _err(e)
        return 2
    if as_json:
        return print_json("deploy", 0, dep.as_dict())
    print(f"deployed run {dep.run_id} in {dep.seconds:.1f} s to {', '.join(h.name for h in inv.hosts)}")
    for name, agent in dep.agents.items():
        print(f"  {name}: agent on {agent['address']}:{agent['port']} ({dep.probes[name].get('machine')})")
    print(f"  host folder {dep.host_dir}; undo: probatorium cleanup --inventory {inv.path}")
    return 0


def cleanup_inventory(inventory: Path, hosts: str | None, include_live: bool = False) -> tuple[list[str], int]:
    """The cleanup playbook on the inventory's (chosen) hosts; lines and exit status."""
    inv = read_inventory(inventory)
    chosen = [h.name for h in inv.pick(hosts)]
    manifest = hosts_manifest()
    entries = [e for e in manifest.running() if e.get("kind") == "ansible"]
    live = [e["run_id"] for e in entries if owner_alive(e) and not include_live]
    known = None if include_live else [e["run_id"] for e in manifest.read() if e.get("kind") == "ansible"]
    result = cleanup_run(inv, None, skip=live, hosts=chosen, known=known)
    lines = [f"{host}: run {c['run']}: " + (f"kept ({c['kept']}; --include-live removes it)" if c.get("kept") else
                                            f"stopped {c['stopped']} process(es), removed {c['folder']}")
             for host, results in sorted(result.results.items()) for r in results for c in r.get("cleaned", [])]
    lines += [f"{run}: run still alive on the controller: kept" for run in live]
    for host, why in result.failures.items():
        lines.append(f"{host}: cleanup failed: {why}")
    if not result.failures:
        for e in entries:
            if e["run_id"] not in live and set(e.get("hosts", [])) <= set(chosen):
                manifest.mark(e["id"], state="stopped", stopped_at=now_iso())
    return lines, 2 if result.failures else 0


def status_inventory(inventory: Path) -> dict:
    """Per host: reachable, its run folders with their recorded processes, processes carrying a run marker."""
    inv = read_inventory(inventory)
    token = secrets.token_hex(4)
    result = pb.run_playbook(state_dir() / "ansible" / f"status-{token}", "status",
                             pb.status_play([h.name for h in inv.hosts]), inv.path, {},
                             f"/tmp/.probatorium-ansible-{token}", 120.0)
    hosts = {}
    for h in inv.hosts:
        found = (result.results.get(h.name) or [{}])[-1]
        hosts[h.name] = {"role": h.role, "address": h.address, "reachable": h.name not in result.failures,
                         "error": result.failures.get(h.name), "runs": found.get("runs", []),
                         "marked_processes": found.get("marked_processes", [])}
    return {"inventory": str(inv.path), "hosts": hosts}


def status_local() -> dict:
    """The controller's hosts manifest: netns clusters and ansible runs still recorded as running."""
    clusters = [{"run_id": c.run_id, "subnet": c.subnet, "namespaces": c.namespaces,
                 "present": [h for h, ns in c.namespaces.items() if Path("/run/netns", ns).exists()],
                 "owner_alive": owner_alive(e)} for c, e in recorded_clusters()]
    runs = [{"run_id": e["run_id"], "inventory": e.get("inventory"), "hosts": e.get("hosts"),
             "owner_alive": owner_alive(e), "started_at": e.get("started_at")}
            for e in hosts_manifest().running() if e.get("kind") == "ansible"]
    return {"netns_clusters": clusters, "ansible_runs": runs}


def status_command(inventory: Path | None, as_json: bool) -> int:
    try:
        doc = status_local()
        if inventory is not None:
            doc.update(status_inventory(inventory))
    except ProbatoriumError as e:
        _err(e)
        return 2
    if as_json:
        return print_json("status", 0, doc)
    for c in doc["netns_clusters"]:
        print(f"netns cluster {c['run_id']} {c['subnet']}: namespaces {', '.join(c['present']) or 'gone'}"
              + ("" if c["owner_alive"] else " (its run is gone: probatorium cleanup)"))
    for r in doc["ansible_runs"]:
        print(f"ansible run {r['run_id']} on {', '.join(r['hosts'] or [])}: "
              + ("running" if r["owner_alive"] else "deployed, its controller is gone (probatorium cleanup --inventory)"))
    for name, h in doc.get("hosts", {}).items():
        state = "reachable" if h["reachable"] else f"UNREACHABLE ({h['error']})"
        runs = ", ".join(f"{r['run']} ({r['state']}, {sum(p['alive'] for p in r['processes'])} live)" for r in h["runs"])
        print(f"{name} ({h['role']}, {h['address']}): {state}; runs: {runs or 'none'}; "
              f"marked processes: {len(h['marked_processes'])}")
    if not doc["netns_clusters"] and not doc["ansible_runs"] and not doc.get("hosts"):
        print("nothing recorded: no netns cluster, no ansible run")
    return 0
