"""``bench --driver ansible``: the bench on the inventory's hosts, one server host at a time.

The controller (this process) deploys a fresh run (:func:`.ansible_driver.deploy`:
the wheelhouse with the asked competitors' engines and frameworks, the
``bench_app`` refapp with the competitors' app files, a host agent per server
host), then for each chosen server host in turn, never at once (a bench
measures), a playbook runs ``probatorium bench`` on the client host with that
server's agent in its environment: the launcher asks the agent to start each
competitor, bound to the server's traffic address and pinned to those of the
bench's server CPUs the server has. The client host's run folder is fetched
into the same roll-up layout as ``--driver netns`` (:mod:`.bench_hosts`).
Cleanup runs however the run ends.

The server's process is on another machine: its CPU, RSS and threads cannot be
sampled from the client host, so each cell's ``observer`` says
``not_measured`` with the reason, and the table shows no server CPU%.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from probatorium.bench import competitors as reg
from probatorium.bench.cells import Cell
from probatorium.bench.runner import BenchOptions, planned_seconds
from probatorium.errors import InfraError, UsageError
from probatorium.hosts.ansible_driver import client_out, deploy, finish, run_on_client
from probatorium.hosts.bench_hosts import HostBench, check_placeable, rollup_folder
from probatorium.hosts.inventory import read_inventory
from probatorium.hosts.netns import hosts_manifest
from probatorium.results.store import run_folder

#: The refapp whose folder holds every Python competitor's app file (refapps/bench_app/competitors).
BENCH_REFAPP = "bench_app"
#: Start-up, verification and shutdown a competitor x cell may take beyond its planned load.
CELL_OVERHEAD_S = 60.0


def check_deployable(comps: list[reg.Competitor], cells: list[Cell]) -> None:
    """UsageError (one line) naming the competitors this driver does not deploy: it ships Python only."""
    foreign = [c.name for c in comps if c.group not in ("ours", "python")]
    if foreign:
        raise UsageError(f"--driver ansible deploys Python competitors only, not {', '.join(foreign)} "
                         "(leave them out, e.g. --competitors python-only, or use --driver netns / local)")
    check_placeable(comps, cells, "ansible")


def what_to_ship(comps: list[reg.Competitor]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(engines, distributions) the hosts need to run `comps`."""
    engines = tuple(dict.fromkeys(c.engine for c in comps if c.kind in ("refapp", "app") and c.engine))
    dists = tuple(dict.fromkeys(d for c in comps for d in c.distributions))
    return engines or ("uvicorn",), dists


def run_timeout(comps: list[reg.Competitor], cells: list[Cell], opts: BenchOptions) -> float:
    """How long one host's bench may take on the client host before it is given up."""
    per_cell = sum(planned_seconds(cell, opts) + CELL_OVERHEAD_S for cell in cells)
    return 2 * per_cell * len(comps) + 300.0


def bench_ansible(inventory_path: Path | None, target_host: str | None, comps: list[reg.Competitor],
                  cells: list[Cell], opts: BenchOptions, flags: list[str]) -> tuple[Path, list[HostBench]]:
    """Deploy fresh, bench each chosen server host in turn from the client host, fetch, clean up.

    The roll-up folder (made once the inventory is read) and one HostBench per chosen server
    host, in order; one not reached (^C) says so in its error."""
    inventory = read_inventory(inventory_path)
    wanted = [h.strip() for h in (target_host or "").split(",") if h.strip() not in ("", "all")]
    servers = [inventory.server(h).name for h in dict.fromkeys(wanted)] or [h.name for h in inventory.servers]
    inventory = dataclasses.replace(inventory, servers=tuple(inventory.server(s) for s in servers))
    engines, dists = what_to_ship(comps)
    out = rollup_folder(opts)
    manifest = hosts_manifest()
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    dep = deploy(inventory, (BENCH_REFAPP,), engines, manifest, say=say, distributions=dists)
    say(f"deployed {dep.run_id} in {dep.seconds:.1f} s")
    runs = [HostBench(s, run_folder(out, "bench", s), address=dep.agents[s]["address"],
                      machine=dep.probes.get(s, {}).get("machine", "")) for s in servers]
    venv = f"{dep.host_dir}/venv/bin/python"
    try:
        for run in runs:
            say(f"bench {run.host} ({run.address}) from {inventory.client.name}")
            argv = [venv, "-m", "probatorium.cli", "bench", *flags, "--out", client_out(dep, run.host), "--json"]
            try:
                run_on_client(dep, run, "bench", argv, {"PROBATORIUM_TARGET_VERSION": opts.version},
                              run_timeout(comps, cells, opts))
            except InfraError as exc:  # this host's run timed out or could not be fetched: the next one still runs
                run.error = str(exc)
    except KeyboardInterrupt:  # ^C: the hosts are still cleaned (finally); the hosts not done say so
        for run in runs:
            if run.exit_code is None:
                run.error = run.error or "interrupted"
    finally:
        finish(dep, manifest)
    return out, runs
