"""A baseline of accepted findings (`--baseline FILE`, `--baseline-update`): docs/gate.md.

A baseline is a YAML file (JSON is valid YAML, so a JSON file loads too) listing findings a
team accepts, each with a reason::

    version: 1
    accepted:
      - predicate: I-ADV-ACCEPTED
        case: absolute_form_no_host     # or `operation: <operationId>` for a Tier 2 finding
        engine: uvicorn                 # or "*": every engine
        reason: uvicorn routes absolute-form without Host; tracked upstream

An incident is covered by an entry when the predicate is the same, the engine is the same (or
the entry's engine is "*") and the case is the same (an `operation` entry: the incident's
operation is the same, whatever its case). Covered incidents are still recorded and shown,
marked ``accepted``; they do not fail the gate (validate/gate.py). An entry that covers
nothing while its predicate was judged on a cell of its engine is *stale*: the finding no
longer reproduces. One whose predicate was not judged on any such cell (another tier, another
engine) is *not_checked*, which says nothing either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from ..results.schema import Cell, Incident, ValidateDocument
from ..results.store import write_text_atomic
from .gate import rejudge_accepted

BASELINE_VERSION = 1
ANY_ENGINE = "*"
_KEYS = ("predicate", "case", "operation", "engine", "reason")


@dataclass(frozen=True)
class Entry:
    """One accepted finding: (predicate, case or operation, engine) and why it is accepted."""

    predicate: str
    engine: str
    case: str = ""
    operation: str = ""
    reason: str = ""

    def covers(self, inc: Incident) -> bool:
        """Exact match on predicate, engine ("*": any) and case (or operation)."""
        if inc.predicate != self.predicate or self.engine not in (ANY_ENGINE, inc.engine):
            return False
        if self.case:
            return inc.case == self.case
        return bool(inc.operation) and inc.operation == self.operation

    def label(self) -> str:
        """`PREDICATE case=... engine=...`, how summaries name the entry."""
        where = f"case={self.case}" if self.case else f"operation={self.operation}"
        return f"{self.predicate} {where} engine={self.engine}"

    def to_dict(self) -> dict[str, str]:
        """The entry as written to the file (only one of case/operation)."""
        out = {"predicate": self.predicate}
        out.update({"case": self.case} if self.case else {"operation": self.operation})
        out.update(engine=self.engine, reason=self.reason)
        return out


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: an entry must be a mapping with predicate, case or operation, engine, reason")
    unknown = sorted(set(map(str, raw)) - set(_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(_KEYS)})")
    vals = {k: raw.get(k) for k in _KEYS}
    for k, v in vals.items():
        if v is not None and not isinstance(v, str):
            raise UsageError(f"{where}: {k} must be a string, got {type(v).__name__}")
    vals = {k: (v or "").strip() for k, v in vals.items()}
    if not vals["predicate"] or not vals["engine"]:
        raise UsageError(f"{where}: predicate and engine are required")
    if bool(vals["case"]) == bool(vals["operation"]):
        raise UsageError(f"{where}: give exactly one of case and operation")
    if not vals["reason"]:
        raise UsageError(f"{where}: a reason is required (why the team accepts this finding)")
    return Entry(**vals)


def parse_baseline(text: str, source: str = "baseline") -> list[Entry]:
    """The entries of a baseline file's text; UsageError (one line) on anything malformed."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{source}: not valid YAML/JSON{at}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("accepted", []), list):
        raise UsageError(f"{source}: expected a mapping with 'version: {BASELINE_VERSION}' and an 'accepted' list")
    if data.get("version", BASELINE_VERSION) != BASELINE_VERSION:
        raise UsageError(f"{source}: unsupported version {data.get('version')!r} (this probatorium reads "
                         f"version {BASELINE_VERSION})")
    entries = [_entry(raw, f"{source}: accepted[{n}]") for n, raw in enumerate(data.get("accepted") or [])]
    return list(dict.fromkeys(entries))


