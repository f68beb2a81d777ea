#!/usr/bin/env python3
"""Tier 3 throughput: how long do N seeds take on one cell? (issue 11, "Performance")

Runs ``probatorium validate --tiers 3 --seeds N --durable`` against the strict durable
key/value server (tests/servers/kvserver.py --data FILE) with every fault kind that applies
to it (no --faults; net-netem and the service kinds do not apply here: see the table's
"skipped" line). Pinned: the target (and the target it is restarted as) on core 1 through
``taskset -c 1`` in --cmd, probatorium itself (runner, workload connections, fault proxy,
watchdog) on core 0. Each seed's wall time is the time between two consecutive seed lines
of the run's output (the first: its timeline's duration), so it includes everything the
tier does per seed: the health check before it, the plan, the run, the restarts, judging.

Prints a table: seeds, Tier 3 wall time, s/seed median / p90 / mean, the share of each part
of a seed (from the timelines), the projected time for 200 seeds (mean x 200) and pass/fail
against the bar (200 seeds in <= 8 minutes). Exits 1 if any seed errored or failed (the
strict server has no bug to find), 2 on bad usage.

    .venv/bin/python benchmarks/tier3_throughput.py [--seeds 200] [--target-cpu 1] [--client-cpu 0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAR_S = 8 * 60  # 200 seeds
BAR_SEEDS = 200
SEED_LINE = re.compile(r"tier 3 seed (0x[0-9a-f]+) \(([^)]*)\): (passed|failed|errored)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace, work: Path) -> tuple[list[tuple[float, str, str, str]], float, int, str]:
    """Run the validate command; (seed lines with their arrival time, wall s, exit code, output tail)."""
    taskset = shutil.which("taskset")
    target = f"{sys.executable} {REPO / 'tests/servers/kvserver.py'} --port {{port}} --data {work / 'kv.log'}"
    prefix: list[str] = []
    if taskset:
        target = f"{taskset} -c {args.target_cpu} {target}"
        prefix = [taskset, "-c", str(args.client_cpu)]
    cmd = [*prefix, sys.executable, "-c", "from probatorium.cli import main; main()", "validate", "--cmd", target,
           "--spec", str(REPO / "tests/servers/kvserver.openapi.yaml"), "--tiers", "3", "--seeds", str(args.seeds),
           "--durable", "--out", str(work / "run")]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1", COLUMNS="200")
    lines: list[tuple[float, str, str, str]] = []
    tail: list[str] = []
    t0 = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=REPO) as proc:
        assert proc.stdout is not None
        deadline = t0 + max(600.0, args.seeds * 30.0)
        for line in proc.stdout:
            m = SEED_LINE.search(line)
            if m:
                lines.append((time.monotonic(), m.group(1), m.group(2), m.group(3)))
                if args.progress:
                    print(f"  [{time.monotonic() - t0:7.1f}s] {line.strip()}", flush=True)
            tail = (tail + [line.rstrip()])[-40:]
            if time.monotonic() > deadline:
                proc.kill()
                tail.append(f"benchmark: stopped after {deadline - t0:.0f} s")
                break
        code = proc.wait()
    return lines, time.monotonic() - t0, code, "\n".join(tail)


def parts(timeline: dict) -> dict[str, float]:
    """A seed's timeline cut into: lead-in (start → first fault), faults (start → end of each
    window, incl. restarts), between (a window's end → the next fault: recovery, tail, lead),
    reads (the last window's end → the end: recovery, tail, the reads after recovery)."""
    faults = sorted(timeline.get("faults", []), key=lambda f: f["start"])
    total = float(timeline.get("duration_s", 0.0))
    if not faults:
        return {"lead-in": total, "faults": 0.0, "between": 0.0, "reads": 0.0}
    held = sum(f["end"] - f["start"] for f in faults)
    between = sum(b["start"] - a["end"] for a, b in zip(faults, faults[1:]))
    return {"lead-in": faults[0]["start"], "faults": held, "between": between, "reads": total - faults[-1]["end"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=BAR_SEEDS, help="corpus seeds to run (default 200)")
    ap.add_argument("--target-cpu", type=int, default=1, help="core of the target (default 1)")
    ap.add_argument("--client-cpu", type=int, default=0, help="core of probatorium (default 0)")
    ap.add_argument("--progress", action="store_true", help="print each seed line as it arrives")
    ap.add_argument("--keep", action="store_true", help="keep the run folder (its path is printed)")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    if args.seeds < 1:
        print("tier3_throughput: --seeds must be at least 1", file=sys.stderr)
        return 2
    if max(args.target_cpu, args.client_cpu) >= cpus or min(args.target_cpu, args.client_cpu) < 0:
        print(f"tier3_throughput: this machine has cores 0-{cpus - 1}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="t3bench-"))
    try:
        lines, wall, code, tail = run(args, work)
        tallies = list((work / "run").glob("cell-*/tier3_tally.json"))
        if not tallies or not lines:
            print(f"tier3_throughput: the run produced no Tier 3 seeds (exit {code}):\n{tail}", file=sys.stderr)
            return 1
        tally = json.loads(tallies[0].read_text())
        seeds = {s["seed"]: s for s in tally["seeds"]}
        first = seeds[lines[0][1]]["timeline"].get("duration_s", 0.0)
        per_seed = [first] + [b[0] - a[0] for a, b in zip(lines, lines[1:])]
        span = lines[-1][0] - lines[0][0] + first
        outcomes = {o: sum(1 for *_, x in lines if x == o) for o in ("passed", "failed", "errored")}
        cut = [parts(seeds[s]["timeline"]) for _, s, _, _ in lines if seeds.get(s, {}).get("timeline")]
        durations = [seeds[s]["timeline"].get("duration_s", 0.0) for _, s, _, _ in lines]
        by_faults: dict[int, list[float]] = {}
        for (_, s, kinds, _), w in zip(lines, per_seed):
            by_faults.setdefault(len(kinds.split(",")), []).append(w)
        applied = {k[7:]: v for k, v in json.loads((work / "run" / "validate-results.json").read_text())
                   ["validation_results"]["cells"][0]["tier_3"].items() if k.startswith("faults_") and v}
        mean = statistics.fmean(per_seed)
        projected = mean * BAR_SEEDS
        ok = projected <= BAR_S if args.seeds < BAR_SEEDS else span * BAR_SEEDS / args.seeds <= BAR_S
        pin = f"target on core {args.target_cpu}, probatorium on core {args.client_cpu}" \
            if shutil.which("taskset") else "not pinned (no taskset)"
        rows = [
            ("seeds", f"{len(lines)} ({outcomes['passed']} passed, {outcomes['failed']} failed, "
                      f"{outcomes['errored']} errored)"),
            ("process wall time", f"{wall:.1f} s (validate exit {code}; incl. start and report)"),
            ("Tier 3 wall time", f"{span:.1f} s"),
            ("s/seed median", f"{statistics.median(per_seed):.2f}"),
            ("s/seed p90", f"{percentile(per_seed, 0.9):.2f}"),
            ("s/seed mean", f"{mean:.2f}"),
            ("s/seed outside the timeline", f"{statistics.fmean(per_seed) - statistics.fmean(durations):.3f} "
                                            "(health check, plan, judging)"),
            *((f"s/seed median, {n} fault{'s' * (n > 1)}", f"{statistics.median(v):.2f} ({len(v)} seeds)")
              for n, v in sorted(by_faults.items())),
            *((f"part: {name}", f"{statistics.fmean(c[name] for c in cut):.2f} s/seed mean")
              for name in ("lead-in", "faults", "between", "reads")),
            ("faults applied", ", ".join(f"{k} {v}" for k, v in sorted(applied.items()))),
            ("skipped kinds", "; ".join(f"{k}: {v}" for k, v in tally.get("fault_kinds_skipped", {}).items())
             or "none"),
            ("pinned", pin),
            (f"projected for {BAR_SEEDS} seeds", f"{projected:.0f} s = {projected / 60:.1f} min (mean x {BAR_SEEDS})"),
            (f"bar: {BAR_SEEDS} seeds <= {BAR_S // 60} min", "PASS" if ok else "FAIL"),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"\nTier 3 throughput — {args.seeds} corpus seeds, strict durable kvserver, every fault kind")
        print(f"{'measure':<{width}}  value")
        print(f"{'-' * width}  {'-' * 50}")
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        bad = [f"{s} {o}: {seeds.get(s, {}).get('error') or ','.join(seeds.get(s, {}).get('failed', []))}"
               for _, s, _, o in lines if o != "passed"]
        if len(lines) != args.seeds:
            bad.append(f"{len(lines)} of {args.seeds} seeds reported (validate exit {code})\n{tail}")
        for b in bad:
            print(f"not passed: {b}", file=sys.stderr)
        if args.keep:
            print(f"run folder: {work / 'run'}")
        return 1 if bad else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
