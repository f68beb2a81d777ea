"""The pristine rule, as a test sees it: a snapshot of what a multi-host run may change on this
machine, taken before and after; the two must be equal.

What is snapshotted: every process carrying the clusters' marker variable (PROBATORIUM_CLUSTER),
the network namespaces and links named like a cluster's (``pb-`` / ``pb``), the hosts manifest's
entries still marked running, the /tmp/probatorium-* folders, and the sysctls a network setup
could change (forwarding, bridge netfilter, backlog and port range, the file-handle limit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding",
           "net/core/somaxconn", "net/ipv4/ip_local_port_range", "fs/file-max", "net/ipv4/tcp_tw_reuse",
           "net/bridge/bridge-nf-call-iptables", "net/ipv4/conf/all/rp_filter")
MARKER = b"PROBATORIUM_CLUSTER="


def marked_processes() -> list[str]:
    """Processes whose environment carries the cluster marker: ``<marker value> <pid> <cmdline>``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            marks = [item[len(MARKER):].decode(errors="replace") for item in environ.split(b"\0")
                     if item.startswith(MARKER)]
            if not marks:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append(f"{marks[0]} {entry.name} {cmdline.strip()}")
    return sorted(found)


def snapshot(state_dir: Path) -> dict:
    netns = Path("/run/netns")
    manifest = state_dir / "hosts.json"
    running = []
    if manifest.is_file():
        running = [e.get("id") for e in json.loads(manifest.read_text()).get("entries", [])
                   if e.get("state") == "running"]
    sysctls = {}
    for name in SYSCTLS:
        try:
            sysctls[name] = Path("/proc/sys", name).read_text().strip()
        except OSError:
            sysctls[name] = None
    return {
        "processes": marked_processes(),
        "namespaces": sorted(p.name for p in netns.iterdir() if p.name.startswith("pb-")) if netns.is_dir() else [],
        "links": sorted(n for n in os.listdir("/sys/class/net") if n.startswith("pb")),
        "manifest_running": running,
        # deploy folders of the ansible driver (probatorium-replay-* are replay logs kept for the user)
        "tmp_folders": sorted(p.name for p in Path("/tmp").glob("probatorium-*") if not p.name.startswith("probatorium-replay-")),
        "sysctls": sysctls,
    }


def differences(before: dict, after: dict) -> dict:
    """What changed between two snapshots. Processes of clusters that existed before (another run
    on a shared machine) are not ours to judge: only new marker values count; namespaces, links and
    folders count when they were added (one that vanished was another run's)."""
    old_marks = {line.split(" ", 1)[0] for line in before["processes"]}
    added_only = ("namespaces", "links", "tmp_folders")  # another run's may also go away meanwhile
    changed = {key: (before[key], after[key]) for key in before
               if key not in ("processes", *added_only) and before[key] != after[key]}
    for key in added_only:
        new = sorted(set(after[key]) - set(before[key]))
        if new:
            changed[key] = new
    new = [line for line in after["processes"] if line.split(" ", 1)[0] not in old_marks]
    if new:
        changed["processes"] = new
    return changed
