"""run_load(config) -> LoadResult: start the worker processes, merge their results exactly."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from probatorium.errors import InfraError
from probatorium.loadgen import hist
from probatorium.loadgen.config import LoadConfig, parse_url
from probatorium.loadgen.worker import ERROR_CLASSES, worker_main

__all__ = ["LoadResult", "NoConnectionError", "run_load", "CLIENT_BOUND_CPU"]

#: a worker using at least this fraction of one core is the bottleneck
CLIENT_BOUND_CPU = 0.90
#: open loop: mean event-loop lag beyond this (ms) means the client could not keep the schedule
CLIENT_BOUND_LAG_MS = 5.0


class NoConnectionError(InfraError):
    """Not a single connection to the target ever succeeded (the CLI prints one line, exit 2)."""

    def __init__(self, message: str, result: "LoadResult | None" = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class PhaseResult:
    requests: int
    errors: dict[str, int]
    duration_s: float
    requests_per_sec: float
    latency_us: dict[str, float]
    histogram: str
    unsent: int
    client_cpu: dict[str, Any]


@dataclass
class LoadResult:
    """The merged result of one run. ``to_json()`` gives the documented JSON object."""

    url: str
    mode: str  # "closed" | "open"
    connections: int
    workers: int
    requests: int  # responses received in the measured window (any status)
    errors: dict[str, int]
    duration_s: float
    requests_per_sec: float
    latency_us: dict[str, float]
    histogram: str  # HdrHistogram V2 compressed, base64; values in microseconds
    target_rps: float | None
    achieved_rps: float
    unsent: int
    timeseries: list[dict[str, Any]]
    client_cpu: dict[str, Any]
    client_bound: bool
    client_bound_reason: str | None
    loop_lag_ms: dict[str, float]
    warmup: PhaseResult | None
    queue_overflow: int = 0
    event_loop: str = ""
    kind: str = "http"  # http | ws (requests = echoed messages) | sse (requests = events delivered)
    events_untimed: int = 0  # sse: events without a timestamp (counted, no latency)
    per_worker: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def merged_histogram(self):
        return hist.decode(self.histogram)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _sum_errors(dicts: list[dict[str, int]]) -> dict[str, int]:
    out = dict.fromkeys(ERROR_CLASSES, 0)
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def run_load(cfg: LoadConfig, *, start_method: str = "spawn") -> LoadResult:
    """Run one load test as configured and return the merged result.

    Raises NoConnectionError when no connection to the target ever succeeded,
    UsageError for a bad configuration or a non-loopback target without
    ``allow_remote``.
    """
    from probatorium.targets.safety import check_target_allowed

    host, port, _ = parse_url(cfg.url)
    check_target_allowed(host, cfg.allow_remote)
    cpus = cfg.resolved_cpus()
    nworkers = cfg.resolved_workers()
    conns = _split(cfg.connections, nworkers)
    ctx = mp.get_context(start_method)
    procs = []
    pipes = []
    try:
        for i in range(nworkers):
            parent_end, child_end = ctx.Pipe()
            cpu = cpus[i % len(cpus)] if cpus else None
            p = ctx.Process(
                target=worker_main, args=(cfg, i, nworkers, conns[i], cpu, child_end), daemon=True,
                name=f"probatorium-loadgen-{i}",
            )
            p.start()
            child_end.close()
            procs.append(p)
            pipes.append(parent_end)
        ready_timeout = 30.0 + cfg.connect_timeout
        for i, pipe in enumerate(pipes):
            if not pipe.poll(ready_timeout):
                raise InfraError(f"loadgen worker {i} did not start within {ready_timeout:.0f}s")
            msg = pipe.recv()
            if msg[0] == "error":
                raise InfraError(f"loadgen worker {i} failed: {msg[1]}")
        start_ns = time.monotonic_ns() + 20_000_000
        for pipe in pipes:
            pipe.send(("go", start_ns))
        budget = cfg.warmup + cfg.duration + (cfg.grace if cfg.grace is not None else min(cfg.timeout, 5.0)) + 30
        results = []
        for i, pipe in enumerate(pipes):
            if not pipe.poll(budget):
                raise InfraError(f"loadgen worker {i} produced no result within {budget:.0f}s")
            msg = pipe.recv()
            if msg[0] == "error":
                raise InfraError(f"loadgen worker {i} failed: {msg[1]}")
            results.append(msg[1])
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        for pipe in pipes:
            pipe.close()
    result = merge_results(cfg, results)
    if not any(r["ever_connected"] for r in results):
        raise NoConnectionError(
            f"loadgen: no connection to {host}:{port} ever succeeded "
            f"({result.errors['connect']} connect errors)",
            result,
        )
    return result


def _phase_cpu(rs: list[dict[str, Any]], cpu_key, wall_key) -> dict[str, Any]:
    per = []
    for r in rs:
        cpu, wall = cpu_key(r), wall_key(r)
        per.append({"worker": r["index"], "cpu_s": round(cpu, 3), "util": round(cpu / wall, 3) if wall > 0 else 0.0})
    return {
        "total_cpu_s": round(sum(p["cpu_s"] for p in per), 3),
        "max_util": max((p["util"] for p in per), default=0.0),
        "per_worker": per,
    }


def merge_results(cfg: LoadConfig, rs: list[dict[str, Any]]) -> LoadResult:
    """Merge per-worker results: histograms add bucket by bucket; counts add up."""
    rs = sorted(rs, key=lambda r: r["index"])
    total = hist.merge_encoded(r["histogram"] for r in rs)
    untimed = sum(r.get("events_untimed", 0) for r in rs)
    requests = total.get_total_count() + untimed
    duration = cfg.duration
    errors = _sum_errors([r["errors"] for r in rs])
    unsent = sum(r["unsent"] for r in rs)
    # timeseries: per-second histograms merged across workers, p99 read from the merge
    nsec = max((len(r["seconds"]) for r in rs), default=0)
    timeseries = []
    for s in range(nsec):
        parts = [r["seconds"][s] for r in rs if s < len(r["seconds"])]
        h = hist.merge_encoded(p["histogram"] for p in parts)
        span = min(1.0, duration - s) if duration - s > 0 else 1.0
        timeseries.append({
            "second": s,
            "rps": round(sum(p["count"] for p in parts) / span, 1),
            "p99_us": h.get_value_at_percentile(99.0) if h.get_total_count() else 0,
            "errors": sum(p["errors"] for p in parts),
        })
    client_cpu = _phase_cpu(rs, lambda r: r["cpu_s"], lambda r: r["wall_s"])
    lag = {
        "mean": round(sum(r["loop_lag_ms"]["mean"] for r in rs) / len(rs), 3) if rs else 0.0,
        "max": max((r["loop_lag_ms"]["max"] for r in rs), default=0.0),
    }
    summary = hist.summary(total)
    achieved = requests / duration
    failed = sum(v for k, v in errors.items() if k != "status")
    bound_reason = None
    if client_cpu["max_util"] >= CLIENT_BOUND_CPU:
        bound_reason = f"client CPU {client_cpu['max_util']:.0%} of a core"
    elif cfg.rate is not None and (unsent or achieved + failed / duration < 0.99 * cfg.rate) and lag["mean"] > CLIENT_BOUND_LAG_MS:
        bound_reason = f"open loop behind schedule with event-loop lag {lag['mean']:.1f} ms"
    # Little's law: in flight = rps x mean latency. In the open loop, if the connections
    # were all busy all the time while the loop lagged, the client was the limit.
    warm = None
    if cfg.warmup > 0:
        wh = hist.merge_encoded(r["warmup"]["histogram"] for r in rs)
        wreq = sum(r["warmup"]["requests"] for r in rs)
        warm = PhaseResult(
            requests=wreq,
            errors=_sum_errors([r["warmup"]["errors"] for r in rs]),
            duration_s=cfg.warmup,
            requests_per_sec=round(wreq / cfg.warmup, 1),
            latency_us=hist.summary(wh),
            histogram=hist.encode(wh),
            unsent=sum(r["warmup"]["unsent"] for r in rs),
            client_cpu=_phase_cpu(rs, lambda r: r["warmup"]["cpu_s"], lambda r: r["warmup"]["wall_s"]),
        )
    return LoadResult(
        url=cfg.url,
        mode=cfg.mode,
        connections=cfg.connections,
        workers=len(rs),
        requests=requests,
        errors=errors,
        duration_s=duration,
        requests_per_sec=round(requests / duration, 1),
        latency_us=summary,
        histogram=hist.encode(total),
        target_rps=cfg.rate,
        achieved_rps=round(achieved, 1),
        unsent=unsent,
        timeseries=timeseries,
        client_cpu=client_cpu,
        client_bound=bound_reason is not None,
        client_bound_reason=bound_reason,
        loop_lag_ms=lag,
        warmup=warm,
        queue_overflow=sum(r["queue_overflow"] for r in rs),
        kind=cfg.kind,
        events_untimed=untimed,
        event_loop=rs[0].get("loop", "") if rs else "",
        per_worker=[
            {k: r[k] for k in ("index", "pid", "cpu", "connections", "connects_ok", "requests", "errors", "unsent", "loop_lag_ms")}
            for r in rs
        ],
    )
