"""The incident path: a forensics dossier and a minimal reproducer for each finding.

The first time a predicate goes non-zero in a cell (and the first time for
each distinct adversarial case), a folder `incidents/<ts>-<PREDICATE>/` is
written while the run continues: incident.json, the exact bytes sent and
received, /proc of the target, a py-spy dump where it works,
forensics_status.txt listing what could not be collected and why, and
repro.py, a standard-library-only script that replays the case and judges it
by itself (built by `validate.repro.build_repro`).

`Incident.reproducer` (incidents[].reproducer in validate-results.json) is the
command that runs the dossier's repro.py, relative to the run folder:
`python3 cell-01-.../incidents/<dir>/repro.py` (append HOST:PORT to aim it at
another address than the one the finding was made on). An incident without a
repro.py has an empty reproducer, or, for a crash attribution that found no
suspect, the attribution's one-line status.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..results.schema import Incident, utc_now_iso
from ..results.store import write_bytes_atomic, write_json_atomic, write_text_atomic
from .invariants import severity

MAX_FULL_DOSSIERS = 25  # per cell: beyond this, dossiers skip /proc and py-spy (cheap and bounded)


@dataclass
class Evidence:
    """What a slice hands to the incident path."""

    predicate: str
    detail: str
    case: str = ""
    sent: bytes | None = None
    received: bytes | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    repro: str | None = None  # source of repro.py, when the slice can replay the finding
    #: when the finding was first seen, if earlier than its recording (ISO-8601 UTC): a leak
    #: flagged mid-run is recorded once the end of the cell confirms it
    first_seen: str | None = None
    #: below the catalogue's severity for a lesser form of the predicate (I-API-SCHEMA's undeclared
    #: status is MED); None: the catalogue's
    severity: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # more dossier files: name → text (sequence.json, ...)


class IncidentRecorder:
    """Writes dossiers for one cell and remembers which findings were already recorded."""

    def __init__(self, run_dir: Path, cell_folder: str, *, refapp: str, engine: str, arch: str,
                 versions: dict[str, str], pid_getter=lambda: None, stderr_tail=lambda: [],
                 on_incident=None) -> None:
        self.run_dir = run_dir
        self.cell_folder = cell_folder
        self.refapp, self.engine, self.arch = refapp, engine, arch
        self.versions = versions
        self.pid_getter = pid_getter
        self.stderr_tail = stderr_tail
        self.on_incident = on_incident
        self.incidents: list[Incident] = []
        self._keys: set[tuple[str, str]] = set()
        self._full = 0
        self._lock = threading.Lock()

    def seen(self, predicate: str, case: str = "") -> bool:
        with self._lock:
            return (predicate, case) in self._keys

    def record(self, ev: Evidence) -> Incident | None:
        """Record a finding once per (predicate, case); return the incident, or None if known."""
        with self._lock:
            key = (ev.predicate, ev.case)
            if key in self._keys:
                return None
            self._keys.add(key)
            sev = ev.severity or severity(ev.predicate)
            full = self._full < MAX_FULL_DOSSIERS and sev == "HIGH"
            if full:
                self._full += 1
            n = len(self.incidents) + 1
        ts = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        suffix = f"-{_safe(ev.case)}" if ev.case else ""
        rel = Path(self.cell_folder) / "incidents" / f"{ts}-{n:03d}-{ev.predicate}{suffix}"
        folder = self.run_dir / rel
        folder.mkdir(parents=True, exist_ok=True)
        inc = Incident(
            predicate=ev.predicate, severity=sev, refapp=self.refapp, engine=self.engine,
            arch=self.arch, cell=self.cell_folder, first_seen=ev.first_seen or utc_now_iso(), dossier=str(rel),
            case=ev.case, operation=str(ev.extra.get("op_id") or ""),
            detail=ev.detail, reproducer=repro_command(rel) if ev.repro else "",
        )
        status: list[str] = []
        write_json_atomic(folder / "incident.json", {
            **inc.model_dump(mode="json"), "seed": ev.seed, "versions": self.versions, **ev.extra,
        })
        if ev.sent is not None:
            write_bytes_atomic(folder / "sent.bin", ev.sent)
        if ev.received is not None:
            write_bytes_atomic(folder / "received.bin", ev.received)
        for name, text in ev.files.items():
            write_text_atomic(folder / _safe(name), text)
        if ev.repro:
            write_text_atomic(folder / "repro.py", ev.repro)
            os.chmod(folder / "repro.py", 0o755)
        else:
            status.append("repro.py: this finding has no replayable request sequence (watchdog event)")
        tail = self.stderr_tail()
        if tail:
            write_text_atomic(folder / "stderr-tail.txt", "\n".join(tail) + "\n")
        if full:
            status += collect_process_forensics(self.pid_getter(), folder)
        else:
            status.append("proc/py-spy: skipped (not HIGH, or the per-cell dossier budget is spent)")
        write_text_atomic(folder / "forensics_status.txt", "\n".join(status or ["everything collected"]) + "\n")
        with self._lock:
            self.incidents.append(inc)
        if self.on_incident:
            self.on_incident(inc)
        return inc

    def find(self, predicate: str, case: str = "", wait: float = 5.0) -> Incident | None:
        """The recorded incident of (predicate, case); waits (bounded) while another thread is
        still writing its dossier. None when it was never recorded."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                known = (predicate, case) in self._keys
                inc = next((i for i in self.incidents if i.predicate == predicate and i.case == case), None)
            if inc is not None or not known or time.monotonic() >= deadline:
                return inc
            time.sleep(0.05)

    def amend(self, predicate: str, case: str = "", *, reproducer: str, details: dict[str, Any],
              repro: str | None = None, sent: bytes | None = None) -> Incident | None:
        """Attach a reproducer found after the incident was recorded (crash attribution):
        `reproducer` (one line) goes into the run document after the command that runs repro.py
        (alone when there is no repro.py), `details` into incident.json under
        "reproducer", `repro` becomes repro.py (None removes it) and `sent` sent.bin. Repeated calls
        overwrite."""
        inc = self.find(predicate, case)
        if inc is None:
            return None
        folder = self.run_dir / inc.dossier
        with self._lock:
            inc.reproducer = f"{repro_command(Path(inc.dossier))}  # {reproducer}" if repro else reproducer
            path = folder / "incident.json"
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = inc.model_dump(mode="json")
            data.update(reproducer=details)
            write_json_atomic(path, data)
            if sent is not None:
                write_bytes_atomic(folder / "sent.bin", sent)
            if repro:
                write_text_atomic(folder / "repro.py", repro)
                os.chmod(folder / "repro.py", 0o755)
            else:  # an earlier amendment's reproducer is known not to reproduce any more
                (folder / "repro.py").unlink(missing_ok=True)
            status = folder / "forensics_status.txt"
            try:
                lines = [ln for ln in status.read_text().splitlines() if not ln.startswith("repro.py:")]
            except OSError:
                lines = []
            why = "written" if repro else ("not written: no suspect left (none registered, or each one was "
                                           "replayed alone without a death)")
            lines.insert(0, f"repro.py: crash attribution, {details.get('status', '?')} ({why})")
            write_text_atomic(status, "\n".join(lines) + "\n")
        return inc


