"""Pydantic models of the validate-results document, schema 5.1.

The schema is additive only: tallies are ``str -> int`` maps so a new counter
never needs a new schema version, and every model keeps unknown fields
(``extra="allow"``) so a document written by a newer probatorium survives a
load/save round-trip through an older one.
"""

from __future__ import annotations

import platform
import re
import socket
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "5.1"

Severity = Literal["HIGH", "MED", "LOW"]
PropertyStatus = Literal["passed", "failed", "not_judged"]
CellStatus = Literal["ok", "failed", "not_run"]

# The Tier 1 sub-tallies a cell may carry (each a str -> int map).
TIER1_SUB_TALLIES = ("adversarial", "h2c_churn", "ws_torture", "sse_kill", "markov")

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "arm64": "aarch64",
    "aarch64": "aarch64",
}


class _Model(BaseModel):
    """Base of every schema model: unknown (newer) fields are kept, not dropped."""

    model_config = ConfigDict(extra="allow")


class PropertyResult(_Model):
    """The verdict on one predicate of the invariant catalogue for one cell."""

    status: PropertyStatus
    evaluations: int = 0
    reason: str = ""


class Incident(_Model):
    """One predicate violation, with where its forensics dossier lives."""

    predicate: str
    severity: Severity
    refapp: str
    engine: str
    arch: str
    cell: str  # cell folder name, e.g. "cell-01-auth_session_ratelimit-uvicorn"
    first_seen: str  # ISO-8601 UTC
    dossier: str  # path relative to the run folder
    case: str = ""
    detail: str = ""
    #: one line naming the minimal reproducer when one was found after the fact
    #: (crash attribution: the request that killed the target); details in incident.json
    reproducer: str = ""


class Cell(_Model):
    """One (refapp, engine, arch) cell of a validation run."""

    refapp: str
    engine: str
    arch: str
    status: CellStatus
    reason: str = ""
    started_at: str = ""
    finished_at: str = ""
    seed: int = 0
    folder: str = ""  # relative to the run folder
    target: dict[str, Any] = Field(default_factory=dict)
    # Top-level ints (requests_sent, requests_2xx, ...) plus the sub-tallies
    # named in TIER1_SUB_TALLIES, each a dict[str, int].
    tier_1: dict[str, Any] = Field(default_factory=dict)
    tier_2: dict[str, Any] = Field(default_factory=dict)
    tier_3: dict[str, Any] = Field(default_factory=dict)
    properties: dict[str, PropertyResult] = Field(default_factory=dict)
    incidents: list[Incident] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    partial: bool = False


class ValidationResults(_Model):
    """The ``validation_results`` block: run timing and the cells."""

    started_at: str
    finished_at: str = ""
    duration_s: float = 0
    seed: int = 0
    cells: list[Cell] = Field(default_factory=list)
    # Back-compat copies of the single cell's tallies (set when len(cells) == 1).
    tier_1: dict[str, Any] = Field(default_factory=dict)
    tier_3: dict[str, Any] = Field(default_factory=dict)
    tier_2: dict[str, Any] = Field(default_factory=dict)


class ValidateDocument(_Model):
    """A whole ``validate-results.json`` (single run, matrix run, or one cell)."""

    schema_version: Literal["5.1"] = SCHEMA_VERSION
    host_arch_pair: str
    kind: Literal["single", "matrix"]
    probatorium_version: str
    command: list[str] = Field(default_factory=list)
    partial: bool = False
    validation_results: ValidationResults
    incidents: list[Incident] = Field(default_factory=list)

    def finalize_back_compat(self) -> "ValidateDocument":
        """Copy the single cell's ``tier_1``/``tier_3`` to ``validation_results`` (no-op otherwise)."""
        cells = self.validation_results.cells
        if len(cells) == 1:
            self.validation_results.tier_1 = dict(cells[0].tier_1)
            self.validation_results.tier_3 = dict(cells[0].tier_3)
        return self


def normalize_arch(machine: str | None = None) -> str:
    """Map ``platform.machine()`` spellings to ``amd64`` / ``aarch64``; other names pass through lower-cased."""
    raw = platform.machine() if machine is None else machine
    name = (raw or "").strip().lower()
    if not name:
        return "unknown"
    return _ARCH_ALIASES.get(name, name)


def utc_now_iso() -> str:
    """The current UTC time as ISO-8601 with a ``Z`` suffix, millisecond precision."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def host_arch_pair(hostname: str | None = None, machine: str | None = None) -> str:
    """``<short hostname>-<arch>``, e.g. ``msa2-server-amd64``; names the host in results."""
    host = socket.gethostname() if hostname is None else hostname
    short = host.split(".", 1)[0] or "localhost"
    short = re.sub(r"[^A-Za-z0-9_.-]", "_", short)
    return f"{short}-{normalize_arch(machine)}"
