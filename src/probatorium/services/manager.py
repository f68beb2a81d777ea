"""ServiceManager: start real backing services, hand out their addresses,
stop them and remove their directories — also after Ctrl-C, and (via the
manifest and the parent-death signal) after the validator is killed.

Typical use::

    with ServiceManager() as services:
        infos = services.up(["postgres", "redis"])
        env = services.env()          # DATABASE_URL, REDIS_URL for the target
        ...
    # every process stopped, every directory removed

``detached=True`` (the ``probatorium services up`` command) leaves the
services running after the process exits; they are recorded in the manifest
and stopped by ``stop_recorded`` / ``probatorium services down`` or
``cleanup_manifest`` / ``probatorium cleanup``.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from probatorium.errors import InfraError
from probatorium import procs
from probatorium.services.base import (
    MARKER,
    BinFinder,
    ServiceInfo,
    ServiceStatus,
    ServiceUnavailable,
    normalise_names,
    prune_default_root,
    remove_tree,
    service_user,
    services_root,
)
from probatorium.services.manifest import Manifest, now_iso
from probatorium.services.servers import HOST, SERVERS, ServerExited, StartContext, wait_healthy

PORT_ATTEMPTS = 4


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class _Running:
    info: ServiceInfo
    entry_id: str
    popen: subprocess.Popen | None
    start_ticks: int | None
    ctx: StartContext


# Strong references: a manager dropped without down() still stops its services at exit.
_live_managers: "set[ServiceManager]" = set()


@atexit.register
def _stop_at_exit() -> None:  # a manager nobody closed still stops its services
    if not _live_managers:
        return
    # A Ctrl-C that lands while the interpreter is already exiting would abort the stop half way
    # and leave a data directory (or a live postmaster) behind; the process is ending anyway.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for m in list(_live_managers):
            try:
                m.down()
            except Exception:  # pragma: no cover - best effort at interpreter exit
                pass
    finally:
        signal.signal(signal.SIGINT, previous)


class ServiceManager:
    def __init__(self, *, root: str | os.PathLike | None = None, manifest: Manifest | None = None,
                 state_dir: str | os.PathLike | None = None, bin_dirs: list[str] | str | None = None,
                 detached: bool = False, die_with_parent: bool = True, start_timeout: float = 60.0,
                 stop_grace: float = 5.0, reap_stale: bool = True, durable: bool = False) -> None:
        self._root_arg = root
        #: Start postgres / redis so acknowledged writes survive a SIGKILL (Tier 3); the default
        #: keeps the fast throw-away tuning of Tier 1 and the bench. memcached is never durable.
        self.durable = durable
        self.manifest = manifest or Manifest(state_dir)
        self.finder = BinFinder(bin_dirs)
        self.detached = detached
        self.die_with_parent = die_with_parent and not detached
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.reap_stale = reap_stale
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._reaped = False

    # -- context manager -------------------------------------------------
    def __enter__(self) -> "ServiceManager":
        return self

    def __exit__(self, *exc) -> None:
        if not self.detached:
            self.down()

    # -- queries -----------------------------------------------------------
    def unavailable(self, names) -> dict[str, str]:
        """Services among ``names`` that cannot start here → the one-line reason.
        Callers mark the cells that need them ``not_run`` with that reason."""
        out: dict[str, str] = {}
        for name in normalise_names(names):
            try:
                SERVERS[name].binaries(self.finder)
                service_user(name)
            except ServiceUnavailable as e:
                out[name] = str(e)
        return out

    def info(self, name: str) -> ServiceInfo | None:
        r = self._running.get(name)
        return r.info if r else None

    def env(self, names=None) -> dict[str, str]:
        """The merged environment variables of the running services."""
        wanted = normalise_names(names) if names is not None else list(self._running)
        env: dict[str, str] = {}
        for name in wanted:
            r = self._running.get(name)
            if r:
                env.update(r.info.env)
        return env

    def status(self) -> list[ServiceStatus]:
        out = []
        for name, r in list(self._running.items()):
            alive = procs.same_process(r.info.pid, r.start_ticks)
            healthy = None
            if alive:
                try:
                    SERVERS[name].probe(r.ctx)
                    healthy = True
                except Exception:
                    healthy = False
            out.append(ServiceStatus(name=name, pid=r.info.pid, port=r.info.port, data_dir=r.info.data_dir,
                                     alive=alive, healthy=healthy, env=dict(r.info.env),
                                     detached=self.detached, owner_pid=os.getpid(),
                                     started_at=r.info.started_at))
        return out

    # -- lifecycle ---------------------------------------------------------
    def up(self, names) -> dict[str, ServiceInfo]:
        """Start (or reuse) each named service; all healthy on return.

        Raises ServiceUnavailable naming the Debian package when a binary is
        missing — checked for every name before anything starts. If one
        service fails, the ones this call started are stopped again.
        """
        wanted = normalise_names(names)
        with self._lock:
            bins = {}
            for name in wanted:
                if name not in self._running:
                    bins[name] = SERVERS[name].binaries(self.finder)
                    service_user(name)
            if self.reap_stale and not self._reaped:
                self._reaped = True
                try:
                    cleanup_manifest(self.manifest, stale_only=True)
                except Exception:  # never block a run on history
                    pass
            started: list[str] = []
            if not self.detached:
                _live_managers.add(self)
            try:
                for name in wanted:
                    if name in self._running:
                        continue
                    self._running[name] = self._start(name, bins[name])
                    started.append(name)
            except BaseException:
                for name in reversed(started):
                    self._stop(name)
                raise
            return {name: self._running[name].info for name in wanted}

    def down(self, names=None) -> list[str]:
        """Stop the named (default: all) services this manager started and
        remove their directories. Returns one line per service."""
        with self._lock:
            wanted = list(self._running) if names is None else [n for n in normalise_names(names)
                                                                if n in self._running]
            if len(wanted) == len(self._running):
                _live_managers.discard(self)
            try:
                return self._down(wanted)
            finally:
                if self._root_arg is None:
                    prune_default_root()

    def _down(self, wanted: list[str]) -> list[str]:
        if len(wanted) <= 1:
            return [self._stop(name) for name in wanted]
        results: dict[str, str] = {}

        def one(name: str) -> None:
            try:
                results[name] = self._stop(name)
            except Exception as e:  # pragma: no cover - reported, never raised mid-teardown
                results[name] = f"{name}: stop failed: {e}"

        threads = [threading.Thread(target=one, args=(n,), name=f"stop-{n}") for n in wanted]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [results[n] for n in reversed(wanted)]

    def identity(self, name: str) -> procs.Identity | None:
        """The identity (pid + start time) of a running service's main process, None if not running."""
        r = self._running.get(name)
        return procs.Identity(r.info.pid, r.start_ticks) if r else None

    def restart(self, name: str) -> ServiceInfo:
        """Stop a running service's processes (whatever their state) and start it again on the
        same port and data directory; healthy on return. A planned fault: targets.control calls it."""
        with self._lock:
            r = self._running[name]
            server = SERVERS[name]
            procs.stop_process_group(r.info.pid, r.info.pgid, r.start_ticks, stop_signal=server.stop_signal,
                                     grace=self.stop_grace, popen=r.popen, directory=r.info.data_dir)
            spawned = self._spawn(server.argv(r.ctx), r.ctx, server)
            self._running[name] = _Running(info=dataclasses.replace(r.info, pid=spawned.pid, pgid=spawned.pid),
                                           entry_id=r.entry_id, popen=spawned.popen,
                                           start_ticks=spawned.identity.start_ticks, ctx=r.ctx)
            self.manifest.mark(r.entry_id, pid=spawned.pid, pgid=spawned.pid,
                               start_ticks=spawned.identity.start_ticks)
            wait_healthy(server, r.ctx, spawned.popen, self.start_timeout)
            return self._running[name].info

    # -- internals ---------------------------------------------------------
    def _start(self, name: str, bins: dict[str, str]) -> _Running:
        server = SERVERS[name]
        user = service_user(name)
        t0 = time.monotonic()
        for attempt in range(3):
            root = services_root(self._root_arg)
            try:
                service_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
                break
            except FileNotFoundError:  # another run pruned the empty default root just now
                if attempt == 2:
                    raise
        (service_dir / MARKER).write_text(f"{name} owner={os.getpid()}\n")
        entry_id = uuid.uuid4().hex
        owner_ticks = procs.procfs.start_ticks(os.getpid())
        # recorded before anything runs: a kill at any later instant is undoable
        self.manifest.add({
            "id": entry_id, "kind": "service", "service": name, "state": "running",
            "pid": None, "pgid": None, "start_ticks": None, "cmdline": None,
            "user": user.pw_name if user else None, "data_dir": str(service_dir), "port": None,
            "env": {}, "started_at": now_iso(), "owner_pid": os.getpid(),
            "owner_start_ticks": owner_ticks, "detached": self.detached,
        })
        popen = None
        try:
            if user is not None:
                os.chown(service_dir, user.pw_uid, user.pw_gid)
            ctx = StartContext(service=name, dir=service_dir, port=0, user=user, bins=bins, durable=self.durable)
            procs.SPAWNER.run(server.prepare, ctx, self._death_signal(server), self.start_timeout)
            last_exit = None
            for _attempt in range(PORT_ATTEMPTS):
                ctx.port = free_port(ctx.host)
                argv = server.argv(ctx)
                log_offset = ctx.log_path.stat().st_size if ctx.log_path.exists() else 0
                spawned = self._spawn(argv, ctx, server)
                popen, start_ticks = spawned.popen, spawned.identity.start_ticks
                self.manifest.mark(entry_id, pid=popen.pid, pgid=popen.pid, start_ticks=start_ticks,
                                   cmdline=argv, port=ctx.port)
                try:
                    version = wait_healthy(server, ctx, popen, self.start_timeout)
                    break
                except ServerExited as e:
                    last_exit = e.code
                    log = _log_tail(ctx.log_path)
                    if _port_taken(ctx.log_path, log_offset):  # lost the port race: try another port
                        popen = None
                        continue
                    raise ServiceUnavailable(name, f"service {name} exited at start (exit {e.code}): {log}")
            else:
                raise ServiceUnavailable(name, f"service {name} could not bind a free port "
                                               f"(exit {last_exit}): {_log_tail(ctx.log_path)}")
            env = server.env(ctx)
            info = ServiceInfo(name=name, host=ctx.host, port=ctx.port, pid=popen.pid, data_dir=str(service_dir),
                               env=env, version=version, pgid=popen.pid, user=user.pw_name if user else "",
                               started_at=now_iso(), start_seconds=time.monotonic() - t0,
                               log_path=str(ctx.log_path))
            self.manifest.mark(entry_id, env=env, version=version)
            return _Running(info=info, entry_id=entry_id, popen=popen, start_ticks=start_ticks, ctx=ctx)
        except BaseException as e:
            pid = popen.pid if popen is not None else None
            if pid:
                procs.stop_process_group(pid, pid, procs.procfs.start_ticks(pid), stop_signal=server.stop_signal,
                                         grace=self.stop_grace, popen=popen, directory=service_dir)
            _kill_leftover_group_from_manifest(self.manifest, entry_id)
            if procs.processes_in_dir(service_dir):
                procs.stop_process_group(0, 0, None, grace=2.0, directory=service_dir)
            removed = remove_tree(service_dir)
            self.manifest.mark(entry_id, state="stopped", stopped_at=now_iso(),
                               stop_result=f"start failed: {type(e).__name__}", dir_removed=removed)
            if isinstance(e, (ServiceUnavailable, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(e, OSError):
                raise ServiceUnavailable(name, f"service {name} could not start: {e}") from None
            raise

    def _death_signal(self, server) -> int | None:
        return server.death_signal if self.die_with_parent else None

    def _spawn(self, argv: list[str], ctx: StartContext, server) -> procs.Spawned:
        log = open(ctx.log_path, "ab")
        try:
            return procs.spawn(argv, death_signal=self._death_signal(server), stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT, cwd=ctx.dir, env=_server_env(),
                               close_fds=True, **ctx.popen_user_kwargs())
        finally:
            log.close()

    def _stop(self, name: str) -> str:
        r = self._running.pop(name, None)
        if r is None:
            return f"{name}: not running"
        server = SERVERS[name]
        result = procs.stop_process_group(r.info.pid, r.info.pgid, r.start_ticks, stop_signal=server.stop_signal,
                                          grace=self.stop_grace, popen=r.popen, directory=r.info.data_dir)
        if r.popen is not None:
            try:
                r.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        removed = remove_tree(r.info.data_dir)
        self.manifest.mark(r.entry_id, state="stopped", stopped_at=now_iso(), stop_result=result,
                           dir_removed=removed)
        return f"{name}: {result} pid {r.info.pid}, {'removed' if removed else 'could not remove'} {r.info.data_dir}"


def _server_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}


def _log_tail(path: Path, lines: int = 2) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in text[-lines:]) or "no output"


