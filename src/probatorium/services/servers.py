"""The three servers: how to prepare, start, health-check and address each.

Each definition is small and data-like; the lifecycle (ports, manifest,
stopping, directories) lives in :mod:`probatorium.services.manager`.
Health checks speak each server's real protocol: ``pg_isready`` and then
``psql -c 'select 1'`` for PostgreSQL, ``PING`` for Redis, ``version`` for
memcached.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from probatorium.services.base import BinFinder, ServiceUnavailable
from probatorium import procs
from probatorium.procs import listening_pids_ok

HOST = "127.0.0.1"


class NotReadyYet(Exception):
    """The server is up but not answering yet; the health loop retries."""


@dataclass
class StartContext:
    service: str
    dir: Path                      # the throw-away directory (removed afterwards)
    port: int
    user: pwd.struct_passwd | None  # run as this account (when we are root)
    bins: dict[str, str]
    host: str = HOST
    extra: dict = field(default_factory=dict)
    #: Keep acknowledged writes across a SIGKILL (Tier 3); False: tuned for throw-away data.
    durable: bool = False

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def popen_user_kwargs(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)


def _tool_env() -> dict[str, str]:
    """A clean environment for helper programs (no user PG* settings leak in)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
           "PGCONNECT_TIMEOUT": "3"}
    return env


