"""What a report is made of: each RUN_DIR recognised as a validate, bench or validate-diff run.

* validate (single or matrix): ``validate-results.json`` (schema 5.1) plus each cell's
  sidecars ``tier1_tally.json`` (per-case verdicts), ``tier2_tally.json`` (coverage)
  and ``tier3_tally.json`` (seed outcomes) in ``<run>/<cell.folder>/``;
* bench: ``results.json`` with ``"schema": "bench/1"``, each cell's ``observer.sqlite``;
* validate-diff: ``diff.json``.

Bad input is one ``UsageError`` line naming the path, never a traceback.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from probatorium.errors import UsageError
from probatorium.results.schema import BENCH_SCHEMA, BenchDocument, ValidateDocument
from probatorium.results.store import DOCUMENT_NAME, load_document

BENCH_DOCUMENT = "results.json"
DIFF_DOCUMENT = "diff.json"
SIDECARS = ("tier1_tally.json", "tier2_tally.json", "tier3_tally.json")

RunKind = Literal["validate", "bench", "validate-diff"]


@dataclass
class Run:
    """One run folder of the report: its kind, where it is, and what was read from it."""

    kind: RunKind
    path: Path
    document: Any  # ValidateDocument | BenchDocument | dict (diff.json)
    #: validate: cell folder -> {"tier1_tally.json": {...}, ...}; bench: cell folder -> observer rows
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short name for the run's tab: its folder name."""
        return self.path.name or str(self.path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {' '.join(str(exc).split())}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _sidecars(folder: Path) -> dict[str, Any]:
    """The readable sidecars of one cell folder (an unreadable one is left out: the report says so)."""
    out: dict[str, Any] = {}
    for name in SIDECARS:
        p = folder / name
        if p.is_file():
            try:
                out[name] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                out[name] = None
    return out


def load_validate(path: Path) -> Run:
    """A validate run folder (or its document) with each cell's sidecars."""
    doc: ValidateDocument = load_document(path)
    folder = path if path.is_dir() else path.parent
    extra: dict[str, Any] = {}
    for cell in doc.validation_results.cells:
        if cell.folder and (folder / cell.folder).is_dir():
            extra[cell.folder] = _sidecars(folder / cell.folder)
        elif doc.kind == "single":
            extra[cell.folder] = _sidecars(folder)
    return Run("validate", folder, doc, extra)


OBSERVER_COLUMNS = ("ts", "phase", "cpu_pct", "rss_kb")


def observer_rows(db: Path) -> list[tuple]:
    """(ts, phase, cpu_pct, rss_kb) of an ``observer.sqlite``; [] when it is missing or unreadable."""
    if not db.is_file():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return list(con.execute("SELECT ts, phase, cpu_pct, rss_kb FROM samples ORDER BY ts"))
        finally:
            con.close()
    except sqlite3.Error:
        return []


def load_bench(folder: Path, data: dict) -> Run:
    """A bench run folder, its cells' observer samples beside it."""
    try:
        doc = BenchDocument.model_validate(data)
    except ValueError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UsageError(f"{folder / BENCH_DOCUMENT}: not a {BENCH_SCHEMA} bench document: {first}") from None
    extra = {c.folder: observer_rows(folder / c.folder / "observer.sqlite") for c in doc.cells if c.folder}
    return Run("bench", folder, doc, extra)


def load_diff(folder: Path, data: Any) -> Run:
    """A validate-diff output folder (``diff.json``)."""
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise UsageError(f"{folder / DIFF_DOCUMENT}: not a validate-diff document (no findings list)")
    return Run("validate-diff", folder, data)


def load_run(path: Path | str) -> Run:
    """Recognise and load one RUN_DIR (a folder, or one of its documents)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such run folder")
    if p.is_file():
        if p.name == DOCUMENT_NAME:
            return load_validate(p)
        if p.name in (BENCH_DOCUMENT, DIFF_DOCUMENT):
            p = p.parent
        else:
            raise UsageError(f"{p}: not a run folder or a {DOCUMENT_NAME}, {BENCH_DOCUMENT} or {DIFF_DOCUMENT}")
    if (p / DOCUMENT_NAME).is_file():
        return load_validate(p)
    if (p / BENCH_DOCUMENT).is_file():
        data = _read_json(p / BENCH_DOCUMENT)
        if isinstance(data, dict) and data.get("schema") == BENCH_SCHEMA:
            return load_bench(p, data)
        raise UsageError(f"{p / BENCH_DOCUMENT}: not a {BENCH_SCHEMA} bench document")
    if (p / DIFF_DOCUMENT).is_file():
        return load_diff(p, _read_json(p / DIFF_DOCUMENT))
    raise UsageError(f"{p}: not a run folder (no {DOCUMENT_NAME}, {BENCH_DOCUMENT} or {DIFF_DOCUMENT})")
