"""The one reader of ``/proc``: what a process is, who its children are, what it holds.

Every sampler (validate's resource sampler, the bench observer) and the
process layer (:mod:`probatorium.procs`) read processes through this module,
so a field is parsed in exactly one place. Everything returns None (or an
empty result) for a process that is gone; nothing here signals anything.

``/proc/<pid>/stat`` fields are numbered as in proc(5); ``stat_fields``
returns them from field 3 (state) on, because field 2 (comm) may hold spaces
and parentheses and is split off after the LAST ``)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Indexes into stat_fields(): proc(5) field number minus 3.
_STATE, _PPID, _PGRP, _UTIME, _STIME, _THREADS, _STARTTIME = 0, 1, 2, 11, 12, 17, 19
_GONE_STATES = ("Z", "X")  # a zombie or a dead entry is no longer a running process


def read_text(path: str) -> str | None:
    """The text of a /proc file, None when it cannot be read (the process is gone)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def pids() -> Iterator[int]:
    """Every pid /proc lists now."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on; None when gone or unreadable."""
    raw = read_text(f"/proc/{pid}/stat")
    if raw is None:
        return None
    close = raw.rfind(")")
    if close < 0:
        return None
    fields = raw[close + 1:].split()
    return fields if len(fields) > _STARTTIME else None


def state(pid: int) -> str | None:
    """The one-letter state (R, S, T, Z, ...), None when gone."""
    fields = stat_fields(pid)
    return fields[_STATE] if fields else None


def ppid(pid: int) -> int | None:
    """The parent pid, None when gone."""
    fields = stat_fields(pid)
    return int(fields[_PPID]) if fields else None


def pgid(pid: int) -> int | None:
    """The process group id, None when gone."""
    fields = stat_fields(pid)
    return int(fields[_PGRP]) if fields else None


def start_ticks(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22), whatever the state; None when gone.

    With the pid it is the identity of a process: pids are reused, start times are not.
    """
    fields = stat_fields(pid)
    try:
        return int(fields[_STARTTIME]) if fields else None
    except ValueError:
        return None


def live_start_ticks(pid: int) -> int | None:
    """``start_ticks`` of a running process; None when it is gone or a zombie."""
    fields = stat_fields(pid)
    if not fields or fields[_STATE] in _GONE_STATES:
        return None
    try:
        return int(fields[_STARTTIME])
    except ValueError:
        return None


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is neither a zombie nor dead."""
    return live_start_ticks(pid) is not None


def cpu_ticks(pid: int) -> int | None:
    """User + system CPU time in clock ticks (fields 14 and 15), None when gone."""
    fields = stat_fields(pid)
    try:
        return int(fields[_UTIME]) + int(fields[_STIME]) if fields else None
    except ValueError:
        return None


def group_pids(group: int) -> list[int]:
    """Running processes (not zombies) whose process group is ``group``."""
    found = []
    for pid in pids():
        fields = stat_fields(pid)
        if fields and fields[_PGRP] == str(group) and fields[_STATE] not in _GONE_STATES:
            found.append(pid)
    return found