def _exchange(host: str, port: int, payload: bytes, until: bytes, timeout: float = 1.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(payload)
        buf = b""
        while until not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


class ServerDef:
    name = ""
    stop_signal = signal.SIGTERM
    death_signal = signal.SIGTERM

    def binaries(self, finder: BinFinder) -> dict[str, str]:
        raise NotImplementedError

    def prepare(self, ctx: StartContext, death_signal: int | None, timeout: float) -> None:
        """One-time set-up of the directory before the server starts."""

    def argv(self, ctx: StartContext) -> list[str]:
        raise NotImplementedError

    def probe(self, ctx: StartContext) -> str:
        """One health attempt: return the server version or raise NotReadyYet."""
        raise NotImplementedError

    def env(self, ctx: StartContext) -> dict[str, str]:
        raise NotImplementedError


class Postgres(ServerDef):
    """PostgreSQL from the host's packages, as an unprivileged user.

    Tuned for throw-away test data: fsync, synchronous_commit and
    full_page_writes off (all three on when started ``durable``, as Tier 3
    does), small shared_buffers, TCP on 127.0.0.1 only, the unix socket
    inside the data directory, dynamic shared memory as files in the
    data directory (nothing left in /dev/shm if the server is SIGKILLed).
    """

    name = "postgres"
    # fast shutdown: disconnects clients, no waiting for them to leave
    stop_signal = signal.SIGINT
    # if probatorium dies: immediate shutdown (postmaster still removes its shm)
    death_signal = signal.SIGQUIT
    superuser = "probatorium"
    database = "probatorium"

    def binaries(self, finder: BinFinder) -> dict[str, str]:
        bins = finder.require("postgres", "initdb", "postgres")
        # the client tools of the same installation when present
        bin_dir = os.path.dirname(bins["postgres"])
        bins.update(finder.require("postgres", "pg_isready", "psql", prefer_dir=bin_dir,
                                   package="postgresql-client"))
        return bins

    def prepare(self, ctx: StartContext, death_signal: int | None, timeout: float) -> None:
        ctx.data_dir.mkdir(mode=0o700)
        ctx.chown(ctx.data_dir)
        argv = [ctx.bins["initdb"], "-D", str(ctx.data_dir), "-U", self.superuser, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        with open(ctx.dir / "initdb.log", "wb") as log:
            initdb = procs.spawn(argv, death_signal=death_signal, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=ctx.dir, env=_tool_env(), **ctx.popen_user_kwargs())
            try:
                rc = initdb.popen.wait(timeout=timeout)
            except BaseException:
                procs.stop(initdb, grace=0.0)
                raise
        if rc != 0:
            tail = (ctx.dir / "initdb.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise ServiceUnavailable("postgres", f"service postgres: initdb failed (exit {rc}): "
                                                 f"{tail[0] if tail else 'no output'}")

    def argv(self, ctx: StartContext) -> list[str]:
        settings = {
            "listen_addresses": ctx.host, "port": str(ctx.port),
            "unix_socket_directories": str(ctx.data_dir),
            **self.durability(ctx.durable),
            "shared_buffers": "16MB", "max_connections": "200",
            "dynamic_shared_memory_type": "mmap", "max_wal_size": "256MB",
            "checkpoint_timeout": "1h", "autovacuum": "off",
            "logging_collector": "off", "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] ", "jit": "off",
        }
        argv = [ctx.bins["postgres"], "-D", str(ctx.data_dir)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        return argv

    @staticmethod
    def durability(durable: bool) -> dict[str, str]:
        """A commit is acknowledged once it is on disk (durable), or fast and lost on a crash."""
        on = "on" if durable else "off"
        return {"fsync": on, "synchronous_commit": on, "full_page_writes": on}

    def _psql(self, ctx: StartContext, db: str, sql: str) -> subprocess.CompletedProcess:
        return subprocess.run([ctx.bins["psql"], "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", ctx.host, "-p", str(ctx.port), "-U", self.superuser, "-d", db,
                               "-c", sql],
                              capture_output=True, text=True, timeout=10, env=_tool_env(),
                              stdin=subprocess.DEVNULL)

    def probe(self, ctx: StartContext) -> str:
        ready = subprocess.run([ctx.bins["pg_isready"], "-q", "-h", ctx.host, "-p", str(ctx.port),
                                "-U", self.superuser, "-d", "postgres", "-t", "1"],
                               capture_output=True, timeout=5, env=_tool_env(), stdin=subprocess.DEVNULL)
        if ready.returncode != 0:
            raise NotReadyYet("pg_isready")
        if not ctx.extra.get("db_created"):
            made = self._psql(ctx, "postgres", f"CREATE DATABASE {self.database}")
            if made.returncode != 0 and "already exists" not in made.stderr:
                raise NotReadyYet(made.stderr.strip() or "create database failed")
            ctx.extra["db_created"] = True
        res = self._psql(ctx, self.database, "select 1, current_setting('server_version')")
        if res.returncode != 0:
            raise NotReadyYet(res.stderr.strip() or "select 1 failed")
        one, _, version = res.stdout.strip().partition("|")
        if one != "1":
            raise NotReadyYet(f"select 1 answered {res.stdout.strip()!r}")
        return version.strip()

    def env(self, ctx: StartContext) -> dict[str, str]:
        return {"DATABASE_URL": f"postgresql://{self.superuser}@{ctx.host}:{ctx.port}/{self.database}"}


class Redis(ServerDef):
    """redis-server without persistence, or (``durable``) with an append-only file fsynced on
    every write: an acknowledged write survives a SIGKILL."""

    name = "redis"

    def binaries(self, finder: BinFinder) -> dict[str, str]:
        return finder.require("redis", "redis-server")

    def prepare(self, ctx: StartContext, death_signal: int | None, timeout: float) -> None:
        ctx.data_dir.mkdir(mode=0o700)
        ctx.chown(ctx.data_dir)

    def argv(self, ctx: StartContext) -> list[str]:
        return [ctx.bins["redis-server"], "--port", str(ctx.port), "--bind", ctx.host,
                "--protected-mode", "yes", "--daemonize", "no", "--supervised", "no",
                "--save", "", *self.durability(ctx.durable), "--dir", str(ctx.data_dir),
                "--logfile", "", "--loglevel", "warning", "--databases", "16",
                "--maxclients", "1000"]

    @staticmethod
    def durability(durable: bool) -> list[str]:
        """appendfsync always: the reply to a write is sent after the AOF is fsynced."""
        return ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]

    def probe(self, ctx: StartContext) -> str:
        try:
            pong = _exchange(ctx.host, ctx.port, b"*1\r\n$4\r\nPING\r\n", b"\r\n")
        except OSError as e:
            raise NotReadyYet(str(e)) from None
        if not pong.startswith(b"+PONG"):
            raise NotReadyYet(f"PING answered {pong[:60]!r}")
        info = _exchange(ctx.host, ctx.port, b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n", b"redis_version:")
        for line in info.decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def env(self, ctx: StartContext) -> dict[str, str]:
        return {"REDIS_URL": f"redis://{ctx.host}:{ctx.port}/0"}


class Memcached(ServerDef):
    """memcached: a cache, never durable (``durable`` changes nothing)."""

    name = "memcached"

    def binaries(self, finder: BinFinder) -> dict[str, str]:
        return finder.require("memcached", "memcached")

    def argv(self, ctx: StartContext) -> list[str]:
        argv = [ctx.bins["memcached"], "-l", ctx.host, "-p", str(ctx.port), "-U", "0",
                "-m", "64", "-c", "1024", "-t", "2"]
        if ctx.user is None and os.geteuid() == 0:  # memcached refuses root without -u
            argv += ["-u", "nobody"]
        return argv

    def probe(self, ctx: StartContext) -> str:
        try:
            answer = _exchange(ctx.host, ctx.port, b"version\r\n", b"\r\n")
        except OSError as e:
            raise NotReadyYet(str(e)) from None
        if not answer.startswith(b"VERSION "):
            raise NotReadyYet(f"version answered {answer[:60]!r}")
        return answer[8:].strip().decode(errors="replace")

    def env(self, ctx: StartContext) -> dict[str, str]:
        return {"MEMCACHED_ADDR": f"{ctx.host}:{ctx.port}"}


SERVERS: dict[str, ServerDef] = {d.name: d for d in (Postgres(), Redis(), Memcached())}


def wait_healthy(server: ServerDef, ctx: StartContext, proc: subprocess.Popen, timeout: float) -> str:
    """Probe until healthy; raise on exit or timeout. Returns the version."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    delay = 0.01
    while True:
        if proc.poll() is not None:
            raise ServerExited(proc.returncode)
        try:
            # Only probe once OUR process holds the listening socket: whatever
            # else sits on the port (we lost a race for it) must not answer for it.
            if listening_pids_ok(proc.pid, ctx.port) is False:
                raise NotReadyYet(f"port {ctx.port} not listened on by pid {proc.pid}")
            return server.probe(ctx)
        except NotReadyYet as e:
            last = str(e)
        except (OSError, subprocess.SubprocessError) as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(server.name, f"service {server.name} did not become healthy within "
                                                  f"{timeout:.0f}s ({last}); log: {ctx.log_path}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class ServerExited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"exit {code}")
        self.code = code
