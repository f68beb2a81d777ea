"""Leak judges (I-MEM-1, I-FD-1, I-TASK-1) on synthetic series, and the /proc sampler on real processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from probatorium.validate.resources import (
    MB,
    STRONG_PER_MIN,
    WEAK_PER_MIN,
    ResourceSampler,
    fetch_debug_tasks,
    judge_all,
    judge_leak,
    load_series,
    mann_kendall,
    process_tree,
    sample_tree,
    theil_sen,
)

FIELD = {"rss": "rss_bytes", "fds": "fds", "tasks": "tasks"}
BASE = {"rss": 80 * MB, "fds": 40, "tasks": 25}


def series(duration: float, values: Callable[[float], dict[str, float]], *, dt: float = 1.0,
           pid: int = 100, t0: float = 0.0, segment: int = 0) -> list[dict]:
    """Samples every `dt` s; `values(t)` gives the fields (rss_bytes, fds, tasks)."""
    out = []
    n = int(duration / dt) + 1
    for i in range(n):
        t = i * dt
        v = values(t)
        out.append({
            "t": round(t0 + t, 3), "rss_bytes": int(v.get("rss_bytes", BASE["rss"])),
            "fds": int(v.get("fds", BASE["fds"])), "threads": 4,
            "tasks": None if v.get("tasks", 0) is None else int(v.get("tasks", BASE["tasks"])),
            "pid": pid, "procs": 1, "segment": segment,
        })
    return out


def noisy(rng: random.Random, kind: str, per_min: float = 0.0, start: float = 0.0):
    """A field generator: baseline + linear growth + load noise (upward bursts, as real counters)."""
    def gen(t: float) -> dict[str, float]:
        grow = per_min * max(0.0, t - start) / 60.0
        if kind == "rss":
            burst = (rng.random() < 0.1) * rng.uniform(0, 20) * MB
            value = BASE["rss"] + grow + rng.uniform(-1.5, 1.5) * MB + burst
        elif kind == "fds":
            value = BASE["fds"] + grow + rng.randint(0, 12)  # connections come and go
        else:
            value = BASE["tasks"] + grow + rng.randint(0, 30)  # requests in flight
        return {FIELD[kind]: value}
    return gen


KINDS = ("rss", "fds", "tasks")


# --------------------------------------------------------------------------
# statistics


def test_theil_sen_ignores_an_outlier() -> None:
    points = [(float(i), 2.0 * i) for i in range(10)]
    points[4] = (4.0, 1000.0)
    slope, _ = theil_sen(points)
    assert slope == pytest.approx(2.0)


def test_mann_kendall_sign() -> None:
    assert mann_kendall([1, 2, 3, 4, 5, 6])[2] > 2
    assert mann_kendall([6, 5, 4, 3, 2, 1])[2] < -2
    assert mann_kendall([3, 3, 3, 3])[2] == 0


# --------------------------------------------------------------------------
# judges on synthetic series


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("duration", [60, 120, 600])
def test_flat_noisy_series_passes(kind: str, duration: int) -> None:
    for seed in range(10):
        verdict = judge_leak(series(duration, noisy(random.Random(seed), kind)), kind)
        assert verdict.status == "passed", (seed, verdict.reason)
        assert verdict.evaluations > 0
        assert abs(verdict.slope_per_min) < 0.5 * STRONG_PER_MIN[kind]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("factor", [1.0, 1.2])
def test_strong_leak_caught_within_a_minute(kind: str, factor: float) -> None:
    for seed in range(10):
        s = series(60, noisy(random.Random(seed), kind, per_min=factor * STRONG_PER_MIN[kind]))
        verdict = judge_leak(s, kind)
        assert verdict.status == "failed", (seed, verdict.reason)
        assert verdict.slope_per_min == pytest.approx(factor * STRONG_PER_MIN[kind], rel=0.35)
        failure = verdict.evidence["failures"][0]
        assert failure["rule"] == "strong" and failure["buckets"], failure
        assert verdict.predicate == {"rss": "I-MEM-1", "fds": "I-FD-1", "tasks": "I-TASK-1"}[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_strong_leak_starting_late_in_a_long_run_is_caught(kind: str) -> None:
    s = series(600, noisy(random.Random(1), kind, per_min=1.2 * STRONG_PER_MIN[kind], start=420))
    assert judge_leak(s, kind).status == "failed"


@pytest.mark.parametrize("kind", KINDS)
def test_strong_leak_in_the_last_minutes_of_a_soak_is_caught(kind: str) -> None:
    s = series(1800, noisy(random.Random(2), kind, per_min=1.2 * STRONG_PER_MIN[kind], start=1560))
    verdict = judge_leak(s, kind)
    assert verdict.status == "failed", verdict.reason
    assert judge_leak(series(1800, noisy(random.Random(2), kind)), kind).status == "passed"


def test_bursty_sawtooth_passes() -> None:
    # allocate 50 MB, free it, every 10 s: as a square wave and as a ramp
    def square(t: float) -> dict[str, float]:
        return {"rss_bytes": BASE["rss"] + (50 * MB if t % 10 < 5 else 0)}

    def ramp(t: float) -> dict[str, float]:
        return {"rss_bytes": BASE["rss"] + 50 * MB * (t % 10) / 10}

    for gen in (square, ramp):
        for duration in (60, 120, 600):
            verdict = judge_leak(series(duration, gen), "rss")
            assert verdict.status == "passed", (gen.__name__, duration, verdict.reason)


def test_task_pile_up_that_drains_passes() -> None:
    # hypercorn keeps tasks per closed connection until keep-alive expires:
    # they climb to 10 000 during churn, then drain back to 20
    def gen(t: float) -> dict[str, float]:
        if t < 20:
            tasks = 20
        elif t < 100:
            tasks = 20 + (10_000 - 20) * (t - 20) / 80
        elif t < 110:
            tasks = 10_000 - (10_000 - 20) * (t - 100) / 10
        else:
            tasks = 20
        return {"tasks": tasks}

    verdict = judge_leak(series(125, gen), "tasks")
    assert verdict.status == "passed", verdict.reason


def test_steady_churn_plateau_passes() -> None:
    rng = random.Random(3)

    def gen(t: float) -> dict[str, float]:  # churn starts, tasks jump to a noisy plateau
        return {"tasks": 20 if t < 10 else 3000 + rng.randint(-400, 400)}

    assert judge_leak(series(120, gen), "tasks").status == "passed"


def test_start_up_ramp_that_levels_off_passes() -> None:
    # measured on hypercorn (docs/leaks.md): RSS rises ~15 MB/min for the
    # first ~38 s of traffic, then stays flat
    def gen(t: float) -> dict[str, float]:
        return {"rss_bytes": 35 * MB + 15 * MB * min(t, 38) / 60}

    for duration in (55, 60, 65, 120, 600):
        verdict = judge_leak(series(duration, gen), "rss")
        assert verdict.status == "passed", (duration, verdict.reason)


def test_recovery_from_a_load_dip_passes() -> None:
    # measured on hypercorn (docs/leaks.md): fds follow the churn rate; the
    # machine got busy, the level dipped from ~210 to ~130 and came back
    rng = random.Random(4)

    def gen(t: float) -> dict[str, float]:
        if t < 180:
            level = 210.0
        elif t < 240:
            level = 210 - 80 * (t - 180) / 60
        elif t < 330:
            level = 130 + 82 * (t - 240) / 90
        else:
            level = 212.0
        return {"fds": level + rng.randint(0, 10), "tasks": 3 * level + rng.randint(0, 30)}

    for duration in (300, 335, 345, 375, 420):
        for kind in ("fds", "tasks"):
            verdict = judge_leak(series(duration, gen), kind)
            assert verdict.status == "passed", (duration, kind, verdict.reason)


def test_single_step_is_not_a_leak() -> None:
    def gen(t: float) -> dict[str, float]:  # a one-off 10 MB cache fill mid-run
        return {"rss_bytes": BASE["rss"] + (10 * MB if t > 40 else 0)}

    assert judge_leak(series(60, gen), "rss").status == "passed"


def test_restart_boundary_makes_no_slope() -> None:
    low = series(90, lambda t: {"rss_bytes": 60 * MB, "fds": 20}, pid=100, segment=0)
    high = series(90, lambda t: {"rss_bytes": 400 * MB, "fds": 900}, pid=200, t0=92, segment=1)
    high[0]["restart"] = True
    for kind in ("rss", "fds"):
        verdict = judge_leak(low + high, kind)
        assert verdict.status == "passed", verdict.reason
        assert verdict.slope_per_min == pytest.approx(0.0)
        assert {f["segment"] for f in verdict.evidence["fits"]} == {0, 1}
    # a pid change alone (no segment field) is a boundary too
    for sample in low + high:
        del sample["segment"]
    assert judge_leak(low + high, "rss").status == "passed"


def test_leak_in_one_segment_fails() -> None:
    first = series(90, lambda t: {}, pid=100, segment=0)
    second = series(90, noisy(random.Random(0), "rss", per_min=30 * MB), pid=200, t0=92, segment=1)
    verdict = judge_leak(first + second, "rss")
    assert verdict.status == "failed"
    assert verdict.evidence["failures"][0]["segment"] == 1


def test_too_short_is_not_judged() -> None:
    for kind in KINDS:
        verdict = judge_leak(series(40, noisy(random.Random(0), kind)), kind)
        assert verdict.status == "not_judged" and verdict.evaluations == 0, verdict.reason
        assert "too few samples" in verdict.reason
        assert judge_leak([], kind).status == "not_judged"


def test_tasks_without_debug_endpoint_is_not_judged() -> None:
    s = series(120, lambda t: {"tasks": None})
    verdict = judge_leak(s, "tasks")
    assert verdict.status == "not_judged" and "debug endpoint" in verdict.reason
    verdicts = judge_all(s)
    assert verdicts["I-MEM-1"].status == "passed" and verdicts["I-TASK-1"].status == "not_judged"


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError):
        judge_leak(series(60, lambda t: {}), "sockets")


def test_weak_leak_only_over_a_long_soak() -> None:
    gen = noisy(random.Random(5), "rss", per_min=1.5 * WEAK_PER_MIN["rss"])
    assert judge_leak(series(120, gen), "rss").status == "passed"  # invisible in 2 minutes
    verdict = judge_leak(series(15 * 60, gen), "rss")
    assert verdict.status == "failed", verdict.reason
    assert verdict.evidence["failures"][0]["rule"] == "weak"


def test_growth_that_plateaus_in_a_soak_passes() -> None:
    rng = random.Random(6)

    def gen(t: float) -> dict[str, float]:  # caches fill for 5 minutes, then flat
        grow = min(t, 300) / 60 * 1.5 * MB
        return {"rss_bytes": BASE["rss"] + grow + rng.uniform(-1, 1) * MB}

    verdict = judge_leak(series(20 * 60, gen), "rss")
    assert verdict.status == "passed", verdict.reason


def test_verdict_as_dict_is_json() -> None:
    verdict = judge_leak(series(60, noisy(random.Random(0), "fds", per_min=40)), "fds")
    json.dumps(verdict.as_dict())
    assert verdict.as_dict()["status"] == "failed"


# --------------------------------------------------------------------------
# the sampler on real processes


def _spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(5)


LEAK_1MB_PER_100MS = (
    "import time\n"
    "hoard = []\n"
    "for _ in range(300):\n"
    "    hoard.append(b'\\x01' * (1 << 20))\n"
    "    time.sleep(0.1)\n"
    "time.sleep(60)\n"
)


FD_LEAK_1_PER_100MS = (  # one fd every 100 ms: ~600 fds/min
    "import os, time\n"
    "fds = []\n"
    "for _ in range(250):\n"
    "    fds.append(os.open(os.devnull, os.O_RDONLY))\n"
    "    time.sleep(0.1)\n"
    "time.sleep(60)\n"
)
#: name → (program, seconds sampled): the three real processes are sampled side by side, each by its
#: own sampler for as long as its test always had, so the module waits 25 s once instead of 55 s.
REAL = {"rss-leak": (LEAK_1MB_PER_100MS, 25.0), "fd-leak": (FD_LEAK_1_PER_100MS, 15.0),
        "idle": ("import time\ntime.sleep(60)\n", 15.0)}


@pytest.fixture(scope="module")
def real_series() -> Iterator[dict[str, tuple[int, ResourceSampler]]]:
    """name → (pid, its stopped sampler at 0.5 s) of each REAL process; the tests only read them."""
    processes = {name: _spawn(code) for name, (code, _) in REAL.items()}
    samplers = {name: ResourceSampler(lambda p=proc: p.pid, interval=0.5) for name, proc in processes.items()}
    try:
        t0 = time.monotonic()
        for sampler in samplers.values():
            sampler.start()
        for name in sorted(REAL, key=lambda n: REAL[n][1]):  # stop each sampler at its own length
            time.sleep(max(0.0, t0 + REAL[name][1] - time.monotonic()))
            samplers[name].stop()
    finally:
        for sampler in samplers.values():
            sampler.stop()  # idempotent
        for proc in processes.values():
            _stop(proc)
    yield {name: (processes[name].pid, samplers[name]) for name in REAL}


def test_real_leaking_process_fails(real_series) -> None:
    samples = real_series["rss-leak"][1].samples
    assert len(samples) >= 45
    assert samples[-1]["rss_bytes"] > samples[0]["rss_bytes"] + 150 * MB
    verdict = judge_leak(samples, "rss", warmup=3.0, bucket=2.0)
    assert verdict.status == "failed", verdict.reason
    assert verdict.slope_per_min > 300 * MB  # ~630 MB/min
    assert judge_leak(samples, "fds", warmup=3.0, bucket=2.0).status == "passed"


def test_real_fd_leak_fails(real_series) -> None:
    verdict = judge_leak(real_series["fd-leak"][1].samples, "fds", warmup=2.0, bucket=1.5)
    assert verdict.status == "failed", verdict.reason


def test_real_idle_process_passes(real_series, tmp_path) -> None:
    pid, sampler = real_series["idle"]
    samples = sampler.samples
    assert all(s["pid"] == pid and s["tasks"] is None and s["threads"] >= 1 for s in samples)
    for kind in ("rss", "fds"):
        verdict = judge_leak(samples, kind, warmup=2.0, bucket=1.5)
        assert verdict.status == "passed", verdict.reason
    assert judge_leak(samples, "tasks", warmup=2.0, bucket=1.5).status == "not_judged"
    path = sampler.write_series(tmp_path / "series.json")
    assert load_series(path) == samples


def test_sampler_sums_the_process_tree() -> None:
    code = (
        "import subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    process = _spawn(code)
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(process.pid)
        assert len(tree) == 2 and tree[0] == process.pid
        sample = sample_tree(process.pid)
        assert sample is not None and sample["procs"] == 2
        assert sample["rss_bytes"] > sample_tree(tree[1])["rss_bytes"]  # type: ignore[index]
    finally:
        for pid in tree[1:]:  # the grandchild we saw, by its pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _stop(process)


def test_sampler_follows_a_restart() -> None:
    first, second = _spawn("import time; time.sleep(30)"), _spawn("import time; time.sleep(30)")
    current = {"pid": first.pid}
    try:
        with ResourceSampler(lambda: current["pid"], interval=0.1) as sampler:
            time.sleep(0.6)
            current["pid"] = None  # down while restarting
            time.sleep(0.3)
            current["pid"] = second.pid
            time.sleep(0.6)
    finally:
        _stop(first)
        _stop(second)
    samples = sampler.samples
    assert {s["segment"] for s in samples} == {0, 1}
    flagged = [s for s in samples if s.get("restart")]
    assert len(flagged) == 1 and flagged[0]["pid"] == second.pid
    assert sampler.missed >= 1


class _Debug(BaseHTTPRequestHandler):
    body = b'{"tasks": 7, "sse_open": 0}'

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_debug_endpoint_tasks() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Debug)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/debug/vars"
    try:
        assert fetch_debug_tasks(url) == 7
        sampler = ResourceSampler(os.getpid, debug_url=lambda: url)
        sampler.start()
        time.sleep(0.2)
        sampler.stop()
        assert sampler.samples and sampler.samples[0]["tasks"] == 7
        _Debug.body = b'{"tasks": "many"}'
        assert fetch_debug_tasks(url) is None
    finally:
        _Debug.body = b'{"tasks": 7, "sse_open": 0}'
        server.shutdown()
        server.server_close()
    assert fetch_debug_tasks(url, timeout=0.5) is None  # nothing listens any more


def test_fd_table_exhausted_during_warmup_is_a_leak():
    # A fast fd leak fills a 1024-fd table in 6 s, then levels off (accept() fails with EMFILE):
    # the strong rule's slope sees a plateau, the exhausted rule sees the table full.
    samples = series(70, lambda t: {"fds": min(1024, 10 + int(170 * t))})
    for s in samples:
        s["fd_share"] = s["fds"] / 1024
    verdict = judge_leak(samples, "fds")
    assert verdict.status == "failed" and "exhausted" in verdict.reason, verdict.reason
    # the same plateau far below the limit is a start-up ramp, not a leak
    for s in samples:
        s["fd_share"] = s["fds"] / 65536
    assert judge_leak(samples, "fds").status == "passed"
    # a table that starts (nearly) full did not fill up under our traffic
    full = series(70, lambda t: {"fds": 1000 + (int(t) % 5)})
    for s in full:
        s["fd_share"] = s["fds"] / 1024
    assert judge_leak(full, "fds").status == "passed"


def test_sample_tree_reports_the_fd_share():
    from probatorium.validate.resources import sample_tree

    got = sample_tree(os.getpid())
    assert got is not None and got["fd_share"] is not None and 0 < got["fd_share"] < 1


# --- the self-check count contract: cumulative counts per process lifetime, summed ---


def test_self_check_totals_per_lifetime():
    from probatorium.validate.resources import debug_self_checks, self_check_totals

    assert self_check_totals([{"pid": 1, "tasks": 3}]) is None  # the target does not offer the contract
    series = [
        {"pid": 1, "segment": 0, "self_checks": {"I-MW-JWT": 5, "I-MW-CSRF": 0}},
        {"pid": 1, "segment": 0},  # a debug miss
        {"pid": 1, "segment": 0, "self_checks": {"I-MW-JWT": 9, "I-MW-CSRF": 2}},
        {"pid": 1, "segment": 1, "self_checks": {"I-MW-JWT": 12, "I-MW-CSRF": 2}},  # a pause: same process
        {"pid": 2, "segment": 2, "self_checks": {"I-MW-JWT": 4, "I-MW-CSRF": 1}},  # restarted
        {"pid": 2, "segment": 3, "self_checks": {"I-MW-JWT": 1, "I-MW-CSRF": 0}},  # restarted, same pid
        {"pid": 2, "segment": 3, "self_checks": {"I-MW-JWT": 3, "I-MW-CSRF": 0}},
    ]
    assert self_check_totals(series) == {"I-MW-CSRF": 3, "I-MW-JWT": 12 + 4 + 3}
    assert debug_self_checks({"self_checks": {"I-MW-JWT": 3, "bad": -1, "worse": True, "x": "1"}}) == {"I-MW-JWT": 3}
    assert debug_self_checks({"self_checks": [1]}) is None and debug_self_checks(None) is None
