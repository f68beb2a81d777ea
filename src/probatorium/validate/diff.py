"""validate-diff: divergences between the cells of one or more validate documents.

Three comparisons (SPEC §5 "Matrix, diff, gate"):

* cross-engine: same (refapp, host), different engines — a predicate that is
  violated on one engine (a mapped counter non-zero, the property ``failed``,
  or an incident) and judged clean on another; the host is the document's
  ``host_arch_pair``, so each host of a multi-host run is compared in itself;
* cross-arch: same (refapp, engine), different hosts (``host_arch_pair``: another
  arch, or another host of the same arch in a multi-host run), same rule;
* per-case: the per-case verdicts of the adversarial, ws and h2c slices from
  each cell's ``tier1_tally.json`` sidecar, compared across engines (kind
  ``case``) and across arches (kind ``case-arch``), graded by the invariant
  catalogue (the same verdict→predicate mapping the gate uses).

A cell that did not run, a property that is ``not_judged`` or a predicate a
cell has no data for is never counted as "good": it is listed in
``not_compared`` instead. Everything except :func:`run_diff` is a pure
function of the loaded documents (plus the sidecars it reads).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from probatorium.errors import UsageError
from probatorium.results.schema import Cell, Incident, ValidateDocument, normalize_arch, utc_now_iso
from probatorium.validate.invariants import COUNTER_PREDICATES, PREDICATE_SEVERITIES, counter_value, \
    verdict_severity
from probatorium.results.store import (
    load_document,
    newest_matrix_documents,
    resolve_document_path,
    write_json_atomic,
    write_text_atomic,
)

SEVERITIES: tuple[str, ...] = ("HIGH", "MED", "LOW")
TALLY_SIDECAR = "tier1_tally.json"
DIFF_FOLDER = "validate-diff"

# Per-case rows: the slices whose tier1_tally.json sidecar has "cases" with a "verdict" each.
CASE_SLICES: tuple[str, ...] = ("adversarial", "ws", "h2c")

FindingKind = Literal["cross-engine", "cross-arch", "case", "case-arch"]
FINDING_KINDS: tuple[str, ...] = ("cross-engine", "cross-arch", "case", "case-arch")


@dataclass(frozen=True)
class LoadedDocument:
    """A validate document together with the file it came from (sidecars are found beside it)."""

    path: Path
    document: ValidateDocument

    @property
    def dir(self) -> Path:
        """The run folder the document lives in."""
        return self.path.parent


def load_documents(paths: Iterable[Path | str]) -> list[LoadedDocument]:
    """Load each path (a file or a run folder); a bad one raises a one-line ``UsageError``."""
    return [LoadedDocument(resolve_document_path(p), load_document(p)) for p in paths]


@dataclass(frozen=True)
class _CellRef:
    """One cell as seen by the diff: where it came from and its comparison keys."""

    index: int
    doc_index: int
    loaded: LoadedDocument
    cell: Cell
    arch: str

    @property
    def host(self) -> str:
        return self.loaded.document.host_arch_pair

    @property
    def engine(self) -> str:
        return self.cell.engine

    @property
    def refapp(self) -> str:
        return self.cell.refapp

    def where(self) -> dict[str, Any]:
        return {
            "refapp": self.refapp,
            "engine": self.engine,
            "arch": self.arch,
            "host": self.host,
            "cell": self.cell.folder,
            "document": str(self.loaded.path),
        }


@dataclass
class _Judgement:
    state: Literal["bad", "good", "unjudged"]
    counters: dict[str, int]
    property: str | None
    incidents: int
    reason: str = ""


def _cell_incidents(ref: _CellRef) -> list[Incident]:
    """The cell's incidents: its own plus document-level ones naming it, without duplicates."""
    shared = [
        inc
        for inc in ref.loaded.document.incidents
        if (ref.cell.folder and inc.cell == ref.cell.folder)
        or (
            not ref.cell.folder
            and (inc.refapp, inc.engine) == (ref.refapp, ref.engine)
            and normalize_arch(inc.arch) == ref.arch
        )
    ]
    seen: set[tuple[str, str, str]] = set()
    unique: list[Incident] = []
    for inc in list(ref.cell.incidents) + shared:
        key = (inc.predicate, inc.first_seen, inc.dossier)
        if key not in seen:
            seen.add(key)
            unique.append(inc)
    return unique


