"""Network-namespace "hosts" on this machine: a client and two servers behind a bridge.

``--driver netns`` (and the ansible driver's end-to-end tests) need hosts that
are separate on the network yet cost nothing to make. A cluster is:

- three namespaces ``pb-<id>-client``, ``pb-<id>-server-a``, ``pb-<id>-server-b``;
- a bridge ``pb<id>br`` in the root namespace holding ``10.213.N.1/24`` (so the
  controller reaches every host, as it would over a LAN), and per host a veth
  pair: ``pb<id><c|a|b>`` on the bridge, ``eth0`` inside the namespace with
  ``10.213.N.2`` (client), ``.3`` (server-a), ``.4`` (server-b), plus ``lo`` up.

Everything is recorded in the hosts manifest (``$PROBATORIUM_STATE_DIR/hosts.json``)
BEFORE it is created, so ``probatorium cleanup`` can undo a run killed at any
instant: it kills the processes still inside the namespaces, deletes the
namespaces, the veths and the bridge. Nothing else on the machine is touched:
no sysctl, no route outside the bridge's own subnet, no firewall.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from probatorium import procs
from probatorium.errors import ProbatoriumError, UsageError
from probatorium.services.manifest import Manifest, now_iso

#: Host names of a netns cluster, in address order (.2, .3, .4).
HOSTS: tuple[str, ...] = ("client", "server-a", "server-b")
SERVER_HOSTS: tuple[str, ...] = ("server-a", "server-b")
_SHORT = {"client": "c", "server-a": "a", "server-b": "b"}
#: The /16 the clusters' /24 subnets are taken from (RFC 1918, rarely used by real LANs).
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
#: Environment variable every process a cluster starts carries (the pristine test finds strays by it).
CLUSTER_ENV = "PROBATORIUM_CLUSTER"

T = TypeVar("T")


class NetnsError(ProbatoriumError):
    """Creating or using the namespaces failed (not root, no ``ip``, the kernel refused)."""


def ip_binary() -> str:
    """Path of iproute2's ``ip``; NetnsError naming the package when it is missing."""
    found = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.path.exists(p)),
                                       None)
    if found is None:
        raise NetnsError("the netns driver needs iproute2's `ip` (apt-get install iproute2)")
    return found


def exec_prefix(namespace: str) -> list[str]:
    """The argv prefix that runs a command inside network namespace `namespace` (it execs in place)."""
    return [ip_binary(), "netns", "exec", namespace]


def check_can_create() -> None:
    """NetnsError unless this process may create network namespaces (root on Linux)."""
    if not os.uname().sysname == "Linux":
        raise NetnsError("the netns driver needs Linux network namespaces")
    if os.geteuid() != 0:
        raise NetnsError("the netns driver creates network namespaces and veth pairs: run it as root")
    ip_binary()


