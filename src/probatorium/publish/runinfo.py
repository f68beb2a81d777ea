"""What publishing needs to know about one run folder: its kind, version, tier, status and badge.

Everything is read from the run's own document (``validate-results.json`` schema 5.1, or a
bench ``results.json`` schema bench/1); nothing is measured again. A validate run's status is
the release gate's verdict (validate/gate.py): ``passed`` when the gate passes on a complete
document, ``failed`` when it fails, ``not_judged`` otherwise (a cell that did not run, a
partial document, no cells).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import UsageError
from ..results.schema import BenchDocument, ValidateDocument
from ..results.store import DOCUMENT_NAME, LOCK_NAME, load_document, parse_iso, sanitize_name
from ..validate.gate import gate_exit_code
from .badges import BENCH_COLOUR, STATUS_COLOURS, status_message

BENCH_DOCUMENT = "results.json"
#: The seed's validation tiers (README "CI cascade": matrix-{pr,nightly,weekend}-tier.yml).
TIERS = ("pr", "nightly", "weekend")
#: Badge labels, after the seed README's badges ("Nightly Validation", "Weekend Soak Test").
TIER_LABELS = {"pr": "PR tier", "nightly": "nightly validation", "weekend": "weekend soak test", "bench": "bench"}
# The default tier of a validate run from its budget: PR tier 10 min, nightly 1 h, weekend 24 h.
_PR_MAX_S = 30 * 60
_NIGHTLY_MAX_S = 6 * 3600
_RUN_FOLDER = re.compile(r"^(\d{8}T\d{6}Z)-(validate|bench)-(.+)$")
_RESERVED = {"badges", "index.html", "index.json", ".", ".."}


@dataclass
class RunInfo:
    """One run as the index lists it (``entry()``) and as its badge shows it."""

    kind: str  # "validate" | "bench"
    run_id: str
    version: str
    tier: str  # one of TIERS, or "bench"
    status: str  # passed | failed | not_judged
    date: str  # the run's started_at (ISO-8601 UTC)
    finished_at: str = ""
    reason: str = ""
    headline: str = ""  # bench: the number the badge shows
    host: str = ""
    probatorium_version: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def badge_name(self) -> str:
        """The badge's file name: ``pr.svg``, ``nightly.svg``, ``weekend.svg`` or ``bench.svg``."""
        return f"{self.tier}.svg"

    def badge(self) -> tuple[str, str, str]:
        """(label, message, colour) of this run's badge."""
        if self.kind == "bench":
            colour = BENCH_COLOUR if self.status == "passed" else STATUS_COLOURS[self.status]
            return TIER_LABELS["bench"], self.headline or status_message(self.status), colour
        return TIER_LABELS[self.tier], status_message(self.status), STATUS_COLOURS[self.status]

    def entry(self, path: str) -> dict[str, Any]:
        """The run's entry in ``index.json``; ``path`` is its folder relative to the site root."""
        return {"run_id": self.run_id, "version": self.version, "kind": self.kind, "tier": self.tier,
                "status": self.status, "reason": self.reason, "date": self.date, "finished_at": self.finished_at,
                "headline": self.headline, "host": self.host, "probatorium_version": self.probatorium_version,
                "summary": self.summary, "path": path, "report": f"{path}report.html",
                "results": f"{path}results/", "badge": f"{path}badges/{self.badge_name}",
                "document": f"{path}results/{BENCH_DOCUMENT if self.kind == 'bench' else DOCUMENT_NAME}"}


def check_version(version: str) -> str:
    """A published version names a folder of the site: non-empty, no path separators, not reserved."""
    v = version.strip()
    if not v or sanitize_name(v) != v or v in _RESERVED:
        raise UsageError(f"version {version!r} cannot name a published folder: use letters, digits and . _ - "
                         f"(not {', '.join(sorted(_RESERVED - {'.', '..'}))})")
    return v


