"""``validate --driver netns``: the validation run once per server host, one document each.

The controller (this process) creates the netns cluster, then for every server
host starts ``probatorium validate`` inside the client namespace with the
target placed in that server's namespace (PROBATORIUM_TARGET_NETNS / _ADDR,
read by the launcher) and the results named after the host
(PROBATORIUM_HOST_NAME: ``host_arch_pair`` = ``server-a-amd64``). With
``VALIDATE_PARALLEL=1`` the hosts run at the same time. Each host writes its
own schema 5.1 document under ``results/<ts>-validate-matrix-<host>-<arch>/``;
``validate-diff`` then compares the newest document of each host.

The cluster is removed when the run ends, however it ends; a run killed with
SIGKILL leaves it in the hosts manifest for ``probatorium cleanup``. Child
runs are started with PR_SET_PDEATHSIG, so they (and their targets) die with
the controller.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TextIO

from probatorium import procs
from probatorium.errors import UsageError
from probatorium.hosts.netns import CLUSTER_ENV, SERVER_HOSTS, Cluster, create_cluster, destroy_cluster
from probatorium.results.schema import normalize_arch
from probatorium.results.store import run_folder, sanitize_name

DRIVERS = ("local", "netns", "ansible")


@dataclass
class HostRun:
    """One server host's part of a multi-host run: what ran and what it wrote."""

    host: str
    out_dir: Path
    exit_code: int | None = None
    summary: dict | None = None  # the child's --json object, when the controller was asked for JSON
    error: str = ""

    @property
    def document(self) -> Path:
        return self.out_dir / "validate-results.json"


@dataclass
class HostRequest:
    """What the command line asked of a multi-host validate run."""

    driver: str
    forwarded: list[str]  # validate's own flags, passed to each host's run
    hosts: tuple[str, ...]
    parallel: bool
    matrix: bool
    results_dir: Path
    out: Path | None
    json_out: bool
    env: dict[str, str] = field(default_factory=dict)


#: The original README's PROBATORIUM_VALIDATE_DRIVER=ssh is what the ansible driver does here.
ALIASES = {"ssh": "ansible"}


def check_driver(name: str) -> str:
    """The driver `name` stands for; UsageError naming the drivers for an unknown one."""
    name = ALIASES.get(name, name)
    if name not in DRIVERS:
        raise UsageError(f"unknown driver {name!r}; drivers: {', '.join(DRIVERS)} (ssh: the same as ansible)")
    return name


def pick_hosts(wanted: str | None, known: tuple[str, ...] = SERVER_HOSTS) -> tuple[str, ...]:
    """The server hosts a run targets: VALIDATE_TARGET / --target-host (csv, or ``all``)."""
    if not wanted or wanted.strip() in ("", "all"):
        return known
    chosen = tuple(dict.fromkeys(h.strip() for h in wanted.split(",") if h.strip()))
    unknown = [h for h in chosen if h not in known]
    if unknown:
        raise UsageError(f"unknown target host {', '.join(unknown)}; server hosts are {', '.join(known)}")
    return chosen


def host_out_dir(request: HostRequest, host: str, arch: str | None = None) -> Path:
    """``--out D`` → ``D/<host>``; else a fresh results folder named after the host and its arch."""
    if request.out is not None:
        return request.out / sanitize_name(host)
    kind = "validate-matrix" if request.matrix else "validate"
    return run_folder(request.results_dir, kind, f"{sanitize_name(host)}-{arch or normalize_arch()}")


