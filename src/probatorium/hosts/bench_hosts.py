"""``bench --driver netns``: the bench once per server host, in turn, and the cross-host roll-up.

For every server host the controller (this process) starts ``probatorium
bench`` inside the client namespace, with the competitors placed in that
host's namespace (PROBATORIUM_TARGET_NETNS / _ADDR, read by the launcher: the
server binds the host's address, pinned to the bench's server CPUs, and the
load generator runs in the client namespace on the client CPUs). Hosts run
one after another, never at once: they share this machine's cores, and a
bench measures. Layout (the seed README's "Result layout")::

    results/<ts>-bench-<version>/
      results.json              the cross-host roll-up: every host's cells (``host`` set), ``hosts``
      raw/<host>.json           each host's own bench document, as it wrote it
      <TS>-bench-<host>/        that host's run folder: what a local bench writes
        results.json, raw/..., <NN>-<competitor>-<cell>/loadgen.json, observer.sqlite, server.log
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from probatorium.bench import competitors as reg
from probatorium.bench.cells import Cell
from probatorium.bench.cli import bench_json
from probatorium.bench.runner import DOCUMENT_NAME, BenchOptions, format_table, host_info
from probatorium.bench.since import load_bench_document
from probatorium.errors import UsageError
from probatorium.hosts.cluster import HostRun, Interrupt, exit_code, host_env, netns_cluster, pick_hosts, run_child
from probatorium.hosts.netns import check_can_create
from probatorium.jsonsummary import print_json
from probatorium.results.schema import BenchDocument, BenchHostRun, utc_now_iso
from probatorium.results.store import run_folder, write_json_atomic
from probatorium.targets.launcher import TargetSpec, placeable

#: The bench knobs a host's run gets as flags (resolved by the controller), so none is read twice.
BENCH_ENV = ("BENCH_TARGET", "BENCH_COMPETITORS", "BENCH_CELLS", "BENCH_RUNS", "BENCH_DURATION", "BENCH_WARMUP",
             "PROBATORIUM_VALIDATE_DRIVER")


@dataclass
class HostBench(HostRun):
    """One server host's bench: its run folder (``<TS>-bench-<host>``) and what it wrote there."""

    address: str = ""
    machine: str = ""  # --driver ansible: the server host's own platform.machine() (netns: the document's)

    @property
    def document(self) -> Path:
        return self.out_dir / DOCUMENT_NAME


def unplaceable_reason(comp: reg.Competitor, cells: list[Cell], driver: str = "netns") -> str | None:
    """Why `comp` cannot be started on a server host of `driver` for these cells, or None when it can."""
    services = sorted({s for cell in cells if reg.serves(comp, cell) is None for s in cell.services})
    if services:
        return f"its cells need backing services ({', '.join(services)}) the {driver} hosts do not have yet"
    if comp.kind == "cmd" and not placeable(TargetSpec(kind="cmd", cmd=comp.cmd)):
        return "its command line has no {host} (it would bind loopback on the client host)"
    return None


def check_placeable(comps: list[reg.Competitor], cells: list[Cell], driver: str = "netns") -> None:
    """UsageError naming every competitor the driver cannot place, and why (one line)."""
    bad = [(c.name, why) for c in comps if (why := unplaceable_reason(c, cells, driver)) is not None]
    if bad:
        raise UsageError(f"--driver {driver} cannot place " + "; ".join(f"competitor {n}: {why}" for n, why in bad)
                         + " (leave it out, or use --driver local)")


def host_flags(comps: list[reg.Competitor], cells: list[Cell], opts: BenchOptions) -> list[str]:
    """The bench flags of one host's run: everything already resolved, nothing left to the environment."""
    flags = ["--competitors", ",".join(c.name for c in comps), "--cells", ",".join(c.name for c in cells),
             "--runs", str(opts.runs), "--duration", f"{opts.duration:g}", "--warmup", f"{opts.warmup:g}",
             "--max-probes", str(opts.max_probes)]
    for name, cpus in (("--server-cpus", opts.server_cpus), ("--client-cpus", opts.client_cpus)):
        if cpus:
            flags += [name, ",".join(str(c) for c in cpus)]
    for threshold in opts.thresholds:
        flags += ["--threshold", threshold.expr]
    return flags