def check_tier(tier: str) -> str:
    """``pr``, ``nightly`` or ``weekend``; anything else is a usage error."""
    if tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r}: use {', '.join(TIERS)}")
    return tier


def tier_for_budget(seconds: float) -> str:
    """The tier a validate run of this budget belongs to: up to 30 min pr, up to 6 h nightly, else weekend."""
    if seconds <= _PR_MAX_S:
        return "pr"
    return "nightly" if seconds <= _NIGHTLY_MAX_S else "weekend"


def _run_id(folder: Path, started_at: str) -> str:
    """The folder's name when it is a results/<ts>-<kind>-… folder, else ``<ts of started_at>-<name>``
    (a run written with ``--out x`` keeps a stable, distinct id)."""
    name = sanitize_name(folder.resolve().name)
    if _RUN_FOLDER.match(name):
        return name
    moment = parse_iso(started_at)
    prefix = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") if moment else "undated"
    return f"{prefix}-{name}"


def _folder_version(folder: Path) -> str:
    m = _RUN_FOLDER.match(folder.resolve().name)
    if not m or m.group(3).startswith("matrix-"):
        return ""
    return m.group(3)


def _target_version(folder: Path, cells: list) -> str:
    """The target version a validate folder's name carries; a single run without one is named
    ``<label>-<engine>`` of its cell instead (validate/plan.py), which is no version."""
    v = _folder_version(folder)
    if len(cells) == 1 and v == sanitize_name(f"{cells[0].refapp}-{cells[0].engine}"):
        return ""
    return v


def check_not_running(folder: Path) -> None:
    """Refuse a run folder a live run still writes (it holds the folder's flock): its badge would
    judge a run that has not ended. The lock dies with its process, so an interrupted run passes."""
    import fcntl

    lock = folder / LOCK_NAME
    if not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"{folder}: a probatorium run is still writing this folder; publish it when it ends") from None
    finally:
        os.close(fd)


def read_run(run_dir: Path, *, version: str | None = None, tier: str | None = None) -> RunInfo:
    """Read ``run_dir`` (a validate or a bench run folder) into a RunInfo; bad input is a UsageError."""
    folder = Path(run_dir)
    if folder.is_file() and folder.name in (DOCUMENT_NAME, BENCH_DOCUMENT):
        folder = folder.parent  # a run's document stands for its folder
    elif folder.is_file():
        raise UsageError(f"{run_dir}: a file; give the run folder (the one holding {DOCUMENT_NAME} or {BENCH_DOCUMENT})")
    if not folder.is_dir():
        raise UsageError(f"{run_dir}: no such run folder")
    check_not_running(folder)
    if (folder / DOCUMENT_NAME).is_file():
        info = _validate_info(folder, load_document(folder), tier)
    elif (folder / BENCH_DOCUMENT).is_file():
        if tier is not None:
            raise UsageError("--tier is for validate runs; a bench run is published with the bench badge")
        info = _bench_info(folder, _load_bench(folder / BENCH_DOCUMENT))
    else:
        raise UsageError(f"{run_dir}: not a run folder (no {DOCUMENT_NAME} or bench {BENCH_DOCUMENT})")
    info.version = check_version(version if version is not None else info.version)
    return info