class _Relay:
    """Copies a child's lines to ours, prefixed with the host (JSON stdout is kept, not printed)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.stdout: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, pipe, sink: TextIO, keep: bool) -> None:
        def pump() -> None:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if keep:
                    self.stdout.append(line)
                    continue
                with self._lock:
                    print(f"[{self.host}] {line}", file=sink, flush=True)
            pipe.close()

        thread = threading.Thread(target=pump, daemon=True, name=f"relay-{self.host}")
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=10)


class Interrupt:
    """SIGINT/SIGTERM during a multi-host run: ask every child to finish (SIGINT), once; again: kill."""

    def __init__(self) -> None:
        self.children: list[procs.Spawned] = []
        self.count = 0
        self._lock = threading.Lock()

    def add(self, spawned: procs.Spawned) -> None:
        with self._lock:
            self.children.append(spawned)

    def __call__(self, signum, frame) -> None:
        self.count += 1
        sig = signal.SIGINT if self.count == 1 else signal.SIGKILL
        with self._lock:
            for child in self.children:
                procs.signal_process(child.identity, sig)


def run_child(run: HostRun, argv: list[str], env: dict[str, str], json_out: bool, interrupt: Interrupt) -> HostRun:
    """Run one host's validate to its end, relaying its output; fills exit_code/summary."""
    relay = _Relay(run.host)
    spawned = procs.spawn(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    interrupt.add(spawned)
    relay.start(spawned.popen.stdout, sys.stdout, keep=json_out)
    relay.start(spawned.popen.stderr, sys.stderr, keep=False)
    run.exit_code = spawned.popen.wait()
    relay.join()
    if json_out:
        text = "\n".join(relay.stdout).strip()
        try:
            run.summary = json.loads(text) if text else None
        except ValueError:
            run.error = f"its --json output was not JSON: {text[:200]!r}"
    return run


def run_hosts(runs: list[HostRun], start: Callable[[HostRun], HostRun], parallel: bool) -> list[HostRun]:
    """Run every host's part, at the same time when `parallel` (VALIDATE_PARALLEL=1)."""
    if not parallel or len(runs) < 2:
        return [start(run) for run in runs]
    with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="host") as pool:
        return list(pool.map(start, runs))


def validate_argv(forwarded: list[str], out_dir: Path, json_out: bool, python: str = sys.executable) -> list[str]:
    argv = [python, "-m", "probatorium.cli", "validate", *forwarded, "--out", str(out_dir)]
    return argv + (["--json"] if json_out else [])


@contextmanager
def netns_cluster(interrupt: Interrupt) -> Iterator[Cluster]:
    """A netns cluster for the length of the block, with SIGINT/SIGTERM handed to `interrupt`; removed however it ends."""
    run_id = secrets.token_hex(4)
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    cluster: Cluster | None = None
    try:
        cluster = create_cluster(run_id)
        print(f"netns cluster {run_id}: {cluster.subnet} — "
              + ", ".join(f"{h} {cluster.addresses[h]}" for h in cluster.namespaces), file=sys.stderr, flush=True)
        yield cluster
    finally:
        if cluster is not None:
            for line in destroy_cluster(cluster):
                print(f"netns cluster {run_id}: {line}", file=sys.stderr, flush=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def host_env(cluster: Cluster, host: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one server host's child run: the target placed in its namespace, named after it."""
    return {**os.environ, **(extra or {}), "PROBATORIUM_VALIDATE_DRIVER": "local",
            "PROBATORIUM_TARGET_NETNS": cluster.namespaces[host],
            "PROBATORIUM_TARGET_ADDR": cluster.addresses[host],
            "PROBATORIUM_HOST_NAME": host, CLUSTER_ENV: cluster.run_id}


def run_netns(request: HostRequest) -> list[HostRun]:
    """The netns driver: cluster up, one validate per server host from the client namespace, cluster down."""
    interrupt = Interrupt()
    with netns_cluster(interrupt) as cluster:
        runs = [HostRun(host, host_out_dir(request, host)) for host in request.hosts]
        for run in runs:
            run.out_dir.mkdir(parents=True, exist_ok=True)

        def start(run: HostRun) -> HostRun:
            env = host_env(cluster, run.host, request.env)
            env.pop("VALIDATE_PARALLEL", None)
            argv = cluster.exec_argv("client") + validate_argv(request.forwarded, run.out_dir, request.json_out)
            return run_child(run, argv, env, request.json_out, interrupt)

        return run_hosts(runs, start, request.parallel)


def exit_code(runs: list[HostRun]) -> int:
    """2 if any host could not run, else 1 if any host failed its gate, else 0."""
    for r in runs:
        if r.exit_code in (0, 1) and not r.document.is_file() and not r.error:
            r.error = "it wrote no result document"
    codes = [r.exit_code if r.exit_code is not None else 2 for r in runs]
    if any(c not in (0, 1) for c in codes) or any(r.error for r in runs):
        return 2
    return max(codes, default=0)