def _run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([ip_binary(), *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


@dataclass
class Cluster:
    """One netns cluster: names and addresses of its hosts (see the module docstring)."""

    run_id: str
    subnet: str
    entry_id: str = ""
    namespaces: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    bridge: str = ""
    veths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def plan(cls, run_id: str, subnet: str) -> Cluster:
        net = ipaddress.ip_network(subnet)
        hosts = list(net.hosts())
        short = run_id[:6]
        return cls(run_id=run_id, subnet=subnet, entry_id=f"netns-{run_id}",
                   namespaces={h: f"pb-{short}-{h}" for h in HOSTS},
                   addresses={h: str(hosts[i + 1]) for i, h in enumerate(HOSTS)},
                   bridge=f"pb{short}br", veths={h: f"pb{short}{_SHORT[h]}" for h in HOSTS})

    @property
    def gateway(self) -> str:
        """The bridge's address in the root namespace (where the controller reaches the hosts from)."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def exec_argv(self, host: str) -> list[str]:
        """The prefix that runs a command inside `host`'s namespace."""
        return exec_prefix(self.namespaces[host])

    def as_entry(self) -> dict:
        return {"id": self.entry_id, "kind": "netns", "run_id": self.run_id, "subnet": self.subnet,
                "namespaces": self.namespaces, "addresses": self.addresses, "bridge": self.bridge,
                "veths": self.veths}

    @classmethod
    def from_entry(cls, entry: dict) -> Cluster:
        return cls(run_id=entry["run_id"], subnet=entry["subnet"], entry_id=entry["id"],
                   namespaces=dict(entry["namespaces"]), addresses=dict(entry["addresses"]),
                   bridge=entry["bridge"], veths=dict(entry["veths"]))


def hosts_manifest() -> Manifest:
    """The manifest of what the multi-host drivers created (beside the services' manifest)."""
    return Manifest(name="hosts")


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    done = _run_ip("-o", "-4", "addr", "show", check=False)
    used = set()
    for line in done.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return used


def _free_subnet(run_id: str, taken: set[str]) -> str:
    used = _subnets_in_use()
    subnets = list(SUPERNET.subnets(new_prefix=24))
    start = zlib.crc32(run_id.encode()) % len(subnets)
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if str(net) not in taken and not any(net.overlaps(u) for u in used):
            return str(net)
    raise NetnsError(f"no free /24 left in {SUPERNET} for a netns cluster")


def create_cluster(run_id: str, manifest: Manifest | None = None, owner_pid: int | None = None) -> Cluster:
    """Record, then create, the namespaces, bridge and veths of a cluster; undone on any failure."""
    check_can_create()
    manifest = manifest or hosts_manifest()
    owner = owner_pid or os.getpid()

    def reserve(entries: list[dict]) -> Cluster:
        taken = {e.get("subnet", "") for e in entries if e.get("state") == "running"}
        cluster = Cluster.plan(run_id, _free_subnet(run_id, taken))
        entries.append({**cluster.as_entry(), "state": "running", "started_at": now_iso(),
                        "owner_pid": owner, "owner_start_ticks": procs.procfs.start_ticks(owner)})
        return cluster

    cluster = manifest.update(reserve)
    assert isinstance(cluster, Cluster)
    try:
        _build(cluster)
    except BaseException:
        destroy_cluster(cluster, manifest)
        raise
    return cluster


def _build(cluster: Cluster) -> None:
    prefix = ipaddress.ip_network(cluster.subnet).prefixlen
    _run_ip("link", "add", cluster.bridge, "type", "bridge")
    _run_ip("addr", "add", f"{cluster.gateway}/{prefix}", "dev", cluster.bridge)
    _run_ip("link", "set", cluster.bridge, "up")
    for host in HOSTS:
        ns, outer = cluster.namespaces[host], cluster.veths[host]
        _run_ip("netns", "add", ns)
        _run_ip("link", "add", outer, "type", "veth", "peer", "name", f"{outer}p")
        _run_ip("link", "set", f"{outer}p", "netns", ns)
        _run_ip("link", "set", outer, "master", cluster.bridge)
        _run_ip("link", "set", outer, "up")
        inside = ["-n", ns]
        _run_ip(*inside, "link", "set", f"{outer}p", "name", "eth0")
        _run_ip(*inside, "addr", "add", f"{cluster.addresses[host]}/{prefix}", "dev", "eth0")
        _run_ip(*inside, "link", "set", "eth0", "up")
        _run_ip(*inside, "link", "set", "lo", "up")


def namespace_pids(namespace: str) -> list[int]:
    """Processes whose network namespace is `namespace` (empty when it does not exist)."""
    done = _run_ip("netns", "pids", namespace, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _kill_namespace_processes(namespace: str, grace: float = 3.0) -> int:
    """SIGTERM, then SIGKILL, every process inside `namespace`; returns how many there were."""
    pids = namespace_pids(namespace)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in namespace_pids(namespace):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if procs.wait_until(lambda: not namespace_pids(namespace), timeout=wait):
            break
    return len(pids)


def destroy_cluster(cluster: Cluster, manifest: Manifest | None = None, hosts: tuple[str, ...] = HOSTS) -> list[str]:
    """Undo `cluster` (or only `hosts` of it); returns one line per thing done. Idempotent."""
    manifest = manifest or hosts_manifest()
    lines: list[str] = []
    for host in hosts:
        ns = cluster.namespaces[host]
        if (NETNS_DIR / ns).exists():
            killed = _kill_namespace_processes(ns)
            _run_ip("netns", "del", ns, check=False)
            lines.append(f"{host}: removed namespace {ns}" + (f" (stopped {killed} process(es))" if killed else ""))
        if _link_exists(cluster.veths[host]):
            _run_ip("link", "del", cluster.veths[host], check=False)
    left = [h for h in HOSTS if (NETNS_DIR / cluster.namespaces[h]).exists()]
    if not left:
        if _link_exists(cluster.bridge):
            _run_ip("link", "del", cluster.bridge, check=False)
            lines.append(f"removed bridge {cluster.bridge} ({cluster.subnet})")
        manifest.mark(cluster.entry_id, state="stopped", stopped_at=now_iso())
    return lines


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def recorded_clusters(manifest: Manifest | None = None) -> list[tuple[Cluster, dict]]:
    """Clusters the hosts manifest says are still there, with their entries."""
    manifest = manifest or hosts_manifest()
    return [(Cluster.from_entry(e), e) for e in manifest.running() if e.get("kind") == "netns"]


def owner_alive(entry: dict) -> bool:
    return procs.same_process(entry.get("owner_pid"), entry.get("owner_start_ticks"))


# --------------------------------------------------------------------------
# doing things inside a namespace from this process


_libc = ctypes.CDLL(None, use_errno=True)


def in_namespace(namespace: str, fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread that joined `namespace` (network namespaces are per thread).

    Sockets `fn` creates belong to that namespace for good; the calling
    thread's namespace is never changed.
    """
    box: dict[str, object] = {}

    def job() -> None:
        try:
            fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            box["error"] = NetnsError(f"network namespace {namespace}: {exc.strerror}")
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                box["error"] = NetnsError(f"setns({namespace}): {os.strerror(ctypes.get_errno())}")
                return
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=job, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def wait_reachable(address: str, port: int, timeout: float, namespace: str | None = None) -> bool:
    """Whether ``address:port`` accepts a TCP connection within `timeout` s (from `namespace` if given)."""
    import socket

    def attempt() -> bool:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (in_namespace(namespace, attempt) if namespace else attempt()):
            return True
        time.sleep(0.1)
    return False


def placement_from_env() -> tuple[str, str] | None:
    """(namespace, address) a target must be started in, from the netns driver's environment."""
    ns = os.environ.get("PROBATORIUM_TARGET_NETNS")
    addr = os.environ.get("PROBATORIUM_TARGET_ADDR")
    if not ns and not addr:
        return None
    if not ns or not addr:
        raise UsageError("PROBATORIUM_TARGET_NETNS and PROBATORIUM_TARGET_ADDR go together (set by --driver netns)")
    return ns, addr


def parse_host_names(text: str | None) -> tuple[str, ...] | None:
    """CLEANUP_HOSTS / --hosts: None for all, else the named hosts (UsageError on an empty list)."""
    if text is None or text.strip() in ("", "all"):
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UsageError(f"--hosts {text!r} names no host; give all or a csv of host names")
    return names


def cleanup_netns(hosts: tuple[str, ...] | None = None, include_live: bool = False,
                  manifest: Manifest | None = None) -> list[str]:
    """Remove the netns clusters whose run is gone (all of them with `include_live`); `hosts` limits
    it to those host names. Only what the hosts manifest records is touched. One line per thing done."""
    manifest = manifest or hosts_manifest()
    out: list[str] = []
    for cluster, entry in recorded_clusters(manifest):
        label = f"netns cluster {cluster.run_id}"
        if not include_live and owner_alive(entry):
            out.append(f"{label}: left running (its run pid {entry.get('owner_pid')} is alive)")
            continue
        chosen = HOSTS if hosts is None else tuple(h for h in HOSTS if h in hosts)
        if not chosen:
            continue
        done = destroy_cluster(cluster, manifest, chosen)
        out += [f"{label}: {line}" for line in done] or [f"{label}: nothing left"]
    return out
