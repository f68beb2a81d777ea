"""1 Hz samples of the server process tree into ``observer.sqlite``.

Per sample, summed over the tree (the root pid and every descendant): CPU
(percent of one core since the previous sample), RSS, open fds, threads,
voluntary / involuntary context switches (cumulative, from
``/proc/<pid>/status``) and ESTABLISHED TCP connections (the tree's socket
inodes looked up in ``/proc/<pid>/net/tcp{,6}``). The runner marks phases
(``warmup``, ``measure``, ``probe``) so the summary can give peaks over the
whole cell and steady values (median) over measured windows.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import threading
import time
from pathlib import Path

from probatorium import procfs
from probatorium.procfs import CLK_TCK

COLUMNS = ("ts", "phase", "pids", "cpu_pct", "rss_kb", "fds", "threads",
           "voluntary_ctxt", "nonvoluntary_ctxt", "tcp_established")


def pin_tree(root: int, cpus: list[int]) -> int:
    """Pin every thread of the tree to `cpus`; the number of threads pinned."""
    n = 0
    for pid in procfs.process_tree(root):
        for tid in procfs.thread_ids(pid):
            try:
                os.sched_setaffinity(tid, cpus)
                n += 1
            except OSError:
                pass
    return n


def sample_tree(root: int) -> dict:
    """One raw sample: cumulative CPU ticks and the gauges, summed over the tree."""
    measured = procfs.sample_tree(root, sockets=True)
    if measured is None:
        return {"pids": 0, "ticks": 0, "rss_kb": 0, "fds": 0, "threads": 0,
                "voluntary_ctxt": 0, "nonvoluntary_ctxt": 0, "tcp_established": 0}
    established = len(measured.sockets & procfs.established_inodes(root))
    return {"pids": measured.procs, "ticks": measured.cpu_ticks, "rss_kb": measured.rss_bytes // 1024,
            "fds": measured.fds, "threads": measured.threads, "voluntary_ctxt": measured.voluntary_ctxt,
            "nonvoluntary_ctxt": measured.nonvoluntary_ctxt, "tcp_established": established}


class Observer:
    """Samples the tree of `pid` every `interval` s into `db_path` until stop()."""

    def __init__(self, pid: int, db_path: Path, interval: float = 1.0) -> None:
        self.pid = pid
        self.db_path = Path(db_path)
        self.interval = interval
        self.phase = "idle"
        self.rows: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probatorium-observer", daemon=True)

    def start(self) -> "Observer":
        self._thread.start()
        return self

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def _run(self) -> None:
        prev = sample_tree(self.pid)
        prev_t = time.monotonic()
        while not self._stop.wait(self.interval):
            cur = sample_tree(self.pid)
            now = time.monotonic()
            cpu = 100.0 * (cur["ticks"] - prev["ticks"]) / CLK_TCK / max(now - prev_t, 1e-6)
            self.rows.append((time.time(), self.phase, cur["pids"], round(max(cpu, 0.0), 1), cur["rss_kb"],
                              cur["fds"], cur["threads"], cur["voluntary_ctxt"], cur["nonvoluntary_ctxt"],
                              cur["tcp_established"]))
            prev, prev_t = cur, now

    def stop(self) -> dict:
        """Stop sampling, write observer.sqlite, return the summary."""
        self._stop.set()
        self._thread.join(timeout=5)
        write_sqlite(self.db_path, self.rows)
        return summarize(self.rows)


def write_sqlite(path: Path, rows: list[tuple]) -> None:
    """The samples as table ``samples`` (one row a second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE samples (ts REAL, phase TEXT, pids INTEGER, cpu_pct REAL, rss_kb INTEGER, "
                    "fds INTEGER, threads INTEGER, voluntary_ctxt INTEGER, nonvoluntary_ctxt INTEGER, "
                    "tcp_established INTEGER)")
        con.executemany(f"INSERT INTO samples VALUES ({','.join('?' * len(COLUMNS))})", rows)
        con.commit()
    finally:
        con.close()


def summarize(rows: list[tuple]) -> dict:
    """Peaks over all samples; steady = median over the saturation runs; context switches per second."""
    if not rows:
        return {"samples": 0}
    idx = {c: i for i, c in enumerate(COLUMNS)}
    gauges = ("cpu_pct", "rss_kb", "fds", "threads", "tcp_established")
    # steady = the saturation runs (closed loop at full load); else the probes; else everything
    measured = ([r for r in rows if r[idx["phase"]] == "measure"]
                or [r for r in rows if r[idx["phase"]] == "probe"] or rows)
    out: dict = {"samples": len(rows), "peak": {}, "steady": {}}
    for g in gauges:
        out["peak"][g] = max(r[idx[g]] for r in rows)
        out["steady"][g] = statistics.median(r[idx[g]] for r in measured)
    span = rows[-1][0] - rows[0][0]
    for c in ("voluntary_ctxt", "nonvoluntary_ctxt"):
        delta = rows[-1][idx[c]] - rows[0][idx[c]]
        out["steady"][c + "_per_s"] = round(delta / span, 1) if span > 0 else None
    return out
