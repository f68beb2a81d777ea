"""What runs on a deployed host to keep it pristine: the host manifest, recorded runs, cleanup, status.

Standard library only, and no import of probatorium: ``cleanup`` and
``status`` are fed to the host's own ``python3`` on stdin by a playbook, so
they work when the run's venv is half installed or already gone.

The host manifest is ``/tmp/probatorium-<run>/manifest.json``: the run's
folder and every process deploy and the run started on that host (pid + start
time, so a later process that got the same pid is never signalled). Every such
process also carries ``PROBATORIUM_HOST_RUN=<run>`` in its environment, so a
process that died before it was recorded, or was started by one that was, is
still found. ``cleanup`` stops both kinds and removes the folder; it is
idempotent. Usage (stdout is one JSON object)::

    python3 - cleanup [--skip RUN,..] [--only RUN,..] [--known RUN,..]   # run folders on this host
    python3 - status
    python -m probatorium.hosts.hostside run MANIFEST OUT_DIR -- ARGV...   # a recorded child run
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

RUN_PREFIX = "/tmp/probatorium-"
RUN_ID = re.compile(r"[0-9a-f]{8}")  # secrets.token_hex(4), as the controller makes them
MARKER_ENV = "PROBATORIUM_HOST_RUN"


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else None


def same_process(pid: int | None, ticks: int | None) -> bool:
    """Whether `pid` is alive and is the process recorded with start time `ticks`."""
    return bool(pid) and start_ticks(int(pid)) is not None and (ticks is None or start_ticks(int(pid)) == ticks)


@contextlib.contextmanager
def _locked(manifest: str):
    fd = os.open(manifest + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_manifest(manifest: str) -> dict:
    try:
        with open(manifest) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {"entries": []}
    except (OSError, ValueError):
        return {"entries": []}


def record(manifest: str, entry: dict) -> None:
    """Append `entry` to the host manifest, under its lock, written atomically."""
    with _locked(manifest):
        doc = read_manifest(manifest)
        doc.setdefault("entries", []).append(entry)
        tmp = f"{manifest}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, manifest)


def record_process(manifest: str, pid: int, what: str) -> None:
    """Record a process this run started on the host (pid + start time)."""
    record(manifest, {"kind": "process", "pid": pid, "start_ticks": start_ticks(pid), "what": what,
                      "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def marked_processes(run: str | None = None) -> list[dict]:
    """Processes carrying MARKER_ENV (of `run`, or of any run), this one excluded."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        for item in env:
            if item.startswith(MARKER_ENV.encode() + b"="):
                value = item.split(b"=", 1)[1].decode(errors="replace")
                if run is None or value == run:
                    out.append({"pid": int(entry), "run": value, "cmdline": cmd[:200],
                                "start_ticks": start_ticks(int(entry))})
    return out


def _stop(victims: list[tuple[int, int | None]], grace: float = 3.0) -> int:
    """SIGTERM, then SIGKILL after `grace` s, the processes still matching (pid, start time)."""
    stopped = 0
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        live = [(p, t) for p, t in victims if same_process(p, t)]
        for pid, _ in live:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        stopped = max(stopped, len(live))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(same_process(p, t) for p, t in victims):
            time.sleep(0.05)
    return stopped


def run_dirs() -> list[str]:
    """Run folders: ``/tmp/probatorium-`` + a run id (8 hex digits) exactly, so another tool's
    ``/tmp/probatorium-replay-…`` (or anything else that shares the prefix) is never touched."""
    return sorted(d for d in glob.glob(RUN_PREFIX + "*") if os.path.isdir(d) and not os.path.islink(d)
                  and RUN_ID.fullmatch(d[len(RUN_PREFIX):]))


def cleanup(skip: set[str], only: set[str] | None = None, known: set[str] | None = None) -> dict:
    """Stop what every (not skipped; or only the named) run recorded or marked on this host, remove its folder.

    With `known` (the runs the asking controller recorded), a run it does not know whose recorded
    processes are still alive is left alone: another controller's run, not a leftover."""
    done = []
    for folder in run_dirs():
        run = folder[len(RUN_PREFIX):]
        if run in skip or (only is not None and run not in only):
            continue
        doc = read_manifest(os.path.join(folder, "manifest.json"))
        recorded = [(int(e["pid"]), e.get("start_ticks")) for e in doc.get("entries", [])
                    if e.get("kind") == "process" and e.get("pid")]
        if known is not None and run not in known and any(same_process(p, t) for p, t in recorded):
            done.append({"run": run, "folder": folder, "stopped": 0, "removed": False,
                         "kept": "not this controller's run, and its processes are alive"})
            continue
        marked = [(p["pid"], p["start_ticks"]) for p in marked_processes(run)]
        stopped = _stop(recorded + marked)
        for e in doc.get("entries", []):
            path = e.get("path") if e.get("kind") == "folder" else None
            if path and path.startswith(RUN_PREFIX) and path != folder:
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        done.append({"run": run, "folder": folder, "stopped": stopped, "removed": not os.path.exists(folder)})
    return {"cleaned": done}


def status() -> dict:
    """Every run folder here with its recorded processes (alive or not), and marked strays."""
    runs = []
    for folder in run_dirs():
        doc = read_manifest(os.path.join(folder, "manifest.json"))
        procs = [dict(e, alive=same_process(e.get("pid"), e.get("start_ticks")))
                 for e in doc.get("entries", []) if e.get("kind") == "process"]
        runs.append({"run": folder[len(RUN_PREFIX):], "folder": folder, "has_manifest": bool(doc.get("entries")),
                     "processes": procs, "state": "running" if any(p["alive"] for p in procs) else "idle"})
    return {"runs": runs, "marked_processes": marked_processes()}


def run_recorded(manifest: str, out_dir: str, argv: list[str]) -> int:
    """Run `argv` as a recorded child (this wrapper too), its output and exit status kept in `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    record_process(manifest, os.getpid(), "run wrapper: " + " ".join(argv)[:160])
    with open(os.path.join(out_dir, "stdout.txt"), "wb") as out, open(os.path.join(out_dir, "stderr.txt"), "wb") as err:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        record_process(manifest, child.pid, " ".join(argv)[:200])
        forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        code = child.wait()
    with open(os.path.join(out_dir, "exit.json"), "w") as f:
        json.dump({"exit_code": code}, f)
    return code


def main(argv: list[str]) -> int:
    if argv[:1] == ["cleanup"]:
        skip = set(argv[argv.index("--skip") + 1].split(",")) if "--skip" in argv else set()
        only = set(argv[argv.index("--only") + 1].split(",")) if "--only" in argv else None
        known = set(argv[argv.index("--known") + 1].split(",")) if "--known" in argv else None
        print(json.dumps(cleanup(skip, only, known)))
        return 0
    if argv[:1] == ["status"]:
        print(json.dumps(status()))
        return 0
    if argv[:1] == ["run"] and "--" in argv and len(argv) > 4:
        cut = argv.index("--")
        return run_recorded(argv[1], argv[2], argv[cut + 1:])
    print("usage: hostside cleanup [--skip RUN,...] [--only RUN,...] [--known RUN,...] | status | run MANIFEST OUT_DIR -- ARGV...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
