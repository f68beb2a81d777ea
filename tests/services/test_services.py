"""Real PostgreSQL / Redis / memcached started by probatorium (no mocks).

Each test uses its own manifest (PROBATORIUM_STATE_DIR) and its own services
root (PROBATORIUM_SERVICES_TMPDIR), so "nothing left behind" is checked on
exactly what the test created. Skipped as a whole only when the Debian
packages are absent (scripts/install-debian-packages.sh installs them) and
PROBATORIUM_REQUIRE_SERVICES is not set.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from probatorium.errors import InfraError
from probatorium.services import (
    Manifest,
    ServiceManager,
    ServiceUnavailable,
    cleanup_manifest,
    ensure_no_leftovers,
    recorded_status,
)
from probatorium import procs as sproc

pytestmark = pytest.mark.timeout(60)

_missing = ServiceManager(reap_stale=False).unavailable(["postgres", "redis", "memcached"])
# CI sets PROBATORIUM_REQUIRE_SERVICES=1: there a missing package fails the tests instead of skipping them.
needs_all = pytest.mark.skipif(bool(_missing) and not os.environ.get("PROBATORIUM_REQUIRE_SERVICES"),
                               reason="; ".join(_missing.values()) or "ok")


@pytest.fixture
def svc_env(monkeypatch, tmp_path):
    """Private manifest + services root (traversable by the service accounts)."""
    state = tmp_path / "state"
    root = Path(tempfile.mkdtemp(prefix="probatorium-test-services-", dir="/tmp"))
    os.chmod(root, 0o711)
    monkeypatch.setenv("PROBATORIUM_STATE_DIR", str(state))
    monkeypatch.setenv("PROBATORIUM_SERVICES_TMPDIR", str(root))
    monkeypatch.delenv("PROBATORIUM_SERVICE_BIN_DIRS", raising=False)
    yield {"state": state, "root": root}
    # whatever a failing test left: undo it, then make sure nothing remains
    cleanup_manifest(Manifest(state), include_live=True)
    leftovers = list(root.iterdir()) if root.exists() else []
    for p in leftovers:
        subprocess.run(["rm", "-rf", str(p)], check=False)
    os.rmdir(root)


def _exchange(addr: tuple[str, int], payload: bytes, until: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(payload)
        buf = b""
        while until not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


def _resp(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def _talk(name: str, env: dict[str, str]) -> None:
    """Use the service through its address from the environment variables,
    speaking its real protocol; a write followed by a read of the same value."""
    if name == "postgres":
        url = env["DATABASE_URL"]
        assert url.startswith("postgresql://probatorium@127.0.0.1:")
        psql = ServiceManager(reap_stale=False).finder.find("psql")
        sql = ("create table t(k text primary key, v int); insert into t values ('a', 41); "
               "update t set v = v + 1 where k = 'a'; select v from t where k = 'a'")
        res = subprocess.run([psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                             capture_output=True, text=True, timeout=20)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "42"
    elif name == "redis":
        url = env["REDIS_URL"]
        assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert _exchange(("127.0.0.1", port), _resp(b"PING"), b"\r\n") == b"+PONG\r\n"
        assert _exchange(("127.0.0.1", port), _resp(b"SET", b"k", b"v1"), b"\r\n") == b"+OK\r\n"
        assert _exchange(("127.0.0.1", port), _resp(b"GET", b"k"), b"v1\r\n") == b"$2\r\nv1\r\n"
        # no persistence configured
        cfg = _exchange(("127.0.0.1", port), _resp(b"CONFIG", b"GET", b"appendonly"), b"no\r\n")
        assert b"no" in cfg
    else:
        host, port = env["MEMCACHED_ADDR"].split(":")
        assert host == "127.0.0.1"
        addr = (host, int(port))
        assert _exchange(addr, b"version\r\n", b"\r\n").startswith(b"VERSION ")
        assert _exchange(addr, b"set k 0 0 2\r\nv1\r\n", b"\r\n") == b"STORED\r\n"
        assert _exchange(addr, b"get k\r\n", b"END\r\n") == b"VALUE k 0 2\r\nv1\r\nEND\r\n"


def _processes_under(root: Path) -> dict[int, int]:
    return sproc.processes_in_dir(root)


@needs_all
@pytest.mark.parametrize("name", ["postgres", "redis", "memcached"])
def test_service_up_answers_protocol_and_down_leaves_nothing(svc_env, name):
    m = ServiceManager()
    with m:
        infos = m.up([name])
        info = infos[name]
        assert info.host == "127.0.0.1" and info.port > 0 and info.version
        assert Path(info.data_dir).is_dir() and Path(info.data_dir).parent == svc_env["root"]
        assert sproc.same_process(info.pid, None)
        if os.geteuid() == 0:  # never root: postgres refuses it, and the others need not have it
            uid = os.stat(f"/proc/{info.pid}").st_uid
            assert uid != 0 and pwd.getpwuid(uid).pw_name == info.user
        expected_var = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "memcached": "MEMCACHED_ADDR"}[name]
        assert list(info.env) == [expected_var] and m.env() == info.env
        _talk(name, m.env())
        status = m.status()
        assert [(s.name, s.alive, s.healthy) for s in status] == [(name, True, True)]
        # recorded while running; a concurrent `cleanup` leaves a live run alone
        running = Manifest(svc_env["state"]).running()
        assert [(e["service"], e["pid"], e["port"]) for e in running] == [(name, info.pid, info.port)]
        assert any("left running" in line for line in cleanup_manifest(Manifest(svc_env["state"])))
        assert sproc.same_process(info.pid, None)
    assert ensure_no_leftovers([info]) == []
    assert _processes_under(svc_env["root"]) == {}
    assert list(svc_env["root"].iterdir()) == []
    entries = Manifest(svc_env["state"]).read()
    assert [e["state"] for e in entries] == ["stopped"] and entries[0]["dir_removed"] is True


@needs_all
def test_ctrl_c_inside_the_block_still_tears_down(svc_env):
    with pytest.raises(KeyboardInterrupt):
        with ServiceManager() as m:
            infos = m.up("redis,memcached")
            raise KeyboardInterrupt
    assert ensure_no_leftovers(infos.values()) == []
    assert list(svc_env["root"].iterdir()) == []


DRIVER = textwrap.dedent("""
    import json, sys, time
    from probatorium.services import ServiceManager
    m = ServiceManager(die_with_parent={dwp})
    infos = m.up(["postgres", "redis", "memcached"])
    # one extra postgres backend that stays connected, as a target's pool would
    import subprocess
    psql = m.finder.find("psql")
    subprocess.Popen([psql, "-X", infos["postgres"].env["DATABASE_URL"], "-c", "select pg_sleep(60)"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(json.dumps({{n: i.as_dict() for n, i in infos.items()}}), flush=True)
    time.sleep(120)
""")


def _run_driver_and_sigkill(die_with_parent: bool) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(dwp=die_with_parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        infos = json.loads(line)
        time.sleep(0.3)  # the extra backend connects
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return infos


def _wait(predicate, timeout: float) -> bool:
    return sproc.wait_until(predicate, timeout, poll=0.05)


@needs_all
def test_sigkilled_driver_services_die_with_it_and_cleanup_removes_dirs(svc_env):
    infos = _run_driver_and_sigkill(die_with_parent=True)
    pids = [i["pid"] for i in infos.values()]
    # PR_SET_PDEATHSIG: the servers go down with the process that started them
    assert _wait(lambda: not any(sproc.same_process(p, None) for p in pids), 15), pids
    assert _wait(lambda: _processes_under(svc_env["root"]) == {}, 10)
    dirs = [Path(i["data_dir"]) for i in infos.values()]
    assert all(d.exists() for d in dirs)  # only the manifest knows about these now
    running = Manifest(svc_env["state"]).running()
    assert sorted(e["service"] for e in running) == ["memcached", "postgres", "redis"]
    done = cleanup_manifest(Manifest(svc_env["state"]))
    assert len(done) == 3 and all("removed" in line for line in done), done
    assert not any(d.exists() for d in dirs)
    assert Manifest(svc_env["state"]).running() == []
    assert list(svc_env["root"].iterdir()) == []
    assert cleanup_manifest(Manifest(svc_env["state"])) == []  # idempotent


@needs_all
def test_sigkilled_driver_without_pdeathsig_cleanup_kills_everything(svc_env):
    infos = _run_driver_and_sigkill(die_with_parent=False)
    pids = [i["pid"] for i in infos.values()]
    time.sleep(0.3)
    assert all(sproc.same_process(p, None) for p in pids)  # orphaned, still serving
    assert len(_processes_under(svc_env["root"])) > 3  # postgres' own children too
    statuses = recorded_status(Manifest(svc_env["state"]))
    assert sorted((s.name, s.alive, s.healthy) for s in statuses) == [
        ("memcached", True, True), ("postgres", True, True), ("redis", True, True)]
    done = cleanup_manifest(Manifest(svc_env["state"]))
    assert len(done) == 3, done
    assert not any(sproc.same_process(p, None) for p in pids)
    assert _processes_under(svc_env["root"]) == {}
    assert list(svc_env["root"].iterdir()) == []
    assert Manifest(svc_env["state"]).running() == []
    # nothing left in System V shared memory by our postmaster either
    pid_pg = infos["postgres"]["pid"]
    shm = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    assert not [row for row in shm if row.split()[4] == str(pid_pg)]


def test_cleanup_never_kills_a_reused_pid_nor_removes_unmarked_dirs(svc_env, tmp_path):
    victim = subprocess.Popen(["sleep", "30"])
    unmarked = svc_env["root"] / "redis-notours"
    unmarked.mkdir()
    try:
        ticks = sproc.procfs.start_ticks(victim.pid)
        Manifest(svc_env["state"]).add({
            "id": "x1", "kind": "service", "service": "redis", "state": "running",
            "pid": victim.pid, "pgid": victim.pid, "start_ticks": ticks - 1,  # a different process
            "data_dir": str(unmarked), "owner_pid": 999999999, "owner_start_ticks": 1, "detached": False,
        })
        done = cleanup_manifest(Manifest(svc_env["state"]))
        assert victim.poll() is None, "cleanup killed a process that only shares the recorded PID"
        assert unmarked.exists() and "could not remove" in done[0]
        assert Manifest(svc_env["state"]).running() == []
    finally:
        victim.kill()
        victim.wait()
        unmarked.rmdir()


def test_missing_binary_is_one_clear_line_naming_the_package(svc_env, tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PROBATORIUM_SERVICE_BIN_DIRS", str(empty))
    m = ServiceManager()
    reasons = m.unavailable(["postgres", "redis", "memcached"])
    assert set(reasons) == {"postgres", "redis", "memcached"}
    assert "postgresql" in reasons["postgres"] and "redis-server" in reasons["redis"]
    assert "memcached" in reasons["memcached"]
    with pytest.raises(ServiceUnavailable) as exc:
        m.up(["redis"])
    assert isinstance(exc.value, InfraError) and exc.value.package == "redis-server"
    assert "\n" not in str(exc.value) and "apt-get install redis-server" in str(exc.value)
    assert Manifest(svc_env["state"]).read() == []  # nothing started, nothing recorded
    # the CLI entry point: one line on stderr, exit 2, no traceback
    res = subprocess.run([sys.executable, "-c",
                          "import sys; from probatorium.services.cli import services_command as s; "
                          "sys.exit(s('up', ['memcached']))"],
                         capture_output=True, text=True, env=os.environ.copy(), timeout=30)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "memcached" in res.stderr and "Traceback" not in res.stderr


def test_partial_binaries_only_the_missing_service_is_unavailable(svc_env, tmp_path, monkeypatch):
    only_redis = tmp_path / "bin"
    only_redis.mkdir()
    real = ServiceManager(reap_stale=False).finder.find("redis-server")
    if real is None:
        pytest.skip("redis-server not installed")
    (only_redis / "redis-server").symlink_to(real)
    monkeypatch.setenv("PROBATORIUM_SERVICE_BIN_DIRS", str(only_redis))
    assert set(ServiceManager().unavailable("postgres,redis,memcached")) == {"postgres", "memcached"}


@needs_all
def test_cli_up_is_detached_and_down_stops_it(svc_env):
    code = ("import sys; from probatorium.services.cli import services_command as s; "
            "sys.exit(s(sys.argv[1], sys.argv[2:]))")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              env=os.environ.copy(), timeout=60)

    up = cli("up", "redis,memcached")
    assert up.returncode == 0, up.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
    assert set(exports) == {"REDIS_URL", "MEMCACHED_ADDR"}
    _talk("redis", exports)  # still serving after the command exited
    _talk("memcached", exports)
    again = cli("up", "redis")
    assert again.returncode == 0 and "already running" in again.stderr
    assert again.stdout.strip() == f"export REDIS_URL={exports['REDIS_URL']}"
    st = cli("status")
    assert st.returncode == 0 and st.stdout.count(" up ") == 2, st.stdout
    down = cli("down", "redis")
    assert down.returncode == 0 and "redis: stopped" in down.stderr
    assert [s.name for s in recorded_status(Manifest(svc_env["state"]))] == ["memcached"]
    clean = subprocess.run([sys.executable, "-c",
                            "import sys; from probatorium.services.cli import cleanup_command as c; sys.exit(c())"],
                           capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert clean.returncode == 0 and "memcached: stopped" in clean.stdout
    assert _processes_under(svc_env["root"]) == {}
    assert list(svc_env["root"].iterdir()) == []


@needs_all
def test_cleanup_after_a_sigkilled_postmaster_leaves_no_backend_and_no_shm(svc_env):
    """The worst case: the driver AND the postmaster were SIGKILLed (OOM killer).
    Backends re-setsid themselves, and the postmaster's System V segment stays;
    cleanup must still find and remove all of it."""
    infos = _run_driver_and_sigkill(die_with_parent=False)
    pg = infos["postgres"]
    pidfile = Path(pg["data_dir"]) / "data" / "postmaster.pid"
    shmid = int(pidfile.read_text().splitlines()[6].split()[1])
    os.kill(pg["pid"], signal.SIGKILL)
    assert _wait(lambda: not sproc.same_process(pg["pid"], None), 5)

    def segment_exists() -> bool:
        return any(int(row.split()[1]) == shmid
                   for row in Path("/proc/sysvipc/shm").read_text().splitlines()[1:])

    assert segment_exists()
    done = cleanup_manifest(Manifest(svc_env["state"]))
    assert len(done) == 3, done
    assert not segment_exists() and any("removed shm segment" in line for line in done), done
    assert _processes_under(svc_env["root"]) == {}
    assert list(svc_env["root"].iterdir()) == []


@needs_all
@pytest.mark.parametrize("delay", [0.2, 0.9])
def test_ctrl_c_during_start_leaves_nothing(svc_env, delay):
    """SIGINT while PostgreSQL is being initialised / health-checked: the
    half-started service is stopped, its directory removed, the entry closed."""
    driver = ("import sys; from probatorium.services import ServiceManager\n"
              "m = ServiceManager()\n"
              "print('starting', flush=True)\n"
              "try:\n"
              "    m.up(['postgres'])\n"
              "except KeyboardInterrupt:\n"
              "    print('interrupted', flush=True); sys.exit(130)\n"
              "print('up', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    assert proc.stdout.readline().strip() == "starting"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130, -signal.SIGINT), out  # -SIGINT: it landed after 'up'
    print(delay, out.split())
    assert _processes_under(svc_env["root"]) == {}
    assert list(svc_env["root"].iterdir()) == []  # interrupted or finished: atexit/stop removed it
    assert Manifest(svc_env["state"]).running() == []


@needs_all
def test_ctrl_c_during_the_stop_at_exit_still_stops_everything(svc_env):
    """The Ctrl-C that lands while the interpreter's exit hook is stopping a service the
    program never closed (seen in CI: 'up' printed, then SIGINT mid-stop left the data dir)."""
    driver = ("import os, signal; from probatorium.services import ServiceManager\n"
              "m = ServiceManager()\n"
              "m.up(['postgres'])\n"
              "real = m._stop\n"
              "def interrupted(name):\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    return real(name)\n"
              "m._stop = interrupted\n"
              "print('up', flush=True)\n")
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=60)
    assert done.stdout.strip() == "up" and "KeyboardInterrupt" not in done.stderr, done.stderr
    assert _processes_under(svc_env["root"]) == {}
    assert list(svc_env["root"].iterdir()) == []
    assert Manifest(svc_env["state"]).running() == []


@needs_all
@pytest.mark.parametrize("name", ["postgres", "redis", "memcached"])
def test_lost_port_race_is_retried_on_another_port(svc_env, monkeypatch, name):
    """Another process grabs the chosen port between the choice and the bind."""
    from probatorium.services import manager as mgr

    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real = mgr.free_port
    monkeypatch.setattr(mgr, "free_port", lambda host="127.0.0.1": next(ports, None) or real(host))
    try:
        with ServiceManager() as m:
            info = m.up([name])[name]
            assert info.port != taken
            _talk(name, m.env())
    finally:
        squatter.close()
    assert ensure_no_leftovers([info]) == []
    assert list(svc_env["root"].iterdir()) == []


@needs_all
def test_next_run_reaps_what_a_killed_run_left(svc_env):
    driver = ("import json, time; from probatorium.services import ServiceManager\n"
              "i = ServiceManager().up(['redis'])['redis']\n"
              "print(json.dumps(i.as_dict()), flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    info = json.loads(proc.stdout.readline())
    proc.kill()
    proc.wait()
    assert Path(info["data_dir"]).exists()
    with ServiceManager() as m:  # a new run: stale entries of dead runs are undone first
        m.up(["memcached"])
        assert not Path(info["data_dir"]).exists()
        assert not sproc.same_process(info["pid"], None)
        assert [e["service"] for e in Manifest(svc_env["state"]).running()] == ["memcached"]
    assert list(svc_env["root"].iterdir()) == []


@needs_all
def test_started_from_a_short_lived_thread_survives_the_thread_not_the_process(svc_env):
    """PR_SET_PDEATHSIG fires when the forking THREAD ends; services started
    from a worker thread must outlive that thread but still die with the process."""
    driver = ("import json, threading, time; from probatorium.services import ServiceManager\n"
              "m = ServiceManager(); box = {}\n"
              "t = threading.Thread(target=lambda: box.update(m.up(['redis']))); t.start(); t.join()\n"
              "time.sleep(0.5)\n"
              "print(json.dumps(box['redis'].as_dict()), flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        info = json.loads(proc.stdout.readline())
        assert sproc.same_process(info["pid"], None), "the service died with the thread that started it"
        _talk("redis", info["env"])
    finally:
        proc.kill()
        proc.wait()
    assert _wait(lambda: not sproc.same_process(info["pid"], None), 10)
    cleanup_manifest(Manifest(svc_env["state"]))
    assert list(svc_env["root"].iterdir()) == []


# ---- wt-progress: --json envelope (docs/json.md) ---------------------------------------------------
def test_status_down_and_cleanup_json_with_nothing_recorded(svc_env, capsys):
    import json as _json

    from probatorium.services.cli import cleanup_command, services_command

    assert services_command("status", None, as_json=True) == 0
    assert _json.loads(capsys.readouterr().out) == {"command": "services", "exit_code": 0, "status": "ok",
                                                     "action": "status", "services": []}
    assert services_command("down", ["redis"], as_json=True) == 0
    res = capsys.readouterr()
    assert _json.loads(res.out)["stopped"] == [] and "nothing recorded as running" in res.err
    assert cleanup_command(as_json=True) == 0
    assert _json.loads(capsys.readouterr().out) == {"command": "cleanup", "exit_code": 0, "status": "ok", "undone": []}