def run_on_hosts(hosts: tuple[str, ...], flags: list[str], out: Path, version: str,
                 python: str = sys.executable) -> list[HostBench]:
    """Cluster up; each host's bench in turn from the client namespace; cluster down. ^C stops after a host."""
    interrupt = Interrupt()
    runs: list[HostBench] = []
    with netns_cluster(interrupt) as cluster:
        for host in hosts:
            if interrupt.count:
                break
            run = HostBench(host, run_folder(out, "bench", host), address=cluster.addresses[host])
            env = host_env(cluster, host, {"PROBATORIUM_TARGET_VERSION": version})
            for name in BENCH_ENV:
                env.pop(name, None)
            argv = cluster.exec_argv("client") + [python, "-m", "probatorium.cli", "bench", *flags,
                                                  "--out", str(run.out_dir), "--json"]
            runs.append(run_child(run, argv, env, True, interrupt))
    return runs


def roll_up(out: Path, runs: list[HostBench], version: str, started_at: str, planned: int,
            driver: str = "netns") -> BenchDocument:
    """The cross-host ``results.json`` of `out`, each host's own document copied to ``raw/<host>.json``.

    Cells are every host's, in host order, renumbered, each naming its host and
    its folder relative to `out`; partial when a host is missing or partial.
    """
    (out / "raw").mkdir(parents=True, exist_ok=True)
    docs: list[BenchDocument] = []
    doc = BenchDocument(version=version, started_at=started_at, driver=driver, hosts=[])
    for run in runs:
        entry = BenchHostRun(name=run.host, address=run.address, folder=run.out_dir.name,
                             exit_code=run.exit_code, error=run.error or None)
        doc.hosts.append(entry)  # type: ignore[union-attr]
        if not run.document.is_file():
            entry.error = entry.error or "it wrote no bench document"
            continue
        try:
            host_doc = load_bench_document(run.document)
        except (OSError, ValueError) as exc:
            entry.error = f"its bench document is unreadable: {exc}"
            continue
        shutil.copyfile(run.document, out / "raw" / f"{run.host}.json")
        entry.raw, entry.machine = f"raw/{run.host}.json", run.machine or host_doc.host.machine
        docs.append(host_doc)
        for cell in host_doc.cells:
            folder = f"{run.out_dir.name}/{cell.folder}" if cell.folder else None
            doc.cells.append(cell.model_copy(update={"index": len(doc.cells) + 1, "host": run.host,
                                                     "folder": folder}))
        doc.competitors += [c for c in host_doc.competitors if c.name not in {x.name for x in doc.competitors}]
    if docs:
        doc.config = docs[0].config
        doc.host = host_info(docs[0].host.server_cpus, docs[0].host.client_cpus)
    doc.partial = len(docs) < planned or any(d.partial for d in docs) or any(e.error for e in doc.hosts or [])
    doc.finished_at = utc_now_iso()
    doc.path = str(out / DOCUMENT_NAME)
    write_json_atomic(doc.path, doc)
    return doc


def rollup_folder(opts: BenchOptions) -> Path:
    """The roll-up's folder (``--out``, else a new ``results/<ts>-bench-<version>``), created."""
    out = Path(opts.out_dir) if opts.out_dir is not None else run_folder(opts.results_root, "bench", opts.version)
    out.mkdir(parents=True, exist_ok=True)
    return out


def bench_on_hosts(driver: str, target_host: str | None, comps: list[reg.Competitor], cells: list[Cell],
                   opts: BenchOptions, json_out: bool = False, quiet: bool = False,
                   inventory: Path | None = None) -> int:
    """`probatorium bench --driver netns|ansible`: exit like a local bench (0/1), 2 when a host could not run.

    Bad input (an unknown host, a competitor that cannot be placed or deployed,
    not root, a bad inventory) is a UsageError/NetnsError before anything is created.
    """
    flags = host_flags(comps, cells, opts) + (["--quiet"] if quiet else [])
    started = utc_now_iso()
    if driver == "ansible":
        from probatorium.hosts.bench_ansible import bench_ansible, check_deployable

        check_deployable(comps, cells)
        out, runs = bench_ansible(inventory, target_host, comps, cells, opts, flags)
        planned = len(runs)
    else:
        hosts = pick_hosts(target_host)
        check_placeable(comps, cells)
        check_can_create()
        out = rollup_folder(opts)
        runs = run_on_hosts(hosts, flags, out, opts.version)
        planned = len(hosts)
    doc = roll_up(out, runs, opts.version, started, planned, driver)
    code = exit_code(runs)
    if json_out:
        return print_json("bench", code, {**bench_json(doc), "driver": driver, "hosts": {
            r.host: {"exit_code": r.exit_code, "address": r.address, "document": str(r.document),
                     "error": r.error or None} for r in runs}})
    print(format_table(doc))
    for r in runs:
        print(f"{r.host} ({r.address}): exit {r.exit_code} — "
              + (str(r.document) if r.document.is_file() else "no document") + (f" ({r.error})" if r.error else ""))
    print(f"\nresults: {doc.path}")
    return code