def load_baseline(path: Path, *, missing_ok: bool = False) -> list[Entry]:
    """Read a baseline file; a missing file is an error unless `missing_ok` (--baseline-update creates it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise UsageError(f"--baseline {path}: no such file (--baseline-update creates it)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--baseline {path}: cannot read it: {e}") from None
    return parse_baseline(text, f"--baseline {path}")


def dump_baseline(entries: list[Entry]) -> str:
    """The YAML text of a baseline (the order of `entries` is kept)."""
    head = ("# probatorium baseline of accepted findings (docs/gate.md). Edit the reasons;\n"
            "# an entry matches an incident on predicate + case (or operation) + engine (\"*\" = any).\n")
    body = yaml.safe_dump({"version": BASELINE_VERSION, "accepted": [e.to_dict() for e in entries]},
                          sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    return head + body


def _judged_on(cells: list[Cell], entry: Entry) -> bool:
    return any(entry.engine in (ANY_ENGINE, c.engine) and c.properties.get(entry.predicate) is not None
               and c.properties[entry.predicate].status != "not_judged" for c in cells)


def apply_baseline(doc: ValidateDocument, entries: list[Entry], source: str = "") -> dict[str, Any]:
    """Mark the incidents the baseline covers ``accepted`` (with the entry's reason), re-judge the
    cells whose only HIGH findings are accepted, and put the summary in ``doc.baseline``:
    ``{file, entries, accepted, stale: [...], not_checked: [...]}``. Returns the summary."""
    cells = doc.validation_results.cells
    used: set[Entry] = set()
    accepted = 0
    seen: set[tuple[str, str, str]] = set()  # a loaded document holds the run's and the cells' copies
    for inc in [*doc.incidents, *(i for c in cells for i in c.incidents)]:
        entry = next((e for e in entries if e.covers(inc)), None)
        if entry is None:
            continue
        inc.accepted, inc.accepted_reason = True, entry.reason
        used.add(entry)
        if (inc.cell, inc.dossier, inc.predicate) not in seen:
            seen.add((inc.cell, inc.dossier, inc.predicate))
            accepted += 1
    for cell in cells:
        rejudge_accepted(cell)
    unused = [e for e in entries if e not in used]
    summary = {"file": source, "entries": len(entries), "accepted": accepted,
               "stale": [e.to_dict() for e in unused if _judged_on(cells, e)],
               "not_checked": [e.to_dict() for e in unused if not _judged_on(cells, e)]}
    setattr(doc, "baseline", summary)  # schema models keep extra fields (additive, schema 5.1)
    return summary


def new_entries(doc: ValidateDocument, entries: list[Entry], today: str | None = None) -> list[Entry]:
    """An entry for every HIGH/MED incident of `doc` the baseline does not cover yet (Tier 2
    findings by operation, the others by case), reason "accepted by --baseline-update on <date>"."""
    day = today or datetime.now(timezone.utc).date().isoformat()
    out: list[Entry] = []
    for inc in doc.incidents:
        if inc.severity not in ("HIGH", "MED") or any(e.covers(inc) for e in [*entries, *out]):
            continue
        if not inc.case and not inc.operation:
            continue  # a watchdog event has no case to pin it to: it cannot be accepted by name
        out.append(Entry(predicate=inc.predicate, engine=inc.engine, case="" if inc.operation else inc.case,
                         operation=inc.operation, reason=f"accepted by --baseline-update on {day}"))
    return out


def update_baseline(path: Path, doc: ValidateDocument) -> list[Entry]:
    """--baseline-update: append the entries `new_entries` finds to `path` (created if missing);
    the entries already there are kept as they are. Returns the added entries."""
    entries = load_baseline(path, missing_ok=True)
    added = new_entries(doc, entries)
    if added or not path.exists():
        write_text_atomic(path, dump_baseline([*entries, *added]))
    return added

