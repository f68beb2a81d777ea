"""Pydantic models of the result documents: validate-results (schema 5.1) and bench results (bench/1).

The schema is additive only: tallies are ``str -> int`` maps so a new counter
never needs a new schema version, and every model keeps unknown fields
(``extra="allow"``) so a document written by a newer probatorium survives a
load/save round-trip through an older one.
"""

from __future__ import annotations

import os
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
    #: the command that runs the dossier's standalone repro.py ("python3 <cell>/incidents/<dir>/repro.py",
    #: relative to the run folder); "" when the finding has no reproducer
    reproducer: str = ""
    #: the Tier 3 seed (0x-hex) whose plan found it; "" for other tiers
    seed: str = ""
    #: the Tier 2 operation (operationId) the finding is on; "" for other tiers
    operation: str = ""
    #: covered by the run's --baseline (docs/gate.md): still recorded and shown, does not fail the gate
    accepted: bool = False
    accepted_reason: str = ""


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
        """Copy the single cell's ``tier_1``/``tier_2``/``tier_3`` to ``validation_results`` (no-op otherwise)."""
        cells = self.validation_results.cells
        if len(cells) == 1:
            self.validation_results.tier_1 = dict(cells[0].tier_1)
            self.validation_results.tier_2 = dict(cells[0].tier_2)
            self.validation_results.tier_3 = dict(cells[0].tier_3)
        return self



# ---------------------------------------------------------------------------------------
# Bench results: ``results/<ts>-bench-<version>/results.json``, schema "bench/1".
# Field order is the file's key order; numbers keep their type as measured (a histogram's
# p99 is an int of microseconds, an SLO given as 10 stays 10), hence ``int | float``.

BENCH_SCHEMA = "bench/1"

BenchCellStatus = Literal["not_run", "ok", "not_applicable", "invalid", "failed"]
CompetitorStatus = Literal["ok", "not_applicable", "failed"]
Number = int | float


class BenchHost(_Model):
    """The machine a bench ran on: what shapes the numbers."""

    hostname: str = ""
    kernel: str = ""
    machine: str = ""
    cpu_model: str = "unknown"
    cpus_online: int | None = None
    affinity: list[int] = Field(default_factory=list)
    server_cpus: list[int] | None = None
    client_cpus: list[int] | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    loadavg: list[float] = Field(default_factory=list)
    # --driver netns: the server host the competitors ran on and its address (absent on a local bench)
    server_host: str | None = Field(None, exclude_if=lambda v: v is None)
    server_address: str | None = Field(None, exclude_if=lambda v: v is None)


class BenchConfig(_Model):
    """How the bench measured: runs, phases, SLOs, probe budget, what it selected."""

    runs: int = 1
    duration_s: float = 0.0
    warmup_s: float = 0.0
    slos_ms: list[Number] = Field(default_factory=list)
    error_budget: float = 0.0
    max_probes: int = 0
    competitors: list[str] = Field(default_factory=list)
    cells: list[str] = Field(default_factory=list)
    # --threshold expressions, judged per cell; absent from the file when none (older documents stay byte-equal)
    thresholds: list[str] = Field(default_factory=list, exclude_if=lambda v: not v)


class BenchCompetitor(_Model):
    """One competitor of the run: what it is, whether it could run here, what it is made of."""

    name: str
    group: str = ""
    description: str = ""
    install: str = ""
    status: CompetitorStatus = "ok"
    reason: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)


class Saturation(_Model):
    """One cell's closed-loop result over its runs: histograms merged exactly, rps = requests / seconds."""

    runs: int = 0
    requests: int = 0
    duration_s: float = 0.0
    rps: float
    errors: dict[str, int] = Field(default_factory=dict)
    latency_us: dict[str, Number] = Field(default_factory=dict)
    histogram: str = ""  # the merged HdrHistogram, encoded
    count: int = 0
    per_run_rps: list[float] = Field(default_factory=list)
    client_bound: bool = False
    client_bound_reason: str | None = None