def _port_taken(path: Path, offset: int) -> bool:
    """Did the attempt whose log starts at ``offset`` fail to bind its port?"""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace").lower()
    except OSError:
        return False
    return "address already in use" in text or "eaddrinuse" in text


def _kill_leftover_group_from_manifest(manifest: Manifest, entry_id: str) -> None:
    for e in manifest.read():
        if e.get("id") == entry_id and e.get("pid"):
            procs.stop_process_group(e["pid"], e.get("pgid") or e["pid"], e.get("start_ticks"),
                                     grace=1.0, directory=e.get("data_dir"))


# -- manifest-driven stop and cleanup ---------------------------------------

def _entry_alive(e: dict) -> bool:
    pid = e.get("pid")
    if not pid:
        return False
    return procs.same_process(pid, e.get("start_ticks")) or bool(
        procs.group_members(e.get("pgid") or pid, e.get("start_ticks")))


def _owner_alive(e: dict) -> bool:
    return procs.same_process(e.get("owner_pid"), e.get("owner_start_ticks"))


def _undo_entry(manifest: Manifest, e: dict, how: str) -> str:
    name = e.get("service", "?")
    pid = e.get("pid")
    parts = []
    if pid:
        stop_signal = SERVERS[name].stop_signal if name in SERVERS else 15
        result = procs.stop_process_group(pid, e.get("pgid") or pid, e.get("start_ticks"),
                                          stop_signal=stop_signal, grace=5.0, directory=e.get("data_dir"))
        parts.append(f"{result} pid {pid}")
    elif e.get("data_dir") and os.path.exists(os.path.join(e["data_dir"], MARKER)):
        strays = procs.processes_in_dir(e["data_dir"])
        if strays:  # killed between spawn and recording the pid
            procs.stop_process_group(0, 0, None, grace=5.0, directory=e["data_dir"])
            parts.append(f"stopped {len(strays)} unrecorded process(es)")
    if name == "postgres" and e.get("data_dir"):
        shm = _remove_postgres_shm(Path(e["data_dir"]) / "data" / "postmaster.pid")
        if shm:
            parts.append(shm)
    d = e.get("data_dir")
    removed = None
    if d:
        existed = os.path.exists(d)
        removed = remove_tree(d)
        if existed:
            parts.append(("removed " if removed else "could not remove (no marker) ") + d)
    manifest.mark(e["id"], state="stopped", stopped_at=now_iso(), stop_result=how, dir_removed=removed)
    return f"{name}: " + (", ".join(parts) if parts else "nothing left") + f" ({how})"


