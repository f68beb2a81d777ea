"""Run the bench: every selected competitor x cell, measured and written to disk.

Per cell: start the competitor with the one launcher (its process tree pinned
to the server CPUs), verify its answers, then ``runs`` closed-loop runs of
``duration`` after ``warmup`` (saturation, histograms merged across runs),
then ``latency_at_slo`` by open-loop probes; the observer samples the server
tree at 1 Hz throughout. A server another host's agent runs (``--driver
ansible``) has no process here: it is neither sampled nor pinned from here
(its ``observer`` says ``not_measured`` and why; the agent starts it pinned).
Layout (seed README)::

    results/<ts>-bench-<version>/
      results.json                       the document (checkpointed, partial until done)
      raw/<NN>-<competitor>-<cell>-{sat-<k>,probe-<i>}.json   every loadgen result
      <NN>-<competitor>-<cell>/loadgen.json, observer.sqlite, server.log
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from probatorium.bench import competitors as reg
from probatorium.bench.cells import Cell
from probatorium.bench.observer import Observer, pin_tree
from probatorium.bench.ratesearch import DEFAULT_ERROR_BUDGET, DEFAULT_SLOS_MS, Probe, latency_at_slo
from probatorium.bench.verify import verify_cell
from probatorium.errors import ProbatoriumError
from probatorium.hosts.agent_client import AGENT_ENV
from probatorium.hosts.netns import placement_from_env
from probatorium.progress import NullProgress, Progress, reporter_of
from probatorium.loadgen import LoadConfig, run_load
from probatorium.loadgen import hist
from probatorium.loadgen.thresholds import Measured, Threshold, evaluate
from probatorium.results.schema import (BenchCell, BenchCompetitor, BenchConfig, BenchDocument, BenchHost,
                                        BenchVerify, Saturation)
from probatorium.results.store import run_folder, sanitize_name, write_json_atomic
from probatorium.targets.launcher import start_target

if TYPE_CHECKING:
    from probatorium.services import ServiceManager

DOCUMENT_NAME = "results.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def default_cpus() -> tuple[list[int] | None, list[int] | None]:
    """Server on the first CPU of our affinity, the load generator on the rest (None on one CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[:1], cpus[1:]


def parse_cpus(text: str | None) -> list[int] | None:
    """``"0"``, ``"1,2"`` or ``"2-3"`` -> list of CPU numbers (None/empty -> None)."""
    if not text:
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out or None


@dataclass(frozen=True)
class BenchOptions:
    """How a bench run measures and where it writes (the command's options, typed)."""

    runs: int = 1  # closed-loop saturation runs per cell, histograms merged
    duration: float = 5.0  # seconds per run and per probe
    warmup: float = 1.0
    out_dir: Path | None = None  # default: a new results/<ts>-bench-<version>
    server_cpus: list[int] | None = None  # both None: default_cpus()
    client_cpus: list[int] | None = None
    slos: Sequence[float] = DEFAULT_SLOS_MS
    results_root: Path = Path("results")
    version: str = "dev"
    error_budget: float = DEFAULT_ERROR_BUDGET
    max_probes: int = 8
    thresholds: tuple[Threshold, ...] = ()  # judged on every measured cell's saturation result

    def with_default_cpus(self) -> "BenchOptions":
        """These options, with the server and load-generator CPUs chosen when neither was given."""
        if self.server_cpus is not None or self.client_cpus is not None:
            return self
        server, client = default_cpus()
        return dataclasses.replace(self, server_cpus=server, client_cpus=client)


def host_info(server_cpus, client_cpus) -> BenchHost:
    """Kernel, CPU model, CPU counts and the versions that shape the numbers."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for dist in ("probatorium", "uvloop", "hdrhistogram"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    placed = placement_from_env() or _agent_placement()  # --driver netns / ansible: on a server host
    return BenchHost(hostname=platform.node(), kernel=platform.release(), machine=platform.machine(),
                     cpu_model=model, cpus_online=os.cpu_count(), affinity=sorted(os.sched_getaffinity(0)),
                     server_cpus=server_cpus, client_cpus=client_cpus, versions=versions,
                     loadavg=list(os.getloadavg()),
                     server_host=(os.environ.get("PROBATORIUM_HOST_NAME") or None) if placed else None,
                     server_address=placed[1] if placed else None)


def _agent_placement() -> tuple[str, str] | None:
    """--driver ansible: (the server host's agent URL, its address: where the competitors listen), or None."""
    base = os.environ.get(AGENT_ENV, "").strip()
    host = urllib.parse.urlsplit(base).hostname if base else None
    return (base, host) if host else None


def on_other_host(target) -> bool:
    """Whether `target` runs on a server host (netns namespace or ansible agent), not beside the load generator."""
    return getattr(target, "placement", None) is not None or getattr(target, "no_process_reason", None) is not None


def _load_config(target, cell: Cell, *, rate: float | None, opts: BenchOptions) -> LoadConfig:
    client_cpus = opts.client_cpus
    base_url = target.base_url
    return LoadConfig(
        # a target on a server host is at an address of a namespace probatorium made or an inventory host
        allow_remote=on_other_host(target),
        url=base_url + cell.path, kind=cell.kind, connections=cell.connections, rate=rate,
        duration=opts.duration, warmup=opts.warmup, method=cell.method, headers=list(cell.headers), body=cell.body,
        close=cell.close, cpus=client_cpus, workers=len(client_cpus) if client_cpus else None,
        expected_statuses=None if cell.kind != "http" else frozenset({cell.expected_status}),
    )


def _cell_record(index: int, comp, cell: Cell) -> BenchCell:
    return BenchCell(index=index, competitor=comp.name, cell=cell.name, kind=cell.kind,
                     connections=cell.connections, status="not_run")


def merge_runs(runs: list[dict]) -> Saturation:
    """One cell's saturation result over its runs (loadgen result dicts).

    Latency comes from the runs' histograms merged bucket by bucket (exact),
    never from averaging their percentiles; rps = all requests / all seconds.
    """
    merged = hist.merge_encoded(r["histogram"] for r in runs)
    total_req = sum(r["requests"] for r in runs)
    total_s = sum(r["duration_s"] for r in runs)
    errors: dict[str, int] = {}
    for r in runs:
        for key, v in r["errors"].items():
            errors[key] = errors.get(key, 0) + v
    rps = total_req / total_s if total_s else 0.0
    return Saturation(
        runs=len(runs), requests=total_req, duration_s=round(total_s, 3), rps=round(rps, 1),
        errors=errors, latency_us=hist.summary(merged), histogram=hist.encode(merged),
        count=merged.get_total_count(),
        per_run_rps=[round(r["requests_per_sec"], 1) for r in runs],
        client_bound=any(r.get("client_bound") for r in runs),
        client_bound_reason=next((r.get("client_bound_reason") for r in runs if r.get("client_bound")), None),
    )


def judge_thresholds(rec: BenchCell, thresholds: Sequence[Threshold]) -> None:
    """Judge every threshold on the cell's merged saturation result, in place (nothing to judge: no-op)."""
    if thresholds and rec.saturation is not None:
        rec.thresholds = [v.to_dict() for v in evaluate(thresholds, Measured.from_saturation(rec.saturation))]


def broken_thresholds(doc: BenchDocument) -> list[tuple[BenchCell, dict]]:
    """(cell, verdict) for every broken threshold of the run."""
    return [(c, v) for c in doc.cells for v in (c.thresholds or []) if not v["passed"]]


def planned_seconds(cell: Cell, opts: BenchOptions) -> float:
    """What one competitor x cell is planned to take: its saturation runs and, with a rate search,
    at most ``max_probes`` probes, each warmup + duration (start-up and fewer probes: the ETA learns)."""
    loads = opts.runs + (opts.max_probes if cell.rate_search else 0)
    return loads * (opts.warmup + opts.duration)


def _measure_saturation(target, cell: Cell, raw_dir: Path, prefix: str, opts: BenchOptions,
                        progress: Progress | NullProgress = NullProgress()) -> list[dict]:
    """`opts.runs` closed-loop runs, each loadgen result written to raw/ and returned."""
    out = []
    for k in range(opts.runs):
        progress.sub(f"saturation run {k + 1}/{opts.runs}")
        d = run_load(_load_config(target, cell, rate=None, opts=opts)).to_dict()
        write_json_atomic(raw_dir / f"{prefix}-sat-{k + 1}.json", d)
        out.append(d)
    return out


def _search_rate(target, cell: Cell, raw_dir: Path, prefix: str, opts: BenchOptions, saturation_rps: float,
                 echo: Callable[[str], None],
                 progress: Progress | NullProgress = NullProgress()) -> tuple[dict, list[dict]]:
    """latency_at_slo by open-loop probes from the saturation rate: (the search, the probes' loadgen results)."""
    probes_raw: list[dict] = []

    def run_fn(rate: float) -> Probe:
        progress.sub(f"probe {len(probes_raw) + 1}/<={opts.max_probes} at {rate:.0f} rps")
        res = run_load(_load_config(target, cell, rate=rate, opts=opts))
        d = res.to_dict()
        write_json_atomic(raw_dir / f"{prefix}-probe-{len(probes_raw) + 1}.json", d)
        probes_raw.append(d)
        p = Probe(rate=rate, achieved_rps=res.achieved_rps, p99_ms=res.latency_us["p99"] / 1000.0,
                  requests=res.requests, errors=res.errors_total, unsent=res.unsent)
        echo(f"    probe {rate:>10.1f} rps: achieved {p.achieved_rps:.1f}, p99 {p.p99_ms:.2f} ms, "
             f"errors+unsent {p.errors + p.unsent}")
        return p

    search = latency_at_slo(run_fn, saturation_rps, opts.slos, error_budget=opts.error_budget,
                            max_probes=opts.max_probes)
    return search, probes_raw


def _write_server_log(cell_dir: Path) -> None:
    """The target's stdout and stderr in one server.log."""
    with (cell_dir / "server.log").open("wb") as out:
        for name in ("stdout.log", "stderr.log"):
            path = cell_dir / name
            if path.exists():
                out.write(f"===== {name} =====\n".encode())
                out.write(path.read_bytes())


def measure_cell(comp, cell: Cell, cell_dir: Path, raw_dir: Path, rec: BenchCell, opts: BenchOptions, *,
                 extra_env: dict, subs: dict, echo: Callable[[str], None], progress: object = None) -> None:
    """Start, verify, measure one cell; fill `rec` in place (status ok / invalid / failed)."""
    progress = reporter_of(progress)
    prefix = cell_dir.name
    server_cpus = opts.server_cpus
    spec = reg.target_spec(comp, subs, extra_env)
    if server_cpus:  # started pinned: runtimes size their thread pools from the CPUs they see
        spec = dataclasses.replace(spec, cpus=tuple(server_cpus))
    target = start_target(spec, cell_dir)
    observer = None
    # a target another host's agent runs (--driver ansible) has no process here: its /proc cannot
    # be sampled nor its tree pinned from the client host (the agent started it on the CPUs asked)
    remote = getattr(target, "no_process_reason", None)
    try:
        assert target.pid is not None or remote
        if on_other_host(target):
            rec.target = f"{target.host}:{target.port}"
        if server_cpus and target.pid is not None:
            pin_tree(target.pid, server_cpus)
        if target.pid is not None:
            observer = Observer(target.pid, cell_dir / "observer.sqlite").start()
        verdict = verify_cell(cell, target.base_url)
        rec.verify = BenchVerify(**verdict.to_dict())
        if not verdict.ok:
            rec.status, rec.reason = "invalid", f"wrong answer: {verdict.reason}"
            return
        if server_cpus and target.pid is not None:  # workers and threads started while serving the first requests
            pin_tree(target.pid, server_cpus)
        _set_phase(observer, "measure")
        saturation_runs = _measure_saturation(target, cell, raw_dir, prefix, opts, progress)
        rec.saturation = merge_runs(saturation_runs)
        judge_thresholds(rec, opts.thresholds)
        probes_raw: list[dict] = []
        if cell.rate_search and rec.saturation.rps > 0:
            _set_phase(observer, "probe")
            search, probes_raw = _search_rate(target, cell, raw_dir, prefix, opts, rec.saturation.rps, echo,
                                              progress)
            rec.rate_search = search
            rec.latency_at_slo = {slo: v["rps"] for slo, v in search["slos"].items()}
        elif not cell.rate_search:
            rec.rate_search = {"skipped": f"{cell.kind} cell: passive subscribers, no open-loop rate"}
        write_json_atomic(cell_dir / "loadgen.json", {"saturation_runs": saturation_runs, "probes": probes_raw})
        rec.status = "ok"
    finally:
        target.stop()
        if observer is not None:
            rec.observer = observer.stop()
        elif remote:
            rec.observer = not_observed(remote, getattr(target, "cpus", None))
            _keep_remote_stderr(target, cell_dir)
        _write_server_log(cell_dir)


def _set_phase(observer: Observer | None, phase: str) -> None:
    if observer is not None:
        observer.set_phase(phase)


def not_observed(reason: str, pinned: list[int] | None = None) -> dict:
    """The observer summary of a server that could not be sampled: no samples, no CPU%, and why
    (and the CPUs its host's agent started it on, when it pinned it)."""
    return {"samples": 0, "not_measured": f"server CPU, RSS, fds, threads: {reason}",
            **({"server_cpus_pinned_by_agent": list(pinned)} if pinned else {})}


def _keep_remote_stderr(target, cell_dir: Path) -> None:
    """A remote server's stderr, as its agent kept it, into the cell's stderr.log (for server.log)."""
    lines = target.stderr_tail(200)
    if lines:
        (cell_dir / "stderr.log").write_text("\n".join(lines) + "\n", errors="replace")


@dataclass
class _Services:
    """The backing services the driver cells need, started once for the whole run."""

    manager: ServiceManager | None = None  # only when a cell needs a service
    missing: dict[str, str] = field(default_factory=dict)  # service -> why it is not available
    env: dict[str, str] = field(default_factory=dict)  # what the competitors get to reach them

    @classmethod
    def start(cls, competitors: list, cells: list[Cell]) -> "_Services":
        needed = sorted({s for c in cells for s in c.services
                         if any(reg.serves(comp, c) is None for comp in competitors)})
        if not needed:
            return cls()
        from probatorium.services import ServiceManager

        manager = ServiceManager()
        out = cls(manager, manager.unavailable(needed))
        startable = [s for s in needed if s not in out.missing]
        if startable:
            try:
                manager.up(startable)
                out.env = manager.env(startable)
            except (ProbatoriumError, OSError, RuntimeError) as exc:
                out.missing.update({s: f"could not start: {exc}" for s in startable})
        return out

    def why_not(self, cell: Cell) -> str | None:
        """The cell's services that are not available, with why (None when all are)."""
        miss = [f"{s}: {self.missing[s]}" for s in cell.services if s in self.missing]
        return "; ".join(miss) or None

    def stop(self) -> None:
        if self.manager is not None:
            self.manager.down()


class _BenchRun:
    """One bench run in progress: the document, where it goes, and the cell-by-cell loop."""

    def __init__(self, doc: BenchDocument, out: Path, opts: BenchOptions, services: _Services,
                 echo: Callable[[str], None], progress: object = None) -> None:
        self.doc, self.out, self.opts, self.services, self.echo = doc, out, opts, services, echo
        self.progress = reporter_of(progress)
        self.raw_dir = out / "raw"
        self.index = 0

    def checkpoint(self) -> None:
        write_json_atomic(self.doc.path, self.doc)

    def competitor(self, comp, cells: list[Cell]) -> None:
        """Prepare one competitor (a failed build is recorded, the run goes on), then run its cells."""
        reason = reg.not_applicable_reason(comp)
        entry = BenchCompetitor(name=comp.name, group=comp.group, description=comp.description,
                                install=comp.install, status="not_applicable" if reason else "ok",
                                reason=reason, versions=reg.versions(comp))
        self.doc.competitors.append(entry)
        workdir = Path(tempfile.mkdtemp(prefix=f"probatorium-bench-{sanitize_name(comp.name)}-"))
        try:
            subs: dict[str, str] = {}
            if reason is None:
                try:
                    subs = reg.prepare(comp, workdir)
                except Exception as exc:  # noqa: BLE001 - a failed build is recorded, the run goes on
                    entry.status, entry.reason = "failed", f"prepare: {exc}"
            for cell in cells:
                self.cell(comp, entry, cell, subs)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def cell(self, comp, entry: BenchCompetitor, cell: Cell, subs: dict[str, str]) -> None:
        """One competitor x cell: not_applicable / failed without a start, else measured; checkpointed."""
        self.index += 1
        rec = _cell_record(self.index, comp, cell)
        self.doc.cells.append(rec)
        self.progress.start(f"{comp.name} / {cell.name}")
        not_here = entry.reason if entry.status == "not_applicable" else None
        why = not_here or reg.serves(comp, cell) or self.services.why_not(cell)
        if why is not None:
            rec.status, rec.reason = "not_applicable", why
        elif entry.status == "failed":
            rec.status, rec.reason = "failed", entry.reason
        else:
            self.measure(comp, cell, rec, subs)
        # the "-> status" line is the end line; a cell not measured costs nothing in the ETA
        self.progress.finish(rec.status, skipped=rec.started_at is None, announce=False)
        self.checkpoint()

    def measure(self, comp, cell: Cell, rec: BenchCell, subs: dict[str, str]) -> None:
        folder = f"{self.index:02d}-{sanitize_name(comp.name)}-{sanitize_name(cell.name)}"
        rec.folder = folder
        rec.started_at = _now()
        self.echo(f"[{self.index:02d}] {comp.name} / {cell.name}")
        try:
            measure_cell(comp, cell, self.out / folder, self.raw_dir, rec, self.opts,
                         extra_env=self.services.env, subs=subs, echo=self.echo, progress=self.progress)
        except Exception as exc:  # noqa: BLE001 - one cell failing never stops the run
            rec.status, rec.reason = "failed", f"{type(exc).__name__}: {exc}"
        rec.finished_at = _now()
        self.echo(f"     -> {rec.status}" + (f": {rec.reason}" if rec.reason else ""))


def run_bench(competitors: list, cells: list[Cell], opts: BenchOptions | None = None, *,
              echo: Callable[[str], None] = print, progress: object = None) -> BenchDocument:
    """Run every competitor x cell; write and return the results document (its `path` set).

    A competitor that cannot run here, or a cell it does not serve or whose
    services are missing, is ``not_applicable`` (never a failure); a wrong
    answer is ``invalid``; a start or measurement failure is ``failed``.
    """
    opts = (opts or BenchOptions()).with_default_cpus()
    out = Path(opts.out_dir) if opts.out_dir is not None else run_folder(opts.results_root, "bench", opts.version)
    out.mkdir(parents=True, exist_ok=True)
    (out / "raw").mkdir(exist_ok=True)
    doc = BenchDocument(
        version=opts.version, started_at=_now(), partial=True, path=str(out / DOCUMENT_NAME),
        host=host_info(opts.server_cpus, opts.client_cpus),
        config=BenchConfig(runs=opts.runs, duration_s=opts.duration, warmup_s=opts.warmup, slos_ms=list(opts.slos),
                           error_budget=opts.error_budget, max_probes=opts.max_probes,
                           competitors=[c.name for c in competitors], cells=[c.name for c in cells],
                           thresholds=[t.expr for t in opts.thresholds]))
    services = _Services.start(competitors, cells)
    run = _BenchRun(doc, out, opts, services, echo, progress)
    run.progress.plan([planned_seconds(cell, opts) for _ in competitors for cell in cells], noun="cell")
    run.checkpoint()
    try:
        for comp in competitors:
            run.competitor(comp, cells)
        doc.partial = False
    finally:
        doc.finished_at = _now()
        run.checkpoint()
        services.stop()
    return doc


def _fmt_rps(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def format_table(doc: BenchDocument) -> str:
    """The bench table: one line per competitor x cell (saturation, p99, latency_at_slo per SLO)."""
    slos = [f"{float(s):g}" for s in doc.config.slos_ms]
    judged = bool(doc.config.thresholds)
    hosts = any(c.host for c in doc.cells)  # a multi-host roll-up: one column more
    head = ["competitor", "cell", "status", "sat rps", "p50 ms", "p99 ms"] + [f"@{s}ms" for s in slos] + ["srv cpu%"]
    head = (["host"] if hosts else []) + head + (["thresholds"] if judged else [])
    rows = [head]
    for c in doc.cells:
        sat = c.saturation
        lat = sat.latency_us if sat is not None else {}
        slo_vals = c.latency_at_slo or {}
        obs = (c.observer or {}).get("steady") or {}
        status = c.status if c.status == "ok" else f"{c.status}: {(c.reason or '')[:50]}"
        sat_rps = "-" if sat is None else _fmt_rps(sat.rps) + ("*" if sat.client_bound else "")
        rows.append([*([c.host or "-"] if hosts else []), c.competitor, c.cell, status, sat_rps,
                     f"{lat['p50'] / 1000:.2f}" if lat else "-", f"{lat['p99'] / 1000:.2f}" if lat else "-",
                     *(_fmt_rps(slo_vals.get(s)) for s in slos),
                     f"{obs['cpu_pct']:.0f}" if obs.get("cpu_pct") is not None else "-",
                     *([_fmt_thresholds(c.thresholds)] if judged else [])])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if any((c.observer or {}).get("not_measured") for c in doc.cells):
        lines.append("srv cpu% -: not measured, the servers ran on other hosts (cells[].observer.not_measured)")
    if any(c.saturation is not None and c.saturation.client_bound for c in doc.cells):
        lines.append("* the load generator was the bottleneck (client_bound): the server may do more")
    for c, v in broken_thresholds(doc):
        lines.append(f"{c.host + ': ' if c.host else ''}{c.competitor} / {c.cell}: threshold {v['threshold']}: BROKEN ({v['detail']})")
    return "\n".join(lines)


def _fmt_thresholds(verdicts: list[dict] | None) -> str:
    if verdicts is None:
        return "-"
    broken = [v["threshold"] for v in verdicts if not v["passed"]]
    return f"{len(verdicts)} passed" if not broken else "BROKEN " + ", ".join(broken)
