"""The wheelhouse a deploy ships: probatorium's wheel and exactly the pinned packages the hosts need.

Hosts need not reach a package index (netns hosts cannot): the controller
builds every wheel with pip (from the registry or pip's cache) and the hosts
install with ``pip install --no-index``. Which packages: the closure, over the
lock's ``# via`` lines, of the core requirements (less what only the
controller uses), the asked engines' packages and the asked refapps'
``requirements.in``. A package P is in the closure when one of the packages
its ``# via`` names is: the lock says P is there because that one needs it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from probatorium.errors import InfraError, UsageError, warning_line
from probatorium.targets.engines import ENGINE_DEFS, resolve_engine
from probatorium.targets.refapps import refapp_dir

REPO = Path(__file__).resolve().parents[3]
LOCK = REPO / "requirements.lock"
CORE_IN = REPO / "requirements" / "core.in"
#: Core requirements only the controller uses (ansible drives the hosts; the hosts never run it).
CONTROLLER_ONLY = frozenset({"ansible-core"})
#: DEPLOY_COMPETITORS words this driver understands (the bench competitors outside Python are not deployed).
COMPETITOR_WORDS = ("python-only",)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """``name → (version, names in its # via)`` of a uv/pip-compile lock (``-r file`` kept as written)."""
    pins: dict[str, tuple[str, set[str]]] = {}
    current = ""
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            current = canonical(match.group(1))
            pins[current] = (match.group(2), set())
            continue
        body = line.strip().lstrip("#").strip()
        if not current or not line.lstrip().startswith("#") or not body:
            continue
        if body.startswith("via"):
            body = body[3:].strip()
        if body:
            pins[current][1].add(body if body.startswith("-r ") else canonical(body.split()[0]))
    return {name: (version, frozenset(via)) for name, (version, via) in pins.items()}


def requirement_names(text: str) -> list[str]:
    """The package names a requirements.in lists (comments, options and extras dropped)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            match = _REQ_NAME.match(line)
            if match:
                names.append(canonical(match.group(1)))
    return names


def closure(pins: dict[str, tuple[str, frozenset[str]]], roots: set[str]) -> set[str]:
    """Every pinned package `roots` need, following the lock's ``# via`` lines."""
    missing = sorted(r for r in roots if r not in pins)
    if missing:
        raise UsageError(f"{', '.join(missing)} not pinned in {LOCK.name}: add it to requirements/*.in and re-lock")
    chosen = set(roots)
    grew = True
    while grew:
        grew = False
        for name, (_, via) in pins.items():
            if name not in chosen and via & chosen:
                chosen.add(name)
                grew = True
    return chosen


def competitor_engines(word: str | None) -> tuple[str, ...]:
    """DEPLOY_COMPETITORS → extra engines to ship: ``python-only``/``all`` = every Python engine."""
    if not word or not word.strip():
        return ()
    word = word.strip()
    if word == "all":  # honest about what "all" can mean here: say what is left out, once
        print(warning_line("DEPLOY_COMPETITORS=all: the ansible driver ships the Python engines only "
                           f"({', '.join(ENGINE_DEFS)}); the bench's non-Python competitors are not deployed"),
              file=sys.stderr)
    if word in ("python-only", "all"):
        return tuple(ENGINE_DEFS)
    names = [w.strip() for w in word.split(",") if w.strip()]
    unknown = [n for n in names if n not in ENGINE_DEFS]
    if unknown:
        raise UsageError(f"DEPLOY_COMPETITORS: {', '.join(unknown)} cannot be deployed by the ansible driver "
                         f"(it ships Python engines only: {', '.join(ENGINE_DEFS)}; or all / python-only)")
    return tuple(names)


@dataclass(frozen=True)
class WheelPlan:
    """The pins a deploy ships, and why."""

    pins: dict[str, str]  # canonical name → version
    engines: tuple[str, ...]
    refapps: tuple[str, ...]

    def key(self, source_digest: str) -> str:
        text = "\n".join(f"{n}=={v}" for n, v in sorted(self.pins.items())) + source_digest
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_wheels(engines: tuple[str, ...], refapps: tuple[str, ...], lock_text: str | None = None,
                distributions: tuple[str, ...] = ()) -> WheelPlan:
    """The pins for these engines, refapps and `distributions` (core less the controller-only packages)."""
    pins = parse_lock(lock_text if lock_text is not None else LOCK.read_text())
    roots = {n for n in requirement_names(CORE_IN.read_text()) if n not in CONTROLLER_ONLY}
    roots.update(canonical(d) for d in distributions)
    resolved = tuple(dict.fromkeys(resolve_engine(e) for e in engines))
    for engine in resolved:
        roots.update(canonical(p) for p in ENGINE_DEFS[engine].packages)
    for slug in refapps:
        req = refapp_dir(slug) / "requirements.in"
        if req.is_file():
            roots.update(requirement_names(req.read_text()))
    chosen = closure(pins, roots)
    return WheelPlan(pins={n: pins[n][0] for n in sorted(chosen)}, engines=resolved, refapps=tuple(refapps))


def source_digest() -> str:
    """A digest of probatorium's source (a changed source means a new wheel)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "probatorium").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    digest.update((REPO / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def _pip(args: list[str], timeout: float) -> None:
    try:
        done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InfraError(f"pip {args[0]} took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr.strip() or done.stdout.strip()).splitlines()[-3:])
        raise InfraError(f"pip {args[0]} failed: {tail}")


def build_wheelhouse(plan: WheelPlan, cache_root: Path) -> Path:
    """The wheelhouse folder for `plan` (built once per plan + source, then reused)."""
    folder = cache_root / plan.key(source_digest())
    if (folder / ".complete").is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _pip(["wheel", "--no-deps", "--quiet", "-w", str(partial), str(REPO)], timeout=300)
    specs = [f"{n}=={v}" for n, v in plan.pins.items()]
    _pip(["wheel", "--no-deps", "--quiet", "-w", str(partial), *specs], timeout=600)
    (partial / ".complete").write_text("\n".join(specs) + "\n")
    partial.rename(folder)
    return folder


def wheelhouse_size(folder: Path) -> tuple[int, int]:
    """(wheel count, total bytes) of a wheelhouse."""
    wheels = list(folder.glob("*.whl"))
    return len(wheels), sum(w.stat().st_size for w in wheels)
