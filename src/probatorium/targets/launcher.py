"""Start (or reach) the server under test, know where it listens, and never
leave it behind.

Every process probatorium starts:

- gets a free loopback port chosen here (refapp/app, ``cmd`` with
  ``{port}``) or announces one with a ``ready addr=HOST:PORT`` line (``cmd``);
- runs in its own session/process group, so ``stop()`` signals the engine
  AND its workers (hypercorn and granian serve from child processes);
- is started with ``PR_SET_PDEATHSIG=SIGKILL`` on Linux so it dies if the
  validator is SIGKILLed; for refapp/app targets a tiny ``sitecustomize``
  extends that to the engine's worker processes, which the kernel would
  otherwise leave orphaned (the death signal is not inherited);
- has stdout/stderr captured to ``log_dir/stdout.log`` and ``stderr.log``;
- is registered for ``stop_all()``, which runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import http.client
import os
import re
import shlex
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from probatorium import procs
from probatorium.errors import ProbatoriumError, TargetStartError, UsageError
from probatorium.hosts.agent_client import AgentClient, agent_from_env
from probatorium.hosts.netns import exec_prefix, in_namespace, placement_from_env
from probatorium.targets.engines import HOST, engine_argv, engine_versions, resolve_engine
from probatorium.targets.refapps import refapp_app_target
from probatorium.targets.safety import check_target_allowed

KINDS = ("refapp", "app", "cmd", "url")
READY_PREFIX = "ready addr="
#: Start attempts when the chosen port turns out to be taken (a race with
#: another process between our probe bind and the engine's bind).
START_ATTEMPTS = 3
POLL_INTERVAL = 0.05
#: Lines of the failing attempt's stderr quoted in a TargetStartError.
ERROR_TAIL_LINES = 5

_BIND_FAILURE = re.compile(
    r"address already in use|eaddrinuse|errno 98|os error 98|errno 48", re.IGNORECASE
)
_ROOT_PID_ENV = "PROBATORIUM_TARGET_ROOT_PID"

# Runs at start-up of every Python process of a refapp/app target (it is put
# first on PYTHONPATH). The engine's main process records its pid; its direct
# children (workers spawned or forked by the engine, multiprocessing's
# resource tracker) then ask for SIGKILL when that main process dies. Only
# direct children of the main process are covered on purpose: the death
# signal fires when the creating THREAD exits, and an app that starts
# subprocesses from worker threads must not see them killed by our doing.
# Any sitecustomize the environment already had is chained afterwards.
_CHILD_HOOK_SOURCE = '''\
"""Written by probatorium: engine workers die with the engine (PR_SET_PDEATHSIG)."""


def _probatorium_death_signal():
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    var = "%(root_var)s"
    raw = os.environ.get(var)
    if raw is None:
        root = os.getpid()
        os.environ[var] = str(root)
    else:
        try:
            root = int(raw)
        except ValueError:
            return

    def arm():
        if os.getpid() != root and os.getppid() == root:
            prctl(%(pdeathsig)d, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != root:  # the main process died before we armed
                os.kill(os.getpid(), signal.SIGKILL)

    arm()
    os.register_at_fork(after_in_child=arm)


def _probatorium_chain():
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_probatorium_death_signal()
_probatorium_chain()
''' % {"root_var": _ROOT_PID_ENV, "pdeathsig": procs.PR_SET_PDEATHSIG}


@dataclass
class TargetSpec:
    """What to test and how to reach it (one of four kinds).

    ``refapp``/``app`` are served by ``engine``; ``cmd`` is any command line
    (``{port}`` is replaced by a free port, or the command prints
    ``ready addr=HOST:PORT``; ``{host}`` by the address to bind: loopback, or a
    server host's address under ``--driver netns``); ``url`` is a server that is
    already running.
    ``app_dir`` is where ``module:attr`` is imported from (default: the
    current directory) and, for ``cmd``, the working directory.
    """

    kind: str
    engine: str = "auto"
    refapp: str | None = None
    app: str | None = None
    app_dir: str | None = None
    cmd: str | None = None
    url: str | None = None
    health_path: str = "/healthz"
    env: dict[str, str] = field(default_factory=dict)
    allow_remote: bool = False
    ready_timeout: float = 30.0
    #: CPUs the target is started on (sched_setaffinity in the child before exec), so
    #: runtimes that size their thread pools at start (Go's GOMAXPROCS, libuv, nginx
    #: worker_processes auto) see the bench's server CPUs, not the whole machine.
    cpus: tuple[int, ...] | None = None

    def cell_engine(self) -> str:
        """The engine name a result cell carries: resolved engine, or ``cmd``/``url``."""
        if self.kind in ("refapp", "app"):
            return resolve_engine(self.engine)
        return self.kind

    def describe(self) -> str:
        """One-line name for messages, e.g. ``refapp kitchen_sink on hypercorn``."""
        if self.kind == "refapp":
            return f"refapp {self.refapp} on {self.cell_engine()}"
        if self.kind == "app":
            return f"app {self.app} on {self.cell_engine()}"
        if self.kind == "cmd":
            return f"cmd {self.cmd!r}"
        return f"url {self.url}"


def placeable(spec: TargetSpec) -> bool:
    """Whether the netns driver can start `spec` on a server host (bound to that host's address).

    refapp/app targets: always (the engine is given the address); ``cmd``: when its
    command line takes both ``{host}`` and ``{port}``, so it binds where it is told.
    """
    if spec.kind in ("refapp", "app"):
        return True
    return spec.kind == "cmd" and "{host}" in (spec.cmd or "") and "{port}" in (spec.cmd or "")


def _validate(spec: TargetSpec) -> None:
    if spec.kind not in KINDS:
        raise UsageError(f"unknown target kind {spec.kind!r}; valid kinds: {', '.join(KINDS)}")
    if spec.kind == "refapp":
        if not spec.refapp:
            raise UsageError("a refapp target needs a refapp slug")
        refapp_app_target(spec.refapp)  # UsageError naming the available refapps
    elif spec.kind == "app":
        module, _, attr = (spec.app or "").partition(":")
        if not module or not attr:
            raise UsageError(f"--app must be 'module:attr', got {spec.app!r}")
    elif spec.kind == "cmd":
        if not spec.cmd or not shlex.split(spec.cmd):
            raise UsageError("a cmd target needs a non-empty command")
    elif not spec.url:
        raise UsageError("a url target needs a URL")
    if spec.kind in ("refapp", "app"):
        spec.cell_engine()  # UsageError on an unknown engine, before any process starts
    if spec.app_dir is not None and spec.kind in ("app", "cmd") and not Path(spec.app_dir).is_dir():
        raise UsageError(f"app dir {spec.app_dir!r} is not a directory")
    if spec.ready_timeout <= 0:
        raise UsageError(f"ready timeout must be positive, got {spec.ready_timeout}")
    if not spec.health_path.startswith("/"):
        raise UsageError(f"health path must start with '/', got {spec.health_path!r}")


# --------------------------------------------------------------------------
# process plumbing


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def free_port(host: str = HOST) -> int:
    """A port that was free on `host` a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_bindable(host: str, port: int) -> bool:
    """Whether a server could bind `port` now.

    SO_REUSEADDR as servers use it: connections of a previous run lingering
    in TIME_WAIT do not make the port busy, another listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


_HOOK_LOCK = threading.Lock()


def _child_hook_dir() -> Path:
    """The folder holding the worker death-signal ``sitecustomize.py``.

    A per-user cache folder named after the hook's content: written once,
    shared by every run, nothing to clean up (a run killed with SIGKILL must
    not leave a folder behind each time). Not /tmp: a folder another user
    could create there would put their code on our children's PYTHONPATH.
    """
    digest = hashlib.sha256(_CHILD_HOOK_SOURCE.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = cache / "probatorium" / f"child-hook-{digest}"
    hook = directory / "sitecustomize.py"
    with _HOOK_LOCK:
        if hook.is_file() and hook.read_text() == _CHILD_HOOK_SOURCE:
            return directory
        directory.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: a concurrent run never imports half a file.
        fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(_CHILD_HOOK_SOURCE)
        os.replace(temporary, hook)
        return directory


def _read_lines_from(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()


def _tail(path: Path, n: int, offset: int = 0) -> list[str]:
    """The last `n` lines of `path` after byte `offset` (reads only the end)."""
    try:
        size = path.stat().st_size
    except OSError:
        return []
    block = 64 * 1024
    start = max(offset, size - block)
    while True:
        lines = _read_lines_from(path, start)
        if start == offset or len(lines) > n:
            return lines[-n:] if n > 0 else []
        start = max(offset, start - block)
        block *= 2


def _parse_ready_line(line: str) -> tuple[str, int] | None:
    text = line.strip()
    if not text.startswith(READY_PREFIX):
        return None
    addr = text[len(READY_PREFIX):].split()[0] if text[len(READY_PREFIX):].split() else ""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = int(port_text)
    if not 0 < port < 65536:
        return None
    # A wildcard bind listens on loopback too; talk to it there.
    if host in ("0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, port


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_target_url(url: str) -> tuple[str, int]:
    """(host, port) of a ``--url`` origin such as ``http://127.0.0.1:8000``; UsageError saying what is wrong."""
    text = url.strip()
    if "://" not in text:
        raise UsageError(f"--url {url!r} has no scheme: write it as http://{text.rstrip('/')}")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "http":
        raise UsageError(f"only http:// targets are supported, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"the target URL must be an origin like http://127.0.0.1:8000, got {url!r}")
    try:
        host, port = parts.hostname, parts.port or 80
    except ValueError as exc:
        raise UsageError(f"bad target URL {url!r}: {exc}") from exc
    if not host:
        raise UsageError(f"bad target URL {url!r}: no host")
    return host, port


#: Flags whose value names the port a command listens on: ``--port 8080``, ``-b 127.0.0.1:8080``.
_PORT_FLAGS = ("--port", "-p", "--bind", "-b", "--listen", "-l", "--addr", "--address", "--http")


def port_on_command_line(argv: list[str]) -> int | None:
    """The fixed port a ``--cmd`` names (``--port N``, ``--bind HOST:N``, or a bare ``N``), if any.

    Used only when the command has no ``{port}``: probatorium then probes that
    port as well as watching stdout for the ready line.
    """
    def as_port(value: str) -> int | None:
        tail = value.rpartition(":")[2] if ":" in value else value
        return int(tail) if tail.isdigit() and 0 < int(tail) < 65536 else None

    for i, arg in enumerate(argv[1:], 1):
        name, eq, value = arg.partition("=")
        if name in _PORT_FLAGS:
            found = as_port(value) if eq else (as_port(argv[i + 1]) if i + 1 < len(argv) else None)
            if found is not None:
                return found
    for i, arg in enumerate(argv[1:], 1):  # e.g. `python3 -m http.server 8080`
        if arg.isdigit() and 1024 <= int(arg) < 65536 and not argv[i - 1].startswith("-"):
            return int(arg)
    return None


class _StdoutPump:
    """Copies a child's stdout pipe to stdout.log and watches for the ready line."""

    def __init__(self, pipe: IO[bytes], log_path: Path) -> None:
        self.ready = threading.Event()
        self.addr: tuple[str, int] | None = None
        self._pipe = pipe
        self._log_path = log_path
        self._thread = threading.Thread(target=self._run, name="probatorium-stdout", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._log_path.open("ab") as log:
            for raw in iter(self._pipe.readline, b""):
                log.write(raw)
                log.flush()
                if self.addr is None:
                    parsed = _parse_ready_line(raw.decode("utf-8", errors="replace"))
                    if parsed is not None:
                        self.addr = parsed
                        self.ready.set()
        self._pipe.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


# --------------------------------------------------------------------------
# running targets

_TARGETS: set[RunningTarget] = set()
_TARGETS_LOCK = threading.Lock()


class RunningTarget:
    """A target that is up (or was): where it listens, its process, its logs."""

    def __init__(self, spec: TargetSpec, log_dir: Path) -> None:
        self.spec = spec
        self.engine = spec.cell_engine()
        self.log_dir = log_dir
        self.stdout_path = log_dir / "stdout.log"
        self.stderr_path = log_dir / "stderr.log"
        #: (network namespace, address) when the netns driver runs this target on a server "host".
        self.placement = placement_from_env() if placeable(spec) else None
        self.bind_host = self.placement[1] if self.placement else HOST
        self.host = self.bind_host
        self.port = 0
        self.base_url = ""
        self.pid: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        #: The process and its identity (pid + start time): what stop() and TargetControl signal.
        self.spawned: procs.Spawned | None = None
        self.versions: dict[str, str] = (
            engine_versions(self.engine) if spec.kind in ("refapp", "app") else {}
        )
        #: True once stop() was asked for: an exit from then on is ours, not a crash.
        self.stopping = False
        self.starts = 0
        self._lock = threading.RLock()
        self._pump: _StdoutPump | None = None
        self._stderr_offset = 0
        self._chose_port = spec.kind != "cmd" or "{port}" in (spec.cmd or "")
        #: A ``--cmd`` without ``{port}`` that names a fixed port: probed besides the ready line.
        self._named_port = None if self._chose_port else port_on_command_line(shlex.split(spec.cmd or ""))
        #: Where "waiting for …" lines go (the CLI's progress), or nowhere.
        self.progress = None

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(f"  {self.spec.describe()}: {message}")

    def __repr__(self) -> str:
        return f"<RunningTarget {self.spec.describe()} at {self.base_url or '-'} pid={self.pid}>"

    # -- state ---------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the started process is still running (url targets: always True)."""
        if self.spec.kind == "url":
            return True
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        """The process's exit status (negative = killed by that signal), None while running."""
        if self.process is None:
            return None
        return self.process.poll()

    def stderr_tail(self, n: int = 200) -> list[str]:
        """The last `n` lines of stderr.log (all starts of this target)."""
        return _tail(self.stderr_path, n)

    # -- lifecycle -----------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, wait up to `grace` s, then SIGKILL it. Idempotent."""
        with self._lock:
            self.stopping = True
            if self.spawned is not None:
                procs.stop(self.spawned, grace=grace)
            if self._pump is not None:
                self._pump.join(timeout=1.0)
                self._pump = None
        with _TARGETS_LOCK:
            _TARGETS.discard(self)

    def restart(self, grace: float = 5.0) -> None:
        """Stop (see stop()), then start again on the same port when it is free.

        Falls back to a new port (``port``/``base_url`` change) when another
        process took it meanwhile; a ``cmd`` with a ready line picks its own.
        Raises TargetStartError like start_target(); url targets cannot restart.
        """
        with self._lock:
            if self.spec.kind == "url":
                raise TargetStartError(f"{self.spec.describe()}: a url target cannot be restarted")
            self.stop(grace)
            self._launch(preferred_port=self.port or None)

    # -- starting ------------------------------------------------------------

    def _connect_url(self) -> None:
        assert self.spec.url is not None
        host, port = parse_target_url(self.spec.url)
        check_target_allowed(host, self.spec.allow_remote)
        self.host, self.port = host, port
        self.base_url = f"http://{_url_host(host)}:{port}"
        deadline = time.monotonic() + self.spec.ready_timeout
        if not _accepts_tcp(host, port):
            self._say(f"waiting up to {self.spec.ready_timeout:g} s for a server to accept connections on "
                      f"{host}:{port} (--url; start it first, or change --ready-timeout)")
        while not _accepts_tcp(host, port):
            if time.monotonic() >= deadline:
                raise TargetStartError(
                    f"{self.spec.describe()}: nothing accepts connections on {host}:{port} "
                    f"(waited {self.spec.ready_timeout:g} s)"
                )
            time.sleep(POLL_INTERVAL)
        with _TARGETS_LOCK:
            _TARGETS.add(self)

    def _argv(self, port: int | None) -> tuple[list[str], str | None]:
        """The command line and working directory for one start (inside the placement's namespace, if any)."""
        argv, cwd = self._command(port)
        return (exec_prefix(self.placement[0]) + argv if self.placement is not None else argv), cwd

    def _command(self, port: int | None) -> tuple[list[str], str | None]:
        spec = self.spec
        if spec.kind == "cmd":
            assert spec.cmd is not None
            argv = [arg.replace("{host}", self.bind_host) for arg in shlex.split(spec.cmd)]
            if port is not None:
                argv = [arg.replace("{port}", str(port)) for arg in argv]
            return argv, spec.app_dir
        if spec.kind == "refapp":
            assert spec.refapp is not None
            app, app_dir = refapp_app_target(spec.refapp)
        else:
            assert spec.app is not None
            app, app_dir = spec.app, Path(spec.app_dir or os.getcwd())
        assert port is not None
        return engine_argv(self.engine, app, port, str(app_dir.resolve()), host=self.bind_host), str(app_dir.resolve())

    def _in_place(self, fn):
        """Run a port probe where the target will listen: its namespace, or here."""
        return in_namespace(self.placement[0], fn) if self.placement is not None else fn()

    def _environment(self, cwd: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.spec.env)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop(_ROOT_PID_ENV, None)  # never inherit a stale engine root
        if self.spec.kind in ("refapp", "app") and cwd is not None:
            paths = [str(_child_hook_dir()), cwd]
            if env.get("PYTHONPATH"):
                paths.append(env["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def _launch(self, preferred_port: int | None = None) -> None:
        """Start the process and wait until it is ready; retry when the port was taken."""
        spec = self.spec
        uses_ready_line = not self._chose_port
        for attempt in range(1, START_ATTEMPTS + 1):
            port: int | None = None
            if not uses_ready_line:
                # Readiness is "the port accepts connections": a port someone
                # else listens on would look ready at once, so never reuse a
                # busy one.
                bind = self.bind_host
                if attempt == 1 and preferred_port and self._in_place(lambda: _port_bindable(bind, preferred_port)):
                    port = preferred_port
                else:
                    port = self._in_place(lambda: free_port(bind))
            if uses_ready_line and self._named_port and self.starts == 0 \
                    and not _port_bindable(HOST, self._named_port):
                raise TargetStartError(
                    f"{spec.describe()}: port {self._named_port} named on its command line is already in use "
                    f"by another process (stop it, or use {{port}} and let probatorium choose)"
                )
            try:
                self._spawn(port, attempt)
                self._wait_ready(uses_ready_line)
            except _PortTaken:
                self._abandon()
                if attempt == START_ATTEMPTS:
                    raise TargetStartError(
                        f"{spec.describe()}: could not bind a free port in {START_ATTEMPTS} "
                        f"attempts: {self._error_tail()}"
                    ) from None
                continue
            except BaseException:
                # Never leave a process behind, whatever went wrong (including ^C).
                self._abandon()
                raise
            with _TARGETS_LOCK:
                _TARGETS.add(self)
            return

    def _spawn(self, port: int | None, attempt: int) -> None:
        argv, cwd = self._argv(port)
        env = self._environment(cwd)
        self.starts += 1
        banner = (
            f"=== probatorium: start {self.starts} (attempt {attempt}) of "
            f"{self.spec.describe()} at {_now_iso()} ===\n"
        ).encode()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        uses_pipe = port is None
        with self.stdout_path.open("ab") as out_log, self.stderr_path.open("ab") as err_log:
            for log in (out_log, err_log):
                log.write(banner)
                log.flush()
            self._stderr_offset = err_log.tell()
            try:
                spawned = procs.spawn(argv, cpus=self.spec.cpus, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE if uses_pipe else out_log, stderr=err_log)
            except OSError as exc:
                raise TargetStartError(
                    f"{self.spec.describe()}: cannot run {argv[0]!r}: {exc}"
                ) from exc
        process = spawned.popen
        self.spawned = spawned
        self.process = process
        self.pid = process.pid
        # Only now: until the new process is in place, the old one's exit is ours.
        self.stopping = False
        self._pump = None
        if uses_pipe:
            assert process.stdout is not None
            self._pump = _StdoutPump(process.stdout, self.stdout_path)
        if port is not None:
            self.host, self.port = self.bind_host, port
            self.base_url = f"http://{_url_host(self.bind_host)}:{port}"

    def _wait_ready(self, uses_ready_line: bool) -> None:
        spec = self.spec
        process = self.process
        assert process is not None
        deadline = time.monotonic() + spec.ready_timeout
        if uses_ready_line:
            assert self._pump is not None
            named = self._named_port
            if self.starts == 1:
                self._say(f"no {{port}} in the command: waiting up to {spec.ready_timeout:g} s for a "
                          f"'{READY_PREFIX}HOST:PORT' line on its stdout"
                          + (f" or for port {named} (named on its command line) to accept connections"
                             if named else ""))
            while not self._pump.ready.wait(POLL_INTERVAL):
                self._check_running()
                if named is not None and _accepts_tcp(HOST, named):
                    break
                if time.monotonic() >= deadline:
                    what = (f"and nothing accepted connections on port {named} named on its command line"
                            if named else "and its command line has no {port} and names no port to probe")
                    raise TargetStartError(
                        f"{spec.describe()}: printed no '{READY_PREFIX}HOST:PORT' line within "
                        f"{spec.ready_timeout:g} s {what}: {self._error_tail()}"
                    )
            host, port = self._pump.addr if self._pump.addr is not None else (HOST, named)
            check_target_allowed(host, spec.allow_remote)
            self.host, self.port = host, port
            self.base_url = f"http://{_url_host(host)}:{port}"
        while not _accepts_tcp(self.host, self.port):
            self._check_running()
            if time.monotonic() >= deadline:
                raise TargetStartError(
                    f"{spec.describe()}: not accepting connections on {self.host}:{self.port} "
                    f"after {spec.ready_timeout:g} s: {self._error_tail()}"
                )
            time.sleep(POLL_INTERVAL)
        if spec.kind in ("refapp", "app"):
            # Engines that listen in a supervisor and serve from a worker
            # (hypercorn, granian) accept TCP before the app is even imported;
            # only an HTTP answer (any status) proves the app loaded.
            while not _answers_http(self.host, self.port, spec.health_path, deadline):
                self._check_running()
                if time.monotonic() >= deadline:
                    raise TargetStartError(
                        f"{spec.describe()}: accepted connections on {self.host}:{self.port} but "
                        f"answered no HTTP request within {spec.ready_timeout:g} s: {self._error_tail()}"
                    )
                time.sleep(POLL_INTERVAL)
            self._check_running()

    def _check_running(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return
        # Let the stderr writer finish before quoting it.
        time.sleep(POLL_INTERVAL)
        tail = self._error_tail()
        if self._chose_port and _BIND_FAILURE.search(tail):
            raise _PortTaken()
        raise TargetStartError(
            f"{self.spec.describe()} exited with status {code} before it was ready: {tail}"
        )

    def _error_tail(self) -> str:
        lines = [line.strip() for line in _tail(self.stderr_path, ERROR_TAIL_LINES, self._stderr_offset)]
        lines = [line for line in lines if line]
        return " | ".join(lines) if lines else "(stderr is empty)"

    def _abandon(self) -> None:
        """Kill whatever this failed start left running, without grace.

        ``stopping`` stays set: a target that failed to start is down on
        purpose as far as a watchdog is concerned; the caller got the error.
        """
        self.stop(grace=0.0)


class _PortTaken(Exception):
    """The engine could not bind the port we picked (someone else took it)."""


def _accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _answers_http(host: str, port: int, path: str, deadline: float) -> bool:
    timeout = max(0.1, min(2.0, deadline - time.monotonic()))
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read(65536)
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def start_target(spec: TargetSpec, log_dir: Path, progress=None, bind_host: str | None = None) -> RunningTarget:
    """Start (or reach) the target `spec` describes and return once it is ready.

    Raises UsageError for a bad spec or a refused non-loopback host, and
    TargetStartError (one line: the target's name and the last stderr lines)
    when it exits or is not ready within ``spec.ready_timeout``. Logs go to
    `log_dir`/stdout.log and stderr.log (truncated here, appended on restart).
    `bind_host` (the host agent's traffic address) replaces loopback as the address a
    refapp/app target (or a cmd's ``{host}``) listens on. With PROBATORIUM_TARGET_AGENT set
    (--driver ansible), a refapp/app target, or a cmd with ``{host}`` and ``{port}`` (the bench's
    Python competitors on gunicorn, aiohttp, sanic), is started by that server host's agent
    instead (RemoteTarget).
    """
    _validate(spec)
    log_dir = Path(log_dir)
    remote_kind = spec.kind in ("refapp", "app") or (spec.kind == "cmd" and placeable(spec))
    agent = agent_from_env() if remote_kind and bind_host is None else None
    if agent is not None:
        return start_remote(spec, log_dir, agent)
    target = RunningTarget(spec, log_dir)
    if bind_host is not None and remote_kind:
        target.bind_host = target.host = bind_host
    target.progress = progress
    if spec.kind == "url":
        target._connect_url()
        return target
    log_dir.mkdir(parents=True, exist_ok=True)
    for path in (target.stdout_path, target.stderr_path):
        path.write_bytes(b"")
    target._launch()
    return target


def running_targets() -> list[RunningTarget]:
    """Targets started and not stopped yet."""
    with _TARGETS_LOCK:
        return list(_TARGETS)


def stop_all(grace: float = 5.0) -> None:
    """Stop every target still running (atexit and the CLI's signal handlers call this)."""
    for target in running_targets():
        try:
            target.stop(grace)
        except Exception:  # noqa: BLE001 - keep stopping the others
            pass


atexit.register(stop_all)


# --------------------------------------------------------------------------
# remote targets: started on a server host by its agent (--driver ansible)


class RemoteProcess:
    """The agent's word on the remote target's process, shaped like the Popen the watchdog polls.

    ``poll()`` is the exit status once the agent saw the process end, None while it runs
    (or while the agent cannot be asked: a host that stops answering shows as I-HANG, not as
    a death). Answers are cached for a second: several observers poll.
    """

    def __init__(self, target: RemoteTarget) -> None:
        self._target = target
        self.pid = target.remote_pid
        self._at = 0.0
        self._code: int | None = None

    def poll(self) -> int | None:
        now = time.monotonic()
        if now - self._at >= 1.0:
            self._at = now
            try:
                state = self._target.agent.call("GET", f"/targets/{self._target.id}/state", timeout=5)
                self._code = None if state.get("alive") else state.get("exit_code")
            except ProbatoriumError:
                pass
        return self._code


class RemoteTarget:
    """A refapp/app (or placeable cmd) target another host's agent runs: reached over the network, no process here.

    It quacks like RunningTarget for the cell (address, versions, stop, restart), with
    ``pid``/``spawned`` None: every observer that reads /proc or signals a process (leak
    sampling, py-spy, Tier 3 process faults, fd-squeeze) takes the path a url target takes
    and says why with :attr:`no_process_reason`, naming the host. Only liveness comes from
    the agent (``process`` is a :class:`RemoteProcess`): it watches the process it started.
    """

    #: The watchdog may judge I-LIVENESS from ``process`` (the agent's answer).
    remote_liveness = True

    def __init__(self, spec: TargetSpec, log_dir: Path, agent: AgentClient) -> None:
        self.spec = spec
        self.engine = spec.cell_engine()
        self.log_dir = log_dir
        self.stdout_path = log_dir / "stdout.log"
        self.stderr_path = log_dir / "stderr.log"
        self.agent = agent
        self.placement = None
        self.host = self.bind_host = ""
        self.port = 0
        self.base_url = ""
        self.pid: int | None = None
        self.remote_pid: int | None = None
        self.process: RemoteProcess | None = None
        self.spawned = None
        self.versions: dict[str, str] = {}
        self.stopping = False
        self.starts = 0
        self.progress = None
        self.id = ""
        self.cpus: list[int] | None = None
        self.no_process_reason = (f"the target runs on remote host {agent.host_name} (its agent {agent.base}): "
                                  "its process and /proc cannot be read or signalled from the client host")

    def __repr__(self) -> str:
        return f"<RemoteTarget {self.spec.describe()} at {self.base_url or '-'} on {self.agent.host_name}>"

    def _where(self, answer: dict) -> None:
        self.host, self.port, self.remote_pid = str(answer["host"]), int(answer["port"]), answer.get("pid")
        self.bind_host = self.host
        self.base_url = f"http://{_url_host(self.host)}:{self.port}"
        self.starts += 1
        self.process = RemoteProcess(self)  # a new process: the watchdog reports each one's exit once
        self.stopping = False

    def start(self) -> None:
        answer = self.agent.call("POST", "/targets", {"spec": dataclasses.asdict(self.spec)},
                                 timeout=self.spec.ready_timeout + 30)
        self.id = str(answer["id"])
        self.versions = dict(answer.get("versions") or {})
        self.cpus = answer.get("cpus")  # what the agent pinned it to (those of spec.cpus its host has), or None
        self._where(answer)
        with _TARGETS_LOCK:
            _TARGETS.add(self)  # type: ignore[arg-type]

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stderr_tail(self, n: int = 200) -> list[str]:
        """The target's stderr lines, asked of the agent (empty when it cannot answer)."""
        try:
            return list(self.agent.call("GET", f"/targets/{self.id}/stderr", timeout=10).get("lines", []))[-n:]
        except ProbatoriumError:
            return []

    def stop(self, grace: float = 5.0) -> None:
        if not self.stopping and self.id:
            self.stopping = True
            try:
                self.agent.call("POST", f"/targets/{self.id}/stop", timeout=grace + 30)
            except ProbatoriumError:
                pass  # the agent is gone (cleanup stops what it recorded)
        self.stopping = True
        with _TARGETS_LOCK:
            _TARGETS.discard(self)  # type: ignore[arg-type]

    def restart(self, grace: float = 5.0) -> None:
        self.stopping = True
        self._where(self.agent.call("POST", f"/targets/{self.id}/restart", timeout=self.spec.ready_timeout + 30))
        with _TARGETS_LOCK:
            _TARGETS.add(self)  # type: ignore[arg-type]


def start_remote(spec: TargetSpec, log_dir: Path, agent: AgentClient) -> RemoteTarget:
    """Ask `agent` to start `spec` on its host; the RemoteTarget once it answers (ready there)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for path in (log_dir / "stdout.log", log_dir / "stderr.log"):
        path.write_bytes(b"")
    target = RemoteTarget(spec, log_dir, agent)
    try:
        target.start()
    except ProbatoriumError as exc:
        raise TargetStartError(f"{spec.describe()} on {agent.host_name}: {exc}") from None
    return target