def _judge(ref: _CellRef, predicate: str, counters: Sequence[str], incidents: Counter[str]) -> _Judgement:
    values = {}
    for path in counters:
        value = counter_value(ref.cell.tier_1, path)
        if value is not None:
            values[path] = value
    prop = ref.cell.properties.get(predicate)
    status = prop.status if prop else None
    n_incidents = incidents.get(predicate, 0)
    if any(v > 0 for v in values.values()) or status == "failed" or n_incidents:
        return _Judgement("bad", values, status, n_incidents)
    if status == "not_judged":
        reason = f"{predicate} not_judged" + (f": {prop.reason}" if prop and prop.reason else "")
        return _Judgement("unjudged", values, status, 0, reason)
    if status is None and not values:
        return _Judgement("unjudged", values, status, 0, f"{predicate}: no counter or property in this cell")
    return _Judgement("good", values, status, 0)


def _labels(refs: Sequence[_CellRef], axis: str) -> dict[int, str]:
    """A short, unique label per cell: the engine (cross-engine) or host_arch_pair (cross-arch)."""

    def base(ref: _CellRef) -> str:
        return ref.engine if axis == "engine" else ref.host

    counts = Counter(base(r) for r in refs)
    labels: dict[int, str] = {}
    for ref in refs:
        label = base(ref)
        if counts[label] > 1 and axis == "engine":
            label = f"{label}@{ref.host}"
        labels[ref.index] = label
    counts = Counter(labels.values())
    for ref in refs:
        if counts[labels[ref.index]] > 1:
            labels[ref.index] = f"{labels[ref.index]}#{ref.doc_index + 1}"
    return labels


def _axis_value(ref: _CellRef, axis: str) -> str:
    return ref.engine if axis == "engine" else ref.host


def _fixed(axis: str, fixed_value: str, group: Sequence[_CellRef]) -> dict[str, str]:
    """What a finding's cells share: (arch, host) across engines, the engine across hosts."""
    if axis == "engine":
        return {"arch": group[0].arch, "host": fixed_value}
    return {"engine": fixed_value}


def _side_entry(ref: _CellRef, label: str, judgement: _Judgement) -> dict[str, Any]:
    entry = {"label": label, **ref.where(), "counters": judgement.counters}
    entry["property"] = judgement.property
    entry["incidents"] = judgement.incidents
    return entry


def _group(refs: Iterable[_CellRef], axis: str) -> dict[tuple[str, str], list[_CellRef]]:
    """Cells grouped by what must be equal: (refapp, host) across engines, (refapp, engine) across hosts."""
    groups: dict[tuple[str, str], list[_CellRef]] = {}
    for ref in refs:
        key = (ref.refapp, ref.host) if axis == "engine" else (ref.refapp, ref.engine)
        groups.setdefault(key, []).append(ref)
    return {k: v for k, v in groups.items() if len({_axis_value(r, axis) for r in v}) > 1}