def children(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads' children files, else a /proc scan)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    found_file = False
    for tid in tids:
        text = read_text(f"/proc/{pid}/task/{tid}/children")
        if text is None:
            continue
        found_file = True
        kids.extend(int(x) for x in text.split() if x.isdigit())
    if found_file:
        return kids
    # Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
    for other in pids():
        fields = stat_fields(other)
        if fields and fields[_PPID] == str(pid):
            kids.append(other)
    return kids


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants (breadth first)."""
    tree: list[int] = []
    seen: set[int] = set()
    queue = [root]
    while queue:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        if not os.path.exists(f"/proc/{pid}"):
            continue
        tree.append(pid)
        queue.extend(children(pid))
    return tree


def thread_ids(pid: int) -> list[int]:
    """The thread ids of `pid` (empty when gone)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


@dataclass(frozen=True)
class Status:
    """The fields of ``/proc/<pid>/status`` the samplers read."""

    rss_bytes: int  # VmRSS (0 for a zombie, which has no VmRSS line)
    threads: int
    voluntary_ctxt: int
    nonvoluntary_ctxt: int


def status(pid: int) -> Status | None:
    """VmRSS, Threads and the context-switch counters of one process; None when gone."""
    text = read_text(f"/proc/{pid}/status")
    if text is None:
        return None
    rss = threads = None
    vol = nonvol = 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            rss = int(parts[1]) * (1024 if len(parts) < 3 or parts[2].lower() == "kb" else 1)
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
        elif line.startswith("voluntary_ctxt_switches:"):
            vol = int(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches:"):
            nonvol = int(line.split()[1])
    if threads is None:
        return None
    return Status(rss or 0, threads, vol, nonvol)


def fd_names(pid: int) -> list[str] | None:
    """The open descriptor numbers of `pid` (as listed), None when not readable."""
    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None


def fd_count(pid: int) -> int | None:
    """How many descriptors `pid` holds, None when not readable."""
    names = fd_names(pid)
    return None if names is None else len(names)


def socket_inodes(pid: int) -> set[str] | None:
    """Inodes of the sockets `pid` holds (``socket:[N]`` links), None when not readable."""
    names = fd_names(pid)
    if names is None:
        return None
    inodes: set[str] = set()
    for fd in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def fd_soft_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of one process (/proc/PID/limits); None if unknown or unlimited."""
    text = read_text(f"/proc/{pid}/limits")
    for line in (text or "").splitlines():
        if line.startswith("Max open files"):
            parts = line[len("Max open files"):].split()
            return int(parts[0]) if parts and parts[0].isdigit() and int(parts[0]) > 0 else None
    return None


TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


def tcp_inodes(tables: tuple[str, ...], tcp_state: str, local: str | None = None) -> set[str] | None:
    """Socket inodes of the rows of /proc ``tables`` (e.g. ``/proc/net/tcp``) in ``tcp_state``,
    optionally only those bound to ``local`` (``HEXADDR:HEXPORT``); None if no table is readable."""
    inodes: set[str] = set()
    read_any = False
    for path in tables:
        text = read_text(path)
        if text is None:
            continue
        read_any = True
        for row in text.splitlines()[1:]:
            cols = row.split()
            if len(cols) > 9 and cols[3] == tcp_state and (local is None or cols[1] == local):
                inodes.add(cols[9])
    return inodes if read_any else None


def cwd(pid: int) -> str | None:
    """The working directory of `pid`, None when not readable."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


@dataclass
class TreeSample:
    """One sample of a process tree, summed over its processes."""

    procs: int = 0
    rss_bytes: int = 0
    fds: int = 0
    threads: int = 0
    cpu_ticks: int = 0
    voluntary_ctxt: int = 0
    nonvoluntary_ctxt: int = 0
    #: The largest share of its RLIMIT_NOFILE soft limit any one process holds (None: unknown).
    fd_share: float | None = None
    #: Socket inodes held by the tree (only when asked: reading every fd link costs).
    sockets: set[str] = field(default_factory=set)


def sample_tree(root: int, *, sockets: bool = False) -> TreeSample | None:
    """One sample of the tree under `root`; None when no process of it could be read."""
    out = TreeSample()
    for pid in process_tree(root):
        st = status(pid)
        if st is None:
            continue
        count = fd_count(pid)
        out.procs += 1
        out.rss_bytes += st.rss_bytes
        out.threads += st.threads
        out.voluntary_ctxt += st.voluntary_ctxt
        out.nonvoluntary_ctxt += st.nonvoluntary_ctxt
        out.cpu_ticks += cpu_ticks(pid) or 0
        out.fds += count or 0
        limit = fd_soft_limit(pid)
        if limit and count is not None:
            out.fd_share = max(out.fd_share or 0.0, count / limit)
        if sockets:
            out.sockets |= socket_inodes(pid) or set()
    return out if out.procs else None


def established_inodes(pid: int) -> set[str]:
    """ESTABLISHED TCP socket inodes in the network namespace of `pid`."""
    tables = (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6")
    return tcp_inodes(tables, TCP_ESTABLISHED) or set()
