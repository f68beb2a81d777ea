"""Results layout, atomic writes, checkpoints and history lookups.

Layout (SPEC §6, seed README "Result layout")::

    results/<ts>-validate-<version>/validate-results.json
    results/<ts>-validate-matrix-<arch>/validate-results.json
    results/<ts>-validate-matrix-<arch>/cell-<NN>-<refapp>-<engine>/validate-results.json
    results/<ts>-bench-<version>/...

Every file is written to a temporary file in the destination directory,
fsync'd, then renamed over the target, so a reader (or a run killed half-way)
never sees a torn document.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ValidationError

from probatorium.errors import ProbatoriumError, UsageError
from probatorium.results.schema import (
    Cell,
    Incident,
    ValidateDocument,
    ValidationResults,
    utc_now_iso,
)

log = logging.getLogger(__name__)

DOCUMENT_NAME = "validate-results.json"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
RunKind = Literal["validate", "validate-matrix", "bench", "ci"]
RUN_KINDS: tuple[str, ...] = ("validate", "validate-matrix", "bench", "ci")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MATRIX_FOLDER = re.compile(r"^(\d{8}T\d{6}Z)-validate-matrix-(.+?)(?:-(\d+))?$")


def sanitize_name(name: str) -> str:
    """Replace every character outside ``[A-Za-z0-9_.-]`` with ``_`` (empty becomes ``_``)."""
    return _UNSAFE.sub("_", name) or "_"


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself; not every platform/filesystem allows it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path | str, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` via a temp file in the same directory, fsync and ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (temp file + rename)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, data: Any) -> Path:
    """Write ``data`` (a dict/list or a pydantic model) as indented JSON, atomically."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text)


def run_folder(
    results_root: Path | str,
    kind: RunKind,
    version_or_arch: str,
    now: datetime | None = None,
) -> Path:
    """Create and return ``<root>/<ts>-<kind>-<version_or_arch>`` (``-2``, ``-3`` … appended on collision)."""
    if kind not in RUN_KINDS:
        raise UsageError(f"unknown run kind {kind!r} (expected one of {', '.join(RUN_KINDS)})")
    root = Path(results_root)
    root.mkdir(parents=True, exist_ok=True)
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    ts = moment.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)
    base = f"{ts}-{kind}-{sanitize_name(version_or_arch)}"
    attempt = 1
    while True:
        candidate = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            candidate.mkdir()  # atomic: two concurrent runs never share a folder
            return candidate
        except FileExistsError:
            attempt += 1


def cell_folder_name(index: int, refapp: str, engine: str) -> str:
    """``cell-<NN>-<refapp>-<engine>`` for the 1-based ``index`` (names sanitized)."""
    if index < 1:
        raise ValueError(f"cell index is 1-based, got {index}")
    return f"cell-{index:02d}-{sanitize_name(refapp)}-{sanitize_name(engine)}"


def resolve_document_path(path: Path | str) -> Path:
    """A document path as given, or ``<folder>/validate-results.json`` when ``path`` is a folder."""
    p = Path(path)
    return p / DOCUMENT_NAME if p.is_dir() else p


def load_document(path: Path | str) -> ValidateDocument:
    """Load and validate a schema 5.1 document (file or run folder); bad input is a one-line ``UsageError``."""
    file = resolve_document_path(path)
    if not file.is_file():
        if Path(path).is_dir():
            raise UsageError(f"{path}: folder has no {DOCUMENT_NAME}")
        raise UsageError(f"{file}: no such results file")
    try:
        raw = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file}: cannot read: {_one_line(str(exc))}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{file}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        return ValidateDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first.get("loc", ())) or "<document>"
        more = exc.error_count() - 1
        suffix = f" (+{more} more error{'s' if more != 1 else ''})" if more > 0 else ""
        raise UsageError(
            f"{file}: not a schema 5.1 validate document: {loc}: {_one_line(first.get('msg', ''))}{suffix}"
        ) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Checkpointer:
    """Keeps a run's document on disk: partial checkpoints during the run, a final write at the end.

    Used as a context manager it writes a first (partial) checkpoint on entry,
    and on exit finishes the document, or leaves it ``partial: true`` when
    the block raised (including KeyboardInterrupt).
    """

    def __init__(self, run_dir: Path | str, document: ValidateDocument) -> None:
        self.run_dir = Path(run_dir)
        self.document = document
        self._lock = threading.RLock()

    @property
    def path(self) -> Path:
        """Where the run's ``validate-results.json`` is written."""
        return self.run_dir / DOCUMENT_NAME

    def _write(self, partial: bool) -> Path:
        with self._lock:
            self.document.partial = partial
            self.document.finalize_back_compat()
            return write_json_atomic(self.path, self.document)

    def checkpoint(self) -> Path:
        """Write the document as it stands, marked ``partial: true``."""
        return self._write(partial=True)

    def finish(self) -> Path:
        """Write the final document (``partial: false``), filling ``finished_at``/``duration_s`` if unset."""
        results = self.document.validation_results
        if not results.finished_at:
            results.finished_at = utc_now_iso()
        if not results.duration_s:
            results.duration_s = _duration_s(results.started_at, results.finished_at)
        return self._write(partial=False)

    def cell_document(self, cell: Cell) -> ValidateDocument:
        """The single-cell document for ``cell`` (kind ``single``, back-compat tallies filled)."""
        parent = self.document
        doc = ValidateDocument(
            host_arch_pair=parent.host_arch_pair,
            kind="single",
            probatorium_version=parent.probatorium_version,
            command=list(parent.command),
            partial=cell.partial,
            validation_results=ValidationResults(
                started_at=cell.started_at or parent.validation_results.started_at,
                finished_at=cell.finished_at,
                duration_s=_duration_s(cell.started_at, cell.finished_at),
                seed=cell.seed,
                cells=[cell],
            ),
            incidents=list(cell.incidents),
        )
        return doc.finalize_back_compat()

    def write_cell(self, cell: Cell) -> Path:
        """Write ``<run>/<cell.folder>/validate-results.json`` for one cell; ``cell.folder`` must be set."""
        if not cell.folder:
            raise ValueError(f"cell {cell.refapp}/{cell.engine} has no folder; use cell_folder_name()")
        return write_json_atomic(self.run_dir / cell.folder / DOCUMENT_NAME, self.cell_document(cell))

    def record_cell(self, cell: Cell) -> Path:
        """Put ``cell`` in the run document (replacing the cell with the same folder), merge its
        incidents into the document's, write the cell document and checkpoint the run."""
        with self._lock:
            cells = self.document.validation_results.cells
            for i, existing in enumerate(cells):
                if cell.folder and existing.folder == cell.folder:
                    cells[i] = cell
                    break
            else:
                cells.append(cell)
            seen = {_incident_key(inc) for inc in self.document.incidents}
            for inc in cell.incidents:
                if _incident_key(inc) not in seen:
                    self.document.incidents.append(inc)
                    seen.add(_incident_key(inc))
        self.write_cell(cell)
        return self.checkpoint()

    def __enter__(self) -> "Checkpointer":
        self.checkpoint()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.checkpoint()


