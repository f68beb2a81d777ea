"""`probatorium bisect`: which release of a package first shows (or first loses) a behaviour.

The releases between --good and --bad come from the package index (releases.py); each probe
installs one of them into a throw-away venv (probeenv.py), verifies that the venv imports that
very release, and runs the check (checks.py); the search (search.py) probes both endpoints,
then halves. When --good is the NEWER release, the behaviour was fixed, not broken, and the
search reports the first good release instead. Every probe is printed as it ends and kept in
the result (and in --json): version, state, evidence line, versions the probe imported, seconds.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InfraError
from .probeenv import InstallFailed, create_probe, default_pip_cache, verify
from .releases import DEFAULT_INDEX, Release, fetch_index, releases_between
from .search import PremiseError, bisect_releases


@dataclass
class BisectRequest:
    package: str
    good: str
    bad: str
    check: object  # checks.PredicateCheck | checks.CmdCheck
    index: str = DEFAULT_INDEX
    pip_cache: Path | None = None
    deps: bool = True
    prereleases: bool = False
    yanked: bool = False
    keep: Path | None = None  # keep the probe venvs here instead of a temporary folder


@dataclass
class Probe:
    version: str
    state: str
    evidence: str
    imported: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class BisectResult:
    package: str
    good: str
    bad: str
    direction: str  # "broke" (good is older) or "fixed" (good is newer)
    check: str
    releases: list[str]
    probes: list[Probe]
    first: str | None = None  # first release in the new state
    last: str | None = None  # last release in the old state
    undecided: list[str] = field(default_factory=list)  # skipped releases that may be the first
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        """The last line: the answer, or why there is none."""
        if self.error:
            return f"no answer: {self.error}"
        new, old = ("bad", "good") if self.direction == "broke" else ("good", "bad")
        if self.undecided:
            line = (f"first {new} release: one of {', '.join([*self.undecided, self.first or '?'])} "
                    f"(last {old}: {self.last}; skipped releases could not be judged)")
        else:
            line = f"first {new} release: {self.first} (last {old}: {self.last})"
        if self.direction == "fixed":
            line += " - the behaviour was fixed, not broken (--good is the newer release)"
        return line


def probe_line(package: str, p: Probe) -> str:
    """One printed line per probe."""
    imports = f" [imports {', '.join(f'{k} {v}' for k, v in p.imported.items())}]" if p.imported else ""
    return f"probe {package} {p.version}: {p.state.upper()} ({p.seconds:.1f}s){imports} - {p.evidence}"


def run_bisect(req: BisectRequest, say: Callable[[str], None]) -> BisectResult:
    """Bisect; `say` gets the progress lines and each probe line as the probe ends."""
    doc = fetch_index(req.package, req.index)
    releases, good, bad = releases_between(doc, req.package, req.good, req.bad,
                                           prereleases=req.prereleases, yanked=req.yanked)
    direction = "broke" if good.key < bad.key else "fixed"
    result = BisectResult(package=req.package, good=good.version, bad=bad.version, direction=direction,
                          check=req.check.describe(), releases=[r.version for r in releases], probes=[])
    say(f"bisect {req.package}: {len(releases)} releases from {releases[0].version} to {releases[-1].version} "
        f"({'--good older: looking for the first bad' if direction == 'broke' else '--good newer: looking for the first good'}); "
        f"check: {result.check}")
    root = Path(req.keep) if req.keep else Path(tempfile.mkdtemp(prefix="probatorium-bisect-"))
    cache = req.pip_cache or default_pip_cache()
    try:
        def probe(i: int) -> str:
            p = _probe_release(req, releases[i], root, cache)
            result.probes.append(p)
            say(probe_line(req.package, p))
            return p.state

        try:
            found = bisect_releases(len(releases), "good" if direction == "broke" else "bad", probe)
        except PremiseError:
            last = result.probes[-1]
            result.error = (f"{req.package} {last.version} was expected to be "
                            f"{'good' if last.version == good.version else 'bad'} but the check says {last.state}")
            return result
        result.first, result.last = releases[found.hi].version, releases[found.lo].version
        result.undecided = [releases[i].version for i in found.undecided]
        return result
    finally:
        if not req.keep:
            shutil.rmtree(root, ignore_errors=True)


def _probe_release(req: BisectRequest, release: Release, root: Path, cache: Path) -> Probe:
    t0 = time.monotonic()
    where = root / f"probe-{release.version}"
    try:
        env = create_probe(where, req.package, release.version, cache, deps=req.deps)
    except InstallFailed as e:
        return Probe(release.version, "skip", str(e), seconds=time.monotonic() - t0)
    # InfraError: the probe would not test this release (asked where the check runs: an app dir
    # is first on the engine's sys.path)
    imported = verify(env, req.check.packages(), getattr(req.check, "workdir", None))
    try:
        outcome = req.check.run(env)
    except OSError as e:
        raise InfraError(f"probe {req.package} {release.version}: {e}") from None
    return Probe(release.version, outcome.state, outcome.evidence, imported, time.monotonic() - t0)