def _remove_postgres_shm(pidfile: Path) -> str | None:
    """A SIGKILLed postmaster leaves its small System V segment; remove it when
    nobody is attached and key + id match what its postmaster.pid recorded."""
    try:
        lines = pidfile.read_text().splitlines()
        key_s, shmid_s = lines[6].split()
        key, shmid = int(key_s), int(shmid_s)
    except (OSError, IndexError, ValueError):
        return None
    try:
        table = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return None
    for row in table:
        cols = row.split()
        if len(cols) > 6 and int(cols[1]) == shmid and int(cols[0]) == key and int(cols[6]) == 0:
            libc = procs.libc
            if libc is not None and libc.shmctl(shmid, 0, None) == 0:  # IPC_RMID
                return f"removed shm segment {shmid}"
    return None


def stop_recorded(names=None, manifest: Manifest | None = None) -> list[str]:
    """Stop services recorded as running that no live run owns: the detached
    ones of ``services up`` and the leftovers of dead runs."""
    manifest = manifest or Manifest()
    wanted = normalise_names(names)
    out = []
    for e in manifest.running():
        if e.get("service") not in wanted:
            continue
        if not e.get("detached") and _owner_alive(e):
            continue  # a live validator's service: not ours to stop
        out.append(_undo_entry(manifest, e, "services down"))
    prune_default_root()
    return out