def _incident_key(inc: Incident) -> tuple[str, str, str, str]:
    return (inc.predicate, inc.cell, inc.first_seen, inc.dossier)


def parse_iso(text: str | None) -> datetime | None:
    """An ISO-8601 timestamp of a document (``Z`` or an offset; naive means UTC), or None."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _duration_s(started_at: str, finished_at: str) -> float:
    start, end = parse_iso(started_at), parse_iso(finished_at)
    if start is None or end is None:
        return 0.0
    return max(0.0, round((end - start).total_seconds(), 3))


def newest_matrix_documents(
    results_root: Path | str,
    hosts: Iterable[str] | None = None,
) -> list[Path]:
    """The newest ``*-validate-matrix-*/validate-results.json`` per ``host_arch_pair``, sorted by host.

    "Newest" is by the folder's timestamp (then its collision suffix).
    Documents that cannot be loaded are skipped with a warning. ``hosts``
    keeps only the given host_arch_pairs or bare hostnames (VALIDATE_DIFF_HOSTS).
    """
    root = Path(results_root)
    if not root.is_dir():
        return []
    wanted = {h.strip() for h in hosts or () if h.strip()}
    best: dict[str, tuple[tuple[str, int], Path]] = {}
    for folder in root.iterdir():
        match = _MATRIX_FOLDER.match(folder.name)
        file = folder / DOCUMENT_NAME
        if not match or not file.is_file():
            continue
        try:
            doc = load_document(file)
        except UsageError as exc:
            log.warning("skipping unreadable matrix document: %s", exc)
            continue
        pair = doc.host_arch_pair
        if wanted and pair not in wanted and pair.rsplit("-", 1)[0] not in wanted:
            continue
        key = (match.group(1), int(match.group(3) or 1))
        if pair not in best or key > best[pair][0]:
            best[pair] = (key, file)
    return [best[pair][1] for pair in sorted(best)]


LOCK_NAME = ".probatorium.lock"
#: What a validate run writes at a run folder's root (besides cell folders); ``--force`` removes exactly these.
_RESULT_FILES = (DOCUMENT_NAME,)
_CELL_FOLDER = re.compile(r"^cell-\d+-")


class RunFolderLocked(ProbatoriumError):
    """Another live run is writing the run folder (exit 2)."""


class RunFolderNotEmpty(ProbatoriumError):
    """The run folder holds an earlier run's results and ``--force`` was not given (exit 2)."""


class RunFolderLock:
    """An exclusive ``flock`` on ``RUN_DIR/.probatorium.lock``.

    The kernel drops a flock when its file descriptor closes, so the lock
    dies with the process: a SIGKILLed run never leaves the folder locked.
    """

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock (idempotent); the lock file itself stays, it is harmless."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunFolderLock":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()


def earlier_results(run_dir: Path | str) -> list[Path]:
    """The entries of ``run_dir`` that an earlier validate run wrote (its document and cell folders)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name in _RESULT_FILES or (p.is_dir() and _CELL_FOLDER.match(p.name)))


def lock_run_folder(run_dir: Path | str, force: bool = False) -> RunFolderLock:
    """Create ``run_dir`` if needed, lock it for this process and make sure it holds no earlier results.

    A folder another live run holds raises ``RunFolderLocked``; one with an
    earlier run's results raises ``RunFolderNotEmpty`` unless ``force``, which
    removes exactly those results (any other file in the folder is kept).
    """
    import fcntl
    import shutil

    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderLocked(f"{folder}: another probatorium run is writing this folder; "
                              "wait for it or choose another --out") from None
    lock = RunFolderLock(folder, fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    stale = earlier_results(folder)
    if stale and not force:
        lock.release()
        names = ", ".join(p.name for p in stale[:3]) + (" …" if len(stale) > 3 else "")
        raise RunFolderNotEmpty(f"{folder}: holds an earlier run's results ({names}); "
                                "pass --force to replace them or choose another --out")
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return lock