class BenchVerify(_Model):
    """Whether the competitor answered the cell correctly before it was measured."""

    ok: bool
    reason: str | None = None
    status: int | None = None
    content_type: str | None = None
    body_prefix: str | None = None


class BenchCell(_Model):
    """One competitor x cell of a bench run."""

    index: int = 0
    competitor: str
    cell: str
    kind: str = "http"  # "http" | "ws" | "sse"
    connections: int = 0
    status: BenchCellStatus
    reason: str | None = None
    folder: str | None = None  # relative to the run folder
    saturation: Saturation | None = None
    latency_at_slo: dict[str, float | None] | None = None  # SLO in ms -> highest passing rate
    # ratesearch.latency_at_slo's document ({"slos", "probes", ...}), or {"skipped": why}
    rate_search: dict[str, Any] | None = None
    observer: dict[str, Any] | None = None  # the observer's summary (samples, peak, steady)
    verify: BenchVerify | None = None
    # each --threshold judged on `saturation` (loadgen.thresholds.Verdict dicts); None (absent): not judged
    thresholds: list[dict[str, Any]] | None = Field(None, exclude_if=lambda v: v is None)
    started_at: str | None = None
    finished_at: str | None = None
    # a competitor placed on a server host (--driver netns): the HOST:PORT it listened on and the load went to
    target: str | None = Field(None, exclude_if=lambda v: v is None)
    # a multi-host roll-up: the server host this cell was measured on (absent on one host's own document)
    host: str | None = Field(None, exclude_if=lambda v: v is None)


class BenchHostRun(_Model):
    """One server host's part of a multi-host bench (the roll-up's ``hosts``)."""

    name: str
    address: str = ""
    machine: str = ""  # the host's platform.machine(), as its own document records it
    folder: str = ""  # its run folder, relative to the roll-up's
    raw: str = ""  # its own document, copied: raw/<host>.json
    exit_code: int | None = None
    error: str | None = None


class BenchDocument(_Model):
    """A whole bench ``results.json`` (checkpointed while the run goes: ``partial`` until it ends)."""

    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    # "schema" would shadow BaseModel.schema(): the attribute is `schema_id`, the key "schema"
    schema_id: str = Field(BENCH_SCHEMA, alias="schema")
    kind: Literal["bench"] = "bench"
    version: str = ""
    started_at: str = ""
    finished_at: str | None = None
    partial: bool = False
    host: BenchHost = Field(default_factory=BenchHost)
    config: BenchConfig = Field(default_factory=BenchConfig)
    competitors: list[BenchCompetitor] = Field(default_factory=list)
    cells: list[BenchCell] = Field(default_factory=list)
    # a multi-host roll-up (bench --driver netns): the driver and each server host's run; absent otherwise
    driver: str | None = Field(None, exclude_if=lambda v: v is None)
    hosts: list[BenchHostRun] | None = Field(None, exclude_if=lambda v: v is None)
    #: where the document was written or read from; not part of the file
    path: str = Field("", exclude=True)

def normalize_arch(machine: str | None = None) -> str:
    """Map ``platform.machine()`` spellings to ``amd64`` / ``aarch64``; other names pass through lower-cased."""
    # The multi-host drivers run the validator on a client host for a server host: the
    # arch (and the name, below) in results are the server host's, which they pass down.
    raw = (os.environ.get("PROBATORIUM_HOST_ARCH") or platform.machine()) if machine is None else machine
    name = (raw or "").strip().lower()
    if not name:
        return "unknown"
    return _ARCH_ALIASES.get(name, name)


def utc_now_iso() -> str:
    """The current UTC time as ISO-8601 with a ``Z`` suffix, millisecond precision."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def host_arch_pair(hostname: str | None = None, machine: str | None = None) -> str:
    """``<short hostname>-<arch>``, e.g. ``msa2-server-amd64``; names the host in results."""
    host = (os.environ.get("PROBATORIUM_HOST_NAME") or socket.gethostname()) if hostname is None else hostname
    short = host.split(".", 1)[0] or "localhost"
    short = re.sub(r"[^A-Za-z0-9_.-]", "_", short)
    return f"{short}-{normalize_arch(machine)}"