def recorded_status(manifest: Manifest | None = None) -> list[ServiceStatus]:
    manifest = manifest or Manifest()
    out = []
    for e in manifest.running():
        alive = _entry_alive(e)
        healthy = None
        name = e.get("service")
        if alive and name in SERVERS and e.get("port"):
            ctx = StartContext(service=name, dir=Path(e["data_dir"]), port=e["port"], user=None, bins={})
            try:
                if name == "postgres":
                    ctx.bins = SERVERS[name].binaries(BinFinder())
                    ctx.extra["db_created"] = True
                SERVERS[name].probe(ctx)
                healthy = True
            except Exception:
                healthy = False
        out.append(ServiceStatus(name=name, pid=e.get("pid"), port=e.get("port"), data_dir=e.get("data_dir", ""),
                                 alive=alive, healthy=healthy, env=dict(e.get("env") or {}),
                                 detached=bool(e.get("detached")), owner_pid=e.get("owner_pid"),
                                 started_at=e.get("started_at", "")))
    return out


def cleanup_manifest(manifest: Manifest | None = None, *, include_live: bool = False,
                     stale_only: bool = False) -> list[str]:
    """Undo what killed runs left behind: stop recorded processes that are
    still the same process (PID + start time), remove recorded directories,
    mark the entries stopped. Returns one line per thing done.

    Services of a run that is still alive are left alone (reported) unless
    ``include_live``. ``stale_only`` also leaves detached services alone (what
    a new run does on start to reap earlier crashes).
    """
    manifest = manifest or Manifest()
    out = []
    for e in manifest.running():
        if not include_live and not e.get("detached") and _owner_alive(e):
            if not stale_only:
                out.append(f"{e.get('service')}: left running (its run pid {e.get('owner_pid')} is alive)")
            continue
        if stale_only and e.get("detached"):
            continue
        out.append(_undo_entry(manifest, e, "cleanup"))
    prune_default_root()
    return out


def ensure_no_leftovers(infos) -> list[str]:
    """For tests and audits: what of these services still exists."""
    left = []
    for i in infos:
        if procs.procfs.is_running(i.pid):
            left.append(f"{i.name}: pid {i.pid} alive")
        if os.path.exists(i.data_dir):
            left.append(f"{i.name}: {i.data_dir} exists")
    return left


__all__ = ["ServiceManager", "cleanup_manifest", "stop_recorded", "recorded_status", "free_port",
           "ensure_no_leftovers", "InfraError"]