def repro_command(dossier: Path) -> str:
    """The shell command that runs a dossier's repro.py, from the run folder."""
    return f"python3 {(dossier / 'repro.py').as_posix()}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def collect_process_forensics(pid: int | None, folder: Path) -> list[str]:
    """Copy /proc/<pid>/{status,limits,smaps_rollup,maps}, list fds, py-spy dump; return what failed."""
    missing: list[str] = []
    if pid is None:
        return ["proc/*, py-spy: no local process (a url target, or the process had already exited)"]
    for name in ("status", "limits", "smaps_rollup", "maps"):
        try:
            data = Path(f"/proc/{pid}/{name}").read_bytes()
            write_bytes_atomic(folder / f"proc-{name}.txt", data)
        except OSError as e:
            missing.append(f"proc-{name}.txt: {e.strerror or e}")
    try:
        fds = []
        for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
            try:
                fds.append(f"{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
            except OSError:
                fds.append(f"{fd} -> ?")
        write_text_atomic(folder / "proc-fd.txt", "\n".join(fds) + "\n")
    except OSError as e:
        missing.append(f"proc-fd.txt: {e.strerror or e}")
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        missing.append("py-spy.txt: py-spy is not installed")
    else:
        try:
            res = subprocess.run([pyspy, "dump", "--subprocesses", "--pid", str(pid)], capture_output=True, timeout=15)
            out = res.stdout + (b"\n--- stderr ---\n" + res.stderr if res.stderr else b"")
            write_bytes_atomic(folder / "py-spy.txt", out)
            if res.returncode != 0:
                missing.append(f"py-spy.txt: py-spy exited {res.returncode}: "
                               f"{res.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
        except (OSError, subprocess.TimeoutExpired) as e:
            missing.append(f"py-spy.txt: {e}")
    return missing