def _validate_info(folder: Path, doc: ValidateDocument, tier: str | None) -> RunInfo:
    vr = doc.validation_results
    code = gate_exit_code(doc)
    if code == 1:
        status = "failed"
    elif code == 0 and not doc.partial:
        status = "passed"
    else:
        status = "not_judged"
    cells = vr.cells
    reasons = [f"{c.refapp}/{c.engine}: {c.reason}" for c in cells if c.status != "ok" and c.reason]
    if doc.partial:
        reasons.insert(0, "partial document (the run was interrupted or is still running)")
    if not cells:
        reasons.insert(0, "no cells")
    budget = vr.duration_s
    if not budget:
        start, end = parse_iso(vr.started_at), parse_iso(vr.finished_at)
        budget = (end - start).total_seconds() if start and end else 0.0
    severities = [i.severity for i in doc.incidents if not i.accepted]
    return RunInfo(
        kind="validate", run_id=_run_id(folder, vr.started_at),
        version=_target_version(folder, cells) or f"probatorium-{doc.probatorium_version}",
        tier=check_tier(tier) if tier is not None else tier_for_budget(budget), status=status,
        date=vr.started_at, finished_at=vr.finished_at, reason="; ".join(reasons)[:500],
        host=doc.host_arch_pair, probatorium_version=doc.probatorium_version,
        summary={"cells": len(cells), "cells_ok": sum(c.status == "ok" for c in cells),
                 "cells_failed": sum(c.status == "failed" for c in cells),
                 "cells_not_run": sum(c.status == "not_run" for c in cells),
                 "incidents_high": severities.count("HIGH"), "incidents_med": severities.count("MED"),
                 "duration_s": round(budget, 1), "partial": doc.partial})


def _load_bench(path: Path) -> BenchDocument:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("schema") != "bench/1":
        raise UsageError(f"{path}: not a bench/1 results document")
    try:
        return BenchDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "<document>"
        raise UsageError(f"{path}: not a bench/1 results document: {loc}: {first.get('msg', '')}") from None


def _fmt_rate(rps: float) -> str:
    if rps >= 1e6:
        return f"{rps / 1e6:.2f}M"
    if rps >= 1e3:
        return f"{rps / 1e3:.1f}k"
    return f"{rps:.0f}"


def bench_headline(doc: BenchDocument) -> tuple[str, dict[str, Any]]:
    """The bench badge's number: the first measured cell (the BENCH_TARGET competitor comes first)
    at its tightest SLO that had a passing rate (``latency_at_slo``), else its saturation rate."""
    for c in doc.cells:
        if c.status != "ok" or c.saturation is None:
            continue
        where = {"competitor": c.competitor, "cell": c.cell}
        rates = [(float(slo), r) for slo, r in (c.latency_at_slo or {}).items() if r is not None]
        if rates:
            slo, rps = min(rates)
            return f"{_fmt_rate(rps)} rps p99<{slo:g}ms", {**where, "latency_at_slo_ms": slo, "rps": rps}
        return f"{_fmt_rate(c.saturation.rps)} rps saturation", {**where, "rps": c.saturation.rps}
    return "", {}


def _bench_info(folder: Path, doc: BenchDocument) -> RunInfo:
    bad = [c for c in doc.cells if c.status in ("invalid", "failed")]
    broken = [c for c in doc.cells if any(not v.get("passed", True) for v in (c.thresholds or []))]
    ok = [c for c in doc.cells if c.status == "ok"]
    if bad or broken:
        status = "failed"
    elif ok and not doc.partial:
        status = "passed"
    else:
        status = "not_judged"
    reasons = [f"{c.competitor}/{c.cell}: {c.status}: {c.reason or ''}".rstrip(": ") for c in bad]
    reasons += [f"{c.competitor}/{c.cell}: threshold broken" for c in broken]
    if doc.partial:
        reasons.insert(0, "partial document (the bench was interrupted or is still running)")
    if not ok:
        reasons.append("no cell measured")
    headline, where = bench_headline(doc)
    # "dev" is the bench's label when no target version was set: not a version to publish under
    version = next((v for v in (doc.version, _folder_version(folder)) if v not in ("", "dev")), "")
    return RunInfo(
        kind="bench", run_id=_run_id(folder, doc.started_at),
        version=version or f"probatorium-{doc.host.versions.get('probatorium', 'unknown')}",
        tier="bench", status=status, date=doc.started_at, finished_at=doc.finished_at or "",
        reason="; ".join(reasons)[:500], headline=headline, host=doc.host.hostname,
        probatorium_version=doc.host.versions.get("probatorium", ""),
        summary={"competitors": len(doc.competitors), "cells": len(doc.cells), "cells_ok": len(ok),
                 "cells_failed": len(bad), "partial": doc.partial, "headline": where})
