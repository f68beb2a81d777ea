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

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
COLUMNS = ("ts", "phase", "pids", "cpu_pct", "rss_kb", "fds", "threads",
           "voluntary_ctxt", "nonvoluntary_ctxt", "tcp_established")


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants (from /proc/*/stat ppid)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(f"/proc/{pid}"):
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def pin_tree(root: int, cpus: list[int]) -> int:
    """Pin every thread of the tree to `cpus`; the number of threads pinned."""
    n = 0
    for pid in process_tree(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
                n += 1
            except OSError:
                pass
    return n


def _established_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) > 9 and parts[3] == "01":
                        inodes.add(parts[9])
        except OSError:
            pass
    return inodes


def sample_tree(root: int) -> dict:
    """One raw sample: cumulative CPU ticks and the gauges, summed over the tree."""
    pids = process_tree(root)
    ticks = rss = fds = threads = vol = nonvol = 0
    sockets: set[str] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            ticks += int(f[11]) + int(f[12])
            threads += int(f[17])
            rss += int(f[21]) * PAGE // 1024
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        nonvol += int(line.split()[1])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                fds += 1
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    sockets.add(link[8:-1])
        except (OSError, IndexError, ValueError):
            continue
    established = len(sockets & _established_inodes(root)) if pids else 0
    return {"pids": len(pids), "ticks": ticks, "rss_kb": rss, "fds": fds, "threads": threads,
            "voluntary_ctxt": vol, "nonvoluntary_ctxt": nonvol, "tcp_established": established}


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
