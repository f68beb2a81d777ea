"""What a validation run is asked to do: its options, its cells, and its run folder.

``probatorium validate`` parses its flags into a :class:`TargetArgs` and a
:class:`ValidateOptions`; :func:`plan_cells` expands them into the cells
(one target, or the refapp × engine matrix) and checks every file they name
up front, so a bad input is one line before anything starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..targets.launcher import TargetSpec

SERVICES = ("postgres", "redis", "memcached")


@dataclass
class ValidateOptions:
    """Everything a validation run needs besides the targets."""

    duration_s: float
    concurrency: int
    seed: int
    slices: list[str] | None  # None: activation thresholds decide
    tiers: list[int] | None = None  # None: every tier that applies
    echo_path: str = "/echo"
    health_path: str = "/healthz"
    debug_path: str = "/debug/vars"
    ws_path: str = "/ws"
    sse_path: str = "/events"
    quiet_timeout: float = 3.0
    checkpoint_interval: float = 10.0
    services: list[str] = field(default_factory=list)  # backing services every target gets
    progress: object = None  # callable(str) for one-line progress messages
    # tier number → options for its configure() (2: fuzz's dict, 3: tier3.session.Tier3Options)
    tier_options: dict = field(default_factory=dict)
    slowloris_connections: int = 200  # adversarial slow-client phase: connections held at once (K)


@dataclass
class CellPlan:
    """One cell to run: what to start and how to name it."""

    label: str  # refapp slug or --label
    spec: TargetSpec
    index: int = 0
    openapi: Path | None = None  # the target's OpenAPI document (a refapp's own, or --spec)
    markov: Path | None = None  # the Markov session model (a refapp's own markov.yaml, or --markov)
    services: list[str] = field(default_factory=list)  # backing services this target needs
    durable: bool = False  # declared durable (a refapp's durability.txt): Tier 3 as with --durable

    @property
    def engine(self) -> str:
        return self.spec.cell_engine()


@dataclass
class TargetArgs:
    """The target flags of ``validate`` (exactly one of refapp / app / cmd / url, or none)."""

    refapp: str | None = None
    app: str | None = None
    app_dir: str | None = None
    cmd: str | None = None
    url: str | None = None
    engine: str = "auto"
    matrix: bool = False
    refapps: list[str] = field(default_factory=list)  # matrix refapps (empty: all)
    engines: list[str] = field(default_factory=list)  # matrix engines (empty: all)
    cells: list[tuple[str, str]] = field(default_factory=list)  # matrix (refapp, engine) pairs (empty: the product)
    spec: Path | None = None
    markov: Path | None = None
    label: str | None = None
    health_path: str = "/healthz"
    allow_remote: bool = False
    ready_timeout: float = 30.0

    def kind(self) -> str:
        kinds = [k for k in ("refapp", "app", "cmd", "url") if getattr(self, k)]
        if len(kinds) > 1:
            raise UsageError(f"choose one target: --{' / --'.join(kinds)} given together")
        return kinds[0] if kinds else "refapp"


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _refapp_plans(args: TargetArgs, engines: list[str], common: dict) -> list[CellPlan]:
    from ..targets.refapps import list_refapps, refapp_dir, refapp_durable, refapp_services

    if args.matrix and not args.refapp:
        slugs = args.refapps or list_refapps()
    else:
        slugs = [args.refapp or "auth_session_ratelimit"]
    pairs = args.cells if args.matrix and args.cells else [(slug, e) for slug in slugs for e in engines]
    for slug in dict.fromkeys(slug for slug, _ in pairs):
        refapp_dir(slug)  # an unknown slug is one line naming the known ones
    return [CellPlan(slug, TargetSpec(kind="refapp", refapp=slug, engine=e, **common),
                     openapi=refapp_dir(slug) / "openapi.yaml",
                     markov=args.markov or _existing(refapp_dir(slug) / "markov.yaml"),
                     services=refapp_services(slug), durable=refapp_durable(slug))
            for slug, e in pairs]


def parse_cells(text: str | None) -> list[tuple[str, str]]:
    """``--cells auth_jwt_csrf:uvicorn,kitchen_sink:granian``: the matrix's (refapp, engine) pairs,
    in order, each engine resolved (an unknown one is one line naming the known ones)."""
    from ..targets.engines import resolve_engine

    pairs = []
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        refapp, sep, engine = item.partition(":")
        if not sep or not refapp.strip() or not engine.strip():
            raise UsageError(f"--cells {item!r}: expected REFAPP:ENGINE, e.g. kitchen_sink:uvicorn")
        pair = (refapp.strip(), resolve_engine(engine.strip()))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def plan_cells(args: TargetArgs, slices: list[str] | None) -> list[CellPlan]:
    """The cells of the run, every named file checked (one clear line on a bad one)."""
    from ..targets.engines import ENGINES, resolve_engine

    kind = args.kind()
    for name, path in (("--spec", args.spec), ("--markov", args.markov)):
        if path is not None and not path.is_file():
            raise UsageError(f"{name} {path}: no such file")
    if args.health_path[:1] != "/":
        raise UsageError("--health-path must start with '/'")
    common = dict(health_path=args.health_path, allow_remote=args.allow_remote, ready_timeout=args.ready_timeout)
    if kind in ("refapp", "app"):
        engines = [resolve_engine(e) for e in ((args.engines or list(ENGINES)) if args.matrix else [args.engine])]
        if kind == "refapp":
            plans = _refapp_plans(args, engines, common)
        else:
            plans = [CellPlan(args.label or args.app, TargetSpec(kind="app", app=args.app, app_dir=args.app_dir,
                                                                 engine=e, **common),
                              openapi=args.spec, markov=args.markov) for e in engines]
    elif kind == "cmd":
        plans = [CellPlan(args.label or "cmd", TargetSpec(kind="cmd", cmd=args.cmd, app_dir=args.app_dir, **common),
                          openapi=args.spec, markov=args.markov)]
    else:
        from ..targets.launcher import parse_target_url
        from ..targets.safety import check_target_allowed

        check_target_allowed(parse_target_url(args.url)[0], args.allow_remote)  # refuse before anything starts
        plans = [CellPlan(args.label or "url", TargetSpec(kind="url", url=args.url, **common), openapi=args.spec,
                          markov=args.markov)]
    if not plans:
        raise UsageError("no cells to run (empty --refapps/--engines?)")
    _check_files(plans, args.spec, slices)
    for i, p in enumerate(plans, 1):
        p.index = i
    return plans


def _check_files(plans: list[CellPlan], spec: Path | None, slices: list[str] | None) -> None:
    """A malformed spec or markov.yaml is one clear line now, not a failure mid-run."""
    if spec is not None:
        from .openapi import load_operations

        load_operations(spec)
    if not slices or "markov" in slices:
        from .tier1.markov.model import load_markov

        for mpath in dict.fromkeys(p.markov for p in plans if p.markov is not None):
            load_markov(mpath)


def plan_warnings(plans: list[CellPlan], slices: list[str] | None = None, fuzz_only: bool = False) -> list[str]:
    """What the run will not judge because an input is empty (one line each, said before it starts)."""
    from .openapi import load_operations

    out = []
    for spec in dict.fromkeys(p.openapi for p in plans if p.openapi is not None):
        if not spec.is_file() or load_operations(spec):
            continue
        if fuzz_only:
            out.append(f"{spec} declares no operations: Tier 2 has nothing to fuzz (I-API-* not judged); "
                       "add paths to the spec")
            continue
        markov = "" if slices and "markov" not in slices else \
            "the markov slice's walkers will idle (no session traffic, no I-DRV-1, no markov 5xx); "
        out.append(f"{spec} declares no operations: {markov}Tier 2 has nothing to fuzz (I-API-* not judged); "
                   "Tier 3 finds no key/value or create -> read pair. Add paths to the spec, or pass "
                   "--slices adversarial to run only what needs none")
    return out


def check_services(names: list[str]) -> list[str]:
    for svc in names:
        if svc not in SERVICES:
            raise UsageError(f"unknown service {svc!r}; services are {','.join(SERVICES)}")
    return names


def choose_run_dir(out: Path | None, results_dir: Path, plans: list[CellPlan], matrix: bool) -> Path:
    """--out, else results/<ts>-validate-matrix-<arch>/ or results/<ts>-validate-<version>/."""
    from ..results.schema import normalize_arch
    from ..results.store import run_folder

    if out is not None:
        return out
    if matrix:
        return run_folder(results_dir, "validate-matrix", normalize_arch())
    version = os.environ.get("PROBATORIUM_TARGET_VERSION") or os.environ.get("CELERIS_VERSION") \
        or f"{plans[0].label}-{plans[0].engine}"
    return run_folder(results_dir, "validate", version)


def declares(openapi: Path | None, method: str, path: str) -> bool:
    """Whether the target's OpenAPI document declares this operation."""
    if openapi is None or not openapi.is_file():
        return False
    from .openapi import load_operations

    return any(op.method == method and op.path == path for op in load_operations(openapi))


def refapp_versions(spec: TargetSpec) -> dict[str, str]:
    """Versions of the packages a refapp lists in its requirements.in (the stack under test)."""
    if spec.kind != "refapp" or not spec.refapp:
        return {}
    from importlib import metadata

    from ..targets.refapps import refapp_dir

    out: dict[str, str] = {}
    req = refapp_dir(spec.refapp) / "requirements.in"
    if req.is_file():
        for line in req.read_text().splitlines():
            name = re.split(r"[<>=\[;\s]", line.strip(), maxsplit=1)[0]
            if name and not name.startswith("#"):
                try:
                    out[name] = metadata.version(name)
                except metadata.PackageNotFoundError:
                    out[name] = "not installed"
    return out