def _predicate_findings(
    refs: Sequence[_CellRef],
    axis: str,
    counter_predicates: Mapping[str, tuple[str, str]],
    severities: Mapping[str, str],
    not_compared: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    kind = "cross-engine" if axis == "engine" else "cross-arch"
    counters_of: dict[str, list[str]] = {}
    for path, (predicate, _sev) in counter_predicates.items():
        counters_of.setdefault(predicate, []).append(path)
    cell_incidents = {ref.index: _cell_incidents(ref) for ref in refs}
    incidents = {i: Counter(inc.predicate for inc in incs) for i, incs in cell_incidents.items()}
    findings: list[dict[str, Any]] = []
    for (refapp, fixed_value), group in sorted(_group(refs, axis).items()):
        labels = _labels(group, axis)
        predicates = set(counters_of)
        for ref in group:
            predicates.update(ref.cell.properties)
            predicates.update(incidents[ref.index])
        for predicate in sorted(predicates):
            judged = [(ref, _judge(ref, predicate, counters_of.get(predicate, ()), incidents[ref.index]))
                      for ref in group]
            bad = [(r, j) for r, j in judged if j.state == "bad"]
            good = [(r, j) for r, j in judged if j.state == "good"]
            if not bad:
                continue
            for ref, j in judged:
                if j.state == "unjudged":
                    not_compared.append({"kind": kind, "predicate": predicate, **ref.where(), "reason": j.reason})
            diverges = any(_axis_value(b, axis) != _axis_value(g, axis) for b, _ in bad for g, _ in good)
            if not diverges:
                continue
            nonzero = sorted({p for _, j in bad for p, v in j.counters.items() if v > 0})
            incident_sevs = [
                inc.severity for r, _ in bad for inc in cell_incidents[r.index] if inc.predicate == predicate
            ]
            severity = severities.get(predicate) or _worst(incident_sevs) or "HIGH"
            findings.append({
                "kind": kind,
                "severity": severity,
                "predicate": predicate,
                "counter": nonzero[0] if nonzero else "",
                "counters": nonzero,
                "refapp": refapp,
                **_fixed(axis, fixed_value, group),
                "bad": [_side_entry(r, labels[r.index], j) for r, j in bad],
                "good": [_side_entry(r, labels[r.index], j) for r, j in good],
            })
    return findings


def _worst(severities: Iterable[str]) -> str | None:
    present = set(severities)
    for severity in SEVERITIES:
        if severity in present:
            return severity
    return None


def _verdict_rank(slice_name: str, verdict: str) -> int:
    """3 HIGH, 2 MED, 1 LOW (as the catalogue grades the verdict), 0 a verdict that is fine."""
    sev = verdict_severity(slice_name, verdict)
    return 3 - SEVERITIES.index(sev) if sev else 0


def _case_severity(slice_name: str, verdicts: Iterable[str]) -> str:
    """The worst severity among the verdicts; a divergence of fine verdicts is LOW."""
    worst = max((_verdict_rank(slice_name, v) for v in verdicts), default=0)
    return SEVERITIES[3 - worst] if worst else "LOW"


def sidecar_path(loaded: LoadedDocument, cell: Cell) -> Path | None:
    """Where a cell's ``tier1_tally.json`` is: ``<run>/<cell.folder>/``, or beside a single-cell document."""
    candidates = []
    if cell.folder:
        candidates.append(loaded.dir / cell.folder / TALLY_SIDECAR)
    if loaded.document.kind == "single" and len(loaded.document.validation_results.cells) <= 1:
        candidates.append(loaded.dir / TALLY_SIDECAR)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _load_cases(ref: _CellRef, notes: list[str]) -> dict[tuple[str, str], dict[str, Any]] | None:
    """(slice, case name) → the case's detail, for every slice of CASE_SLICES in the cell's sidecar."""
    where = f"{ref.refapp}/{ref.engine}/{ref.arch} ({ref.host})"
    path = sidecar_path(ref.loaded, ref.cell)
    if path is None:
        notes.append(f"{where}: no {TALLY_SIDECAR}; per-case comparison skipped for this cell")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        notes.append(f"{where}: unreadable {path}: {' '.join(str(exc).split())}; per-case comparison skipped")
        return None
    if not isinstance(data, dict):
        notes.append(f"{where}: {path} is not an object; per-case comparison skipped")
        return None
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for slice_name in CASE_SLICES:
        part = data.get(slice_name)
        cases = part.get("cases") if isinstance(part, dict) else None
        if cases is None:
            continue
        if not isinstance(cases, dict):
            notes.append(f"{where}: {path}: {slice_name}.cases is not an object; skipped")
            continue
        out.update({(slice_name, str(k)): v for k, v in cases.items()
                    if isinstance(v, dict) and isinstance(v.get("verdict"), str)})
    if not out:
        notes.append(f"{where}: {path} has no per-case verdicts; per-case comparison skipped")
        return None
    return out


def _case_findings(
    refs: Sequence[_CellRef],
    axis: str,
    cases_of: Mapping[int, dict[tuple[str, str], dict[str, Any]]],
) -> list[dict[str, Any]]:
    kind = "case" if axis == "engine" else "case-arch"
    findings: list[dict[str, Any]] = []
    for (refapp, fixed_value), group in sorted(_group(refs, axis).items()):
        members = [r for r in group if r.index in cases_of]
        labels = _labels(members, axis)
        names = sorted({name for r in members for name in cases_of[r.index]})
        for key in names:
            slice_name, name = key
            holders = [(r, cases_of[r.index][key]) for r in members if key in cases_of[r.index]]
            diverges = any(
                _axis_value(a, axis) != _axis_value(b, axis) and ca["verdict"] != cb["verdict"]
                for a, ca in holders
                for b, cb in holders
            )
            if not diverges:
                continue
            verdicts = {labels[r.index]: c["verdict"] for r, c in holders}
            ranks = [_verdict_rank(slice_name, v) for v in verdicts.values()]
            worst = max(ranks)
            spread = worst != min(ranks)
            info = next((c for _, c in holders if c.get("clause") or c.get("level")), holders[0][1])
            findings.append({
                "kind": kind,
                "severity": _case_severity(slice_name, verdicts.values()),
                "slice": slice_name,
                "case": name if slice_name == "adversarial" else f"{slice_name}:{name}",
                "clause": str(info.get("clause", "")),
                "level": str(info.get("level", "")),
                "refapp": refapp,
                **_fixed(axis, fixed_value, group),
                "verdicts": verdicts,
                "counts": {labels[r.index]: c.get("counts", {}) for r, c in holders},
                # With a spread of severities the worst verdict's holders are the bad side;
                # otherwise (e.g. rejected_400 vs rejected_close) no side is singled out.
                "bad": sorted(lbl for lbl, v in verdicts.items() if spread and _verdict_rank(slice_name, v) == worst),
                "good": sorted(lbl for lbl, v in verdicts.items() if spread and _verdict_rank(slice_name, v) != worst),
            })
    return findings


def _sort_key(finding: Mapping[str, Any]) -> tuple:
    severity = finding.get("severity", "HIGH")
    rank = SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
    kind = finding.get("kind", "")
    return (
        rank,
        FINDING_KINDS.index(kind) if kind in FINDING_KINDS else len(FINDING_KINDS),
        finding.get("predicate", finding.get("case", "")),
        finding.get("refapp", ""),
        finding.get("arch", ""),
        finding.get("engine", ""),
    )


def compute_diff(
    documents: Sequence[LoadedDocument],
    counter_predicates: Mapping[str, tuple[str, str]] | None = None,
    predicate_severities: Mapping[str, str] | None = None,
    generated_at: str | None = None,
) -> dict[str, Any]:
    """The ``diff.json`` content for ``documents``: findings, not_compared, notes and a severity summary."""
    mapping = dict(COUNTER_PREDICATES if counter_predicates is None else counter_predicates)
    if predicate_severities is None:  # the catalogue's, plus what a given mapping says of predicates it lacks
        severities = {**{pred: sev for pred, sev in mapping.values()}, **PREDICATE_SEVERITIES}
    else:
        severities = dict(predicate_severities)
    notes: list[str] = []
    not_compared: list[dict[str, Any]] = []
    refs: list[_CellRef] = []
    described: list[dict[str, Any]] = []
    for doc_index, loaded in enumerate(documents):
        doc = loaded.document
        described.append({
            "path": str(loaded.path),
            "host_arch_pair": doc.host_arch_pair,
            "kind": doc.kind,
            "started_at": doc.validation_results.started_at,
            "partial": doc.partial,
            "cells": len(doc.validation_results.cells),
        })
        if doc.partial:
            notes.append(f"{loaded.path}: partial document (run interrupted or still running)")
        for cell in doc.validation_results.cells:
            ref = _CellRef(len(refs), doc_index, loaded, cell, normalize_arch(cell.arch))
            if cell.status == "not_run":
                not_compared.append({"kind": "cell", **ref.where(),
                                     "reason": "cell not_run" + (f": {cell.reason}" if cell.reason else "")})
                continue
            if cell.partial:
                notes.append(f"{cell.refapp}/{cell.engine}/{ref.arch} ({ref.host}): partial cell")
            refs.append(ref)

    if not _group(refs, "engine"):
        notes.append("no (refapp, host) has cells on two engines: no cross-engine comparison")
    if not _group(refs, "arch"):
        notes.append("no (refapp, engine) has cells on two hosts (host_arch_pair): no cross-arch comparison")

    findings = _predicate_findings(refs, "engine", mapping, severities, not_compared)
    findings += _predicate_findings(refs, "arch", mapping, severities, not_compared)

    compared = {r.index for axis in ("engine", "arch") for g in _group(refs, axis).values() for r in g}
    cases_of: dict[int, dict[str, dict[str, Any]]] = {}
    for ref in refs:
        if ref.index in compared:
            cases = _load_cases(ref, notes)
            if cases is not None:
                cases_of[ref.index] = cases
    findings += _case_findings(refs, "engine", cases_of)
    findings += _case_findings(refs, "arch", cases_of)
    findings.sort(key=_sort_key)

    summary = {severity: 0 for severity in SEVERITIES}
    for finding in findings:
        summary[finding["severity"]] = summary.get(finding["severity"], 0) + 1
    return {
        "generated_at": generated_at or utc_now_iso(),
        "documents": described,
        "findings": findings,
        "not_compared": not_compared,
        "notes": notes,
        "summary": summary,
    }


def diff_exit_code(diff: Mapping[str, Any], strict: bool = False) -> int:
    """1 when any HIGH finding (or, with ``strict``, any MED finding) exists, else 0."""
    summary = diff.get("summary", {})
    if summary.get("HIGH", 0) or (strict and summary.get("MED", 0)):
        return 1
    return 0


def _side_text(entry: Any, finding: Mapping[str, Any]) -> str:
    if isinstance(entry, str):  # per-case findings list labels
        return f"{entry}={finding.get('verdicts', {}).get(entry, '?')}"
    total = sum(v for v in entry.get("counters", {}).values() if v > 0)
    if total:
        value = str(total)
    elif entry.get("property") == "failed":
        value = "failed"
    elif entry.get("incidents"):
        value = f"{entry['incidents']}-incident"
    elif entry.get("counters"):
        value = "0"
    else:
        value = entry.get("property") or "0"
    return f"{entry['label']}={value}"


def render_text(diff: Mapping[str, Any]) -> str:
    """``diff.txt``: a header, then one line per finding sorted HIGH, MED, LOW, then what was not compared."""
    summary = diff.get("summary", {})
    lines = [
        f"validate-diff  generated {diff.get('generated_at', '')}  "
        + "  ".join(f"{sev} {summary.get(sev, 0)}" for sev in SEVERITIES),
    ]
    for doc in diff.get("documents", []):
        partial = "  (partial)" if doc.get("partial") else ""
        lines.append(f"  document {doc.get('host_arch_pair', '')}: {doc.get('path', '')}{partial}")
    lines.append("")
    findings = sorted(diff.get("findings", []), key=_sort_key)
    if not findings:
        lines.append("no divergences")
    else:
        header = ("SEVERITY", "KIND", "PREDICATE/CASE", "REFAPP", "ARCH", "ENGINE", "BAD", "GOOD")
        rows = [header]
        for f in findings:
            verdicts = f.get("verdicts", {})
            bad = f.get("bad", [])
            good = f.get("good", [])
            if f.get("kind", "").startswith("case") and not bad and not good:
                bad = sorted(verdicts)  # same-rank verdicts: show them all
            rows.append((
                str(f.get("severity", "")),
                str(f.get("kind", "")),
                str(f.get("predicate") or f.get("case", "")),
                str(f.get("refapp", "")),
                str(f.get("arch", "*")),
                str(f.get("engine", "*")),
                ", ".join(_side_text(e, f) for e in bad) or "-",
                ", ".join(_side_text(e, f) for e in good) or "-",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
            lines.append("  ".join(cells).rstrip())
    not_compared = diff.get("not_compared", [])
    if not_compared:
        lines += ["", f"not compared ({len(not_compared)}):"]
        for entry in not_compared:
            what = f" {entry['kind']} {entry['predicate']}" if entry.get("predicate") else ""
            lines.append(
                f"  {entry.get('refapp', '')}/{entry.get('engine', '')}/{entry.get('arch', '')} "
                f"({entry.get('host', '')}){what}: {entry.get('reason', '')}"
            )
    notes = diff.get("notes", [])
    if notes:
        lines += ["", "notes:"] + [f"  {note}" for note in notes]
    return "\n".join(lines) + "\n"


def run_diff(
    paths: Sequence[Path | str] = (),
    out_dir: Path | str | None = None,
    strict: bool = False,
    *,
    results_root: Path | str = "results",
    hosts: Iterable[str] | None = None,
    counter_predicates: Mapping[str, tuple[str, str]] | None = None,
    predicate_severities: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Diff ``paths`` (or the newest matrix document of each host under ``results_root``), write
    ``diff.json`` and ``diff.txt`` atomically to ``out_dir`` (default ``<results_root>/validate-diff``)
    and return the exit code (see :func:`diff_exit_code`). Bad input raises ``UsageError``."""
    root = Path(results_root)
    if paths:
        sources: list[Path | str] = list(paths)
    else:
        sources = list(newest_matrix_documents(root, hosts))
        if not sources:
            raise UsageError(
                f"no matrix documents under {root}/ (run `probatorium validate --matrix` or pass document paths)"
            )
    documents = load_documents(sources)
    diff = compute_diff(documents, counter_predicates, predicate_severities)
    out = Path(out_dir) if out_dir is not None else root / DIFF_FOLDER
    text = render_text(diff)
    write_json_atomic(out / "diff.json", diff)
    write_text_atomic(out / "diff.txt", text)
    if echo is not None:
        echo(text)
    return diff_exit_code(diff, strict)
