"""The target launcher and watchdog against real processes (no mocks)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from probatorium.errors import TargetStartError, UsageError
from probatorium.targets import (
    ENGINES,
    RunningTarget,
    TargetSpec,
    Watchdog,
    WatchEvent,
    check_target_allowed,
    engine_versions,
    is_loopback_host,
    list_refapps,
    refapp_app_target,
    refapp_dir,
    resolve_engine,
    running_targets,
    start_target,
)

pytestmark = pytest.mark.timeout(60)

PY = shlex.quote(sys.executable)

ASGI_APP = '''\
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"ok " + scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
'''

# A plain HTTP server: with an argument it binds that port, without one it
# binds a free port and announces it with a ready line. /crash raises, so
# socketserver prints a traceback on stderr.
HTTP_SERVER = '''\
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            raise ValueError("deliberate failure for the crash-marker test")
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
if port == 0:
    print("starting up", flush=True)
    print(f"ready addr=127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
'''

# Accepts connections and never answers: health checks time out.
HANG_SERVER = '''\
import socket, sys, time
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
held = []
while True:
    connection, _ = listener.accept()
    held.append(connection)
'''

# Accepts the launcher's readiness connection, then stops listening but stays
# alive: every health check is refused.
REFUSING_SERVER = '''\
import socket, sys, time
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
connection, _ = listener.accept()
connection.close()
listener.close()
time.sleep(120)
'''


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def is_live(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (orphans wait for init to reap them)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def pids_with_arg(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if token.encode() in (entry / "cmdline").read_bytes() and is_live(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def assert_gone(target: RunningTarget) -> None:
    assert target.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(target.pid, 0)
    assert group_members(target.pid) == []


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str, str], str]:
    def write(name: str, source: str) -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return shlex.quote(str(path))

    return write


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "asgi"
    directory.mkdir()
    (directory / "tinyapp.py").write_text(ASGI_APP)
    return directory


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    before = set(running_targets())
    yield
    leftovers = [target for target in running_targets() if target not in before]
    for target in leftovers:
        target.stop(grace=0.5)
    assert leftovers == [], f"targets left running: {leftovers}"


# --- engines ---------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_serves_app_and_stop_leaves_nothing(
    engine: str, app_dir: Path, tmp_path: Path
) -> None:
    spec = TargetSpec(kind="app", engine=engine, app="tinyapp:app", app_dir=str(app_dir))
    target = start_target(spec, tmp_path / "logs")
    try:
        assert target.engine == engine == spec.cell_engine()
        assert target.host == "127.0.0.1" and target.base_url == f"http://127.0.0.1:{target.port}"
        assert target.alive() and target.exit_code() is None
        assert get(target.base_url + "/healthz") == (200, b"ok /healthz")
        assert target.versions["python"] and engine_versions(engine) == target.versions
        members = group_members(target.pid or 0)
        assert target.pid in members
    finally:
        target.stop()
    assert not target.alive() and target.exit_code() is not None
    assert_gone(target)
    for pid in members:  # the workers of hypercorn/granian too
        assert not is_live(pid)
    target.stop()  # idempotent
    assert (tmp_path / "logs" / "stderr.log").is_file()
    assert (tmp_path / "logs" / "stdout.log").is_file()


def test_engine_registry() -> None:
    assert ENGINES == ("uvicorn", "uvicorn-h11", "hypercorn", "granian", "daphne", "uvicorn-wsproto")
    assert resolve_engine("auto") == "uvicorn"  # uvloop and httptools are installed here
    with pytest.raises(UsageError, match="granian"):
        resolve_engine("gunicorn")


def test_app_that_fails_to_import_is_a_start_error(tmp_path: Path) -> None:
    # hypercorn listens in its supervisor before the worker imports the app,
    # so TCP alone would call this target ready.
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken-app-marker')\n")
    spec = TargetSpec(kind="app", engine="hypercorn", app="broken:app", app_dir=str(tmp_path))
    with pytest.raises(TargetStartError) as failure:
        start_target(spec, tmp_path / "logs")
    message = str(failure.value)
    assert message.startswith("app broken:app on hypercorn") and "\n" not in message
    assert "broken-app-marker" in message


def test_sigkilled_validator_takes_engine_workers_with_it(app_dir: Path, tmp_path: Path) -> None:
    # The validator is stood in for by a child process that starts the
    # multi-process engines and is then SIGKILLed: no engine process survives.
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f'''\
        import sys, time
        from pathlib import Path
        from probatorium.targets import TargetSpec, start_target
        pids = []
        for engine in ("hypercorn", "granian"):
            spec = TargetSpec(kind="app", engine=engine, app="tinyapp:app", app_dir={str(app_dir)!r})
            pids.append(start_target(spec, Path({str(tmp_path)!r}) / engine).pid)
        print(*pids, flush=True)
        time.sleep(60)
    '''))
    validator = subprocess.Popen(
        [sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    pgids: list[int] = []
    try:
        assert validator.stdout is not None
        pgids = [int(pid) for pid in validator.stdout.readline().split()]
        assert len(pgids) == 2
        assert len(group_members(pgids[0])) >= 1  # hypercorn serves in-process (--workers 0)
        assert len(group_members(pgids[1])) >= 2  # granian: supervisor + worker
        validator.kill()
        validator.wait()
        assert wait_for(lambda: all(group_members(pgid) == [] for pgid in pgids), 10)
    finally:
        validator.kill()
        validator.wait()
        for pgid in pgids:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- cmd targets -----------------------------------------------------------


def test_cmd_with_port_placeholder(script: Callable[[str, str], str], tmp_path: Path) -> None:
    cmd = f"{PY} {script('server.py', HTTP_SERVER)} {{port}}"
    spec = TargetSpec(kind="cmd", cmd=cmd)
    target = start_target(spec, tmp_path / "logs")
    try:
        assert target.engine == "cmd" and spec.cell_engine() == "cmd"
        assert str(target.port) in (target.process.args if target.process else [])
        assert get(target.base_url + "/healthz")[0] == 200
    finally:
        target.stop()
    assert_gone(target)


def test_cmd_with_ready_line(script: Callable[[str, str], str], tmp_path: Path) -> None:
    cmd = f"{PY} {script('server.py', HTTP_SERVER)}"
    target = start_target(TargetSpec(kind="cmd", cmd=cmd), tmp_path / "logs")
    try:
        assert target.port > 0 and get(target.base_url + "/x")[0] == 200
        stdout = (tmp_path / "logs" / "stdout.log").read_text()
        # Everything the process printed is kept, not only the ready line.
        assert "starting up" in stdout and f"ready addr=127.0.0.1:{target.port}" in stdout
    finally:
        target.stop()
    assert_gone(target)


def test_cmd_that_exits_at_once(tmp_path: Path) -> None:
    code = "import sys; sys.stderr.write('line one\\nfatal-marker: cannot start\\n'); sys.exit(3)"
    cmd = f"{PY} -c {shlex.quote(code)}"
    with pytest.raises(TargetStartError) as failure:
        start_target(TargetSpec(kind="cmd", cmd=cmd, ready_timeout=10), tmp_path / "logs")
    message = str(failure.value)
    assert message.startswith("cmd '") and "\n" not in message
    assert "status 3" in message
    assert "line one | fatal-marker: cannot start" in message


def test_cmd_that_never_listens(tmp_path: Path) -> None:
    token = f"never-listens-{os.getpid()}-{time.monotonic_ns()}"
    cmd = f"{PY} -c 'import time; time.sleep(60)' {token} {{port}}"
    started = time.monotonic()
    with pytest.raises(TargetStartError, match="not accepting connections"):
        start_target(TargetSpec(kind="cmd", cmd=cmd, ready_timeout=0.5), tmp_path / "logs")
    assert time.monotonic() - started < 5
    assert pids_with_arg(token) == []  # the failed start left nothing running


def test_cmd_without_ready_line(tmp_path: Path) -> None:
    token = f"no-ready-line-{os.getpid()}-{time.monotonic_ns()}"
    cmd = f"{PY} -c 'import time; print(\"hello\"); time.sleep(60)' {token}"
    with pytest.raises(TargetStartError, match="ready addr="):
        start_target(TargetSpec(kind="cmd", cmd=cmd, ready_timeout=0.5), tmp_path / "logs")
    assert pids_with_arg(token) == []


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, socket, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); time.sleep(60)"
    )
    target = start_target(
        TargetSpec(kind="cmd", cmd=f"{PY} -c {shlex.quote(code)} {{port}}"), tmp_path / "logs"
    )
    started = time.monotonic()
    target.stop(grace=0.3)
    assert time.monotonic() - started < 3
    assert target.exit_code() == -signal.SIGKILL
    assert_gone(target)


def test_restart_keeps_the_port_and_moves_when_taken(
    script: Callable[[str, str], str], tmp_path: Path
) -> None:
    cmd = f"{PY} {script('server.py', HTTP_SERVER)} {{port}}"
    target = start_target(TargetSpec(kind="cmd", cmd=cmd), tmp_path / "logs")
    try:
        first_pid, port = target.pid, target.port
        target.restart()
        assert target.pid != first_pid and target.port == port
        assert get(target.base_url + "/healthz")[0] == 200
        target.stop()
        with socket.create_server(("127.0.0.1", port)):  # someone else took the port
            target.restart()
            assert target.port != port and get(target.base_url + "/healthz")[0] == 200
    finally:
        target.stop()
    assert_gone(target)


# --- url targets and safety -------------------------------------------------


def test_url_target(script: Callable[[str, str], str], tmp_path: Path) -> None:
    server = start_target(
        TargetSpec(kind="cmd", cmd=f"{PY} {script('server.py', HTTP_SERVER)} {{port}}"),
        tmp_path / "server",
    )
    try:
        spec = TargetSpec(kind="url", url=f"http://localhost:{server.port}")
        target = start_target(spec, tmp_path / "logs")
        assert spec.cell_engine() == "url" and target.pid is None and target.alive()
        assert target.base_url == f"http://localhost:{server.port}"
        target.stop()
    finally:
        server.stop()
    with pytest.raises(TargetStartError, match="nothing accepts connections"):
        start_target(
            TargetSpec(kind="url", url=f"http://127.0.0.1:{server.port}", ready_timeout=0.2),
            tmp_path / "logs2",
        )


def test_non_loopback_url_refused(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: refused before any packet is sent.
    with pytest.raises(UsageError, match="refusing non-loopback target 192.0.2.10: pass --allow-remote"):
        start_target(TargetSpec(kind="url", url="http://192.0.2.10:8080"), tmp_path)
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback_host(host), host
    for host in ("10.0.0.1", "192.0.2.10", "::ffff:10.0.0.1", "2001:db8::1", ""):
        assert not is_loopback_host(host), host
    check_target_allowed("192.0.2.10", allow_remote=True)


def test_bad_specs_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="kind"):
        start_target(TargetSpec(kind="docker"), tmp_path)
    with pytest.raises(UsageError, match="module:attr"):
        start_target(TargetSpec(kind="app", app="tinyapp"), tmp_path)
    with pytest.raises(UsageError, match="valid engines"):
        start_target(TargetSpec(kind="app", app="a:b", engine="nope"), tmp_path)
    with pytest.raises(UsageError, match="not a directory"):
        start_target(TargetSpec(kind="app", app="a:b", app_dir=str(tmp_path / "nope")), tmp_path)
    with pytest.raises(UsageError, match="origin"):
        start_target(TargetSpec(kind="url", url="http://127.0.0.1:1/api"), tmp_path)


def test_refapps_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for slug in ("zeta", "alpha", "served_only"):
        (tmp_path / slug).mkdir()
        (tmp_path / slug / "app.py").write_text("app = None\n")
        if slug != "served_only":  # the matrix discovers only complete refapps (app, openapi, markov)
            (tmp_path / slug / "openapi.yaml").write_text("paths: {}\n")
            (tmp_path / slug / "markov.yaml").write_text("states: {}\n")
    (tmp_path / "not_an_app").mkdir()
    monkeypatch.setenv("PROBATORIUM_REFAPPS_DIR", str(tmp_path))
    assert list_refapps() == ["alpha", "zeta"]
    assert refapp_dir("served_only") == tmp_path / "served_only"
    assert refapp_dir("zeta") == tmp_path / "zeta"
    assert refapp_app_target("alpha") == ("app:app", tmp_path / "alpha")
    with pytest.raises(UsageError, match="available: alpha, served_only, zeta"):
        refapp_dir("not_an_app")
    with pytest.raises(UsageError, match="available"):
        start_target(TargetSpec(kind="refapp", refapp="../zeta"), tmp_path / "logs")


def test_refapp_target_from_folder(
    app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "refapps" / "tiny").mkdir(parents=True)
    (tmp_path / "refapps" / "tiny" / "app.py").write_text(ASGI_APP)
    monkeypatch.setenv("PROBATORIUM_REFAPPS_DIR", str(tmp_path / "refapps"))
    spec = TargetSpec(kind="refapp", refapp="tiny", engine="uvicorn-h11")
    assert spec.describe() == "refapp tiny on uvicorn-h11"
    target = start_target(spec, tmp_path / "logs")
    try:
        assert get(target.base_url + "/healthz") == (200, b"ok /healthz")
    finally:
        target.stop()
    assert_gone(target)


# --- watchdog ---------------------------------------------------------------


def test_watchdog_reports_a_killed_target_once(
    script: Callable[[str, str], str], tmp_path: Path
) -> None:
    cmd = f"{PY} {script('server.py', HTTP_SERVER)} {{port}}"
    target = start_target(TargetSpec(kind="cmd", cmd=cmd), tmp_path / "logs")
    seen: list[WatchEvent] = []
    watchdog = Watchdog(target, interval=0.1, timeout=0.5, on_event=seen.append)
    watchdog.start()
    try:
        assert wait_for(lambda: watchdog.health_checks >= 2, 5)
        assert target.pid is not None
        os.kill(target.pid, signal.SIGKILL)
        assert wait_for(lambda: bool(watchdog.events), 5)
        time.sleep(0.5)  # more ticks: still one event for one exit
    finally:
        watchdog.stop()
        target.stop()
    assert [e.predicate for e in watchdog.events] == ["I-LIVENESS"]
    assert seen == watchdog.events
    assert "SIGKILL" in watchdog.events[0].detail and watchdog.events[0].at.endswith("Z")


def test_watchdog_is_quiet_across_deliberate_restart_and_records_crashes(
    script: Callable[[str, str], str], tmp_path: Path
) -> None:
    cmd = f"{PY} {script('server.py', HTTP_SERVER)} {{port}}"
    target = start_target(TargetSpec(kind="cmd", cmd=cmd), tmp_path / "logs")
    watchdog = Watchdog(target, interval=0.1, timeout=0.5)
    watchdog.start()
    try:
        watchdog.pause()
        target.restart()
        watchdog.resume()
        with pytest.raises(Exception):  # the handler raises; the server logs a traceback
            get(target.base_url + "/crash")
        assert wait_for(lambda: any("ValueError" in m for m in watchdog.crash_markers), 5)
        assert wait_for(lambda: watchdog.health_checks >= 3, 5)
        target.stop()  # a stop we asked for is not a liveness failure
        time.sleep(0.3)
    finally:
        watchdog.stop()
        target.stop()
    assert watchdog.events == []
    marker = next(m for m in watchdog.crash_markers if "ValueError" in m)
    lines = marker.splitlines()
    assert lines[0].startswith("Traceback (most recent call last)")
    assert lines[-1] == "ValueError: deliberate failure for the crash-marker test"


def test_watchdog_reports_a_hang(script: Callable[[str, str], str], tmp_path: Path) -> None:
    cmd = f"{PY} {script('hang.py', HANG_SERVER)} {{port}}"
    target = start_target(TargetSpec(kind="cmd", cmd=cmd), tmp_path / "logs")
    watchdog = Watchdog(target, interval=0.2, timeout=0.3, hang_after=4)
    watchdog.start()
    try:
        assert wait_for(lambda: bool(watchdog.events), 10)
        assert wait_for(lambda: watchdog.health_timeouts_max_streak >= 6, 10)
    finally:
        watchdog.stop()
        target.stop()
    # One I-HANG for one episode, however long the streak grows.
    assert [e.predicate for e in watchdog.events] == ["I-HANG"]
    assert "/healthz" in watchdog.events[0].detail


def test_refused_health_checks_are_not_a_hang(
    script: Callable[[str, str], str], tmp_path: Path
) -> None:
    cmd = f"{PY} {script('refuse.py', REFUSING_SERVER)} {{port}}"
    target = start_target(TargetSpec(kind="cmd", cmd=cmd), tmp_path / "logs")
    watchdog = Watchdog(target, interval=0.05, timeout=0.3, hang_after=2)
    watchdog.start()
    try:
        assert wait_for(lambda: watchdog.health_checks >= 8, 5)
        assert target.alive()
    finally:
        watchdog.stop()
        target.stop()
    assert watchdog.events == [] and watchdog.health_timeouts_max_streak == 0
