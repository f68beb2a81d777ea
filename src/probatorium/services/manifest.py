"""The manifest: every service start, stop and directory, on disk.

One JSON file (``$PROBATORIUM_STATE_DIR/manifest.json``, default
``$XDG_CACHE_HOME/probatorium`` or ``~/.cache/probatorium``), changed under an
exclusive ``flock`` and written atomically (temp file, fsync, rename), so a run
killed at any instant leaves either the old or the new document. ``cleanup``
reads it to undo whatever a killed run left behind.

Entry fields: ``id, kind ("service"), service, pid, pgid, start_ticks, cmdline,
user, data_dir, port, env, started_at, owner_pid, owner_start_ticks, detached,
state ("running" | "stopped"), stopped_at, stop_result``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

MANIFEST_VERSION = 1
# Stopped entries are history; keep the most recent ones only.
KEEP_STOPPED = 200


def state_dir() -> Path:
    explicit = os.environ.get("PROBATORIUM_STATE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "probatorium"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Manifest:
    """``name`` picks the file: ``manifest`` (services) or ``hosts`` (the multi-host drivers' clusters)."""

    def __init__(self, directory: Path | str | None = None, name: str = "manifest") -> None:
        self.dir = Path(directory) if directory else state_dir()
        self.path = self.dir / f"{name}.json"
        self._lock_path = self.dir / f"{name}.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _read_unlocked(self) -> dict:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": MANIFEST_VERSION, "entries": []}
        except (OSError, ValueError):
            # A corrupt manifest must not wedge cleanup: keep it aside, start over.
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_suffix(f".corrupt-{os.getpid()}.json"))
            return {"version": MANIFEST_VERSION, "entries": []}
        if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
            return {"version": MANIFEST_VERSION, "entries": []}
        return doc

    def _write_unlocked(self, doc: dict) -> None:
        entries = doc["entries"]
        stopped = [e for e in entries if e.get("state") != "running"]
        if len(stopped) > KEEP_STOPPED:
            drop = {id(e) for e in stopped[: len(stopped) - KEEP_STOPPED]}
            doc["entries"] = [e for e in entries if id(e) not in drop]
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{self.path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def read(self) -> list[dict]:
        with self._locked():
            return list(self._read_unlocked()["entries"])

    def update(self, change: Callable[[list[dict]], object]) -> object:
        """Apply ``change`` to the entry list under the lock and persist it."""
        with self._locked():
            doc = self._read_unlocked()
            result = change(doc["entries"])
            self._write_unlocked(doc)
            return result

    def add(self, entry: dict) -> None:
        self.update(lambda entries: entries.append(entry))

    def mark(self, entry_id: str, **fields) -> None:
        def change(entries: list[dict]) -> None:
            for e in entries:
                if e.get("id") == entry_id:
                    e.update(fields)

        self.update(change)

    def running(self) -> list[dict]:
        return [e for e in self.read() if e.get("state") == "running"]
