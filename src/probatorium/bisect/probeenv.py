"""A throw-away virtual environment with one released version of the package under test.

Layout of a probe under the bisect's temporary folder::

    probe-<version>/venv/   python -m venv --without-pip (no system site-packages)
    probe-<version>/pkgs/   pip install --target: NAME==VERSION (and, unless --no-deps, the
                            dependencies that release asks for, resolved afresh)
    probe-<version>/venv/lib/pythonX.Y/site-packages/probatorium-probe.pth
                            two lines: pkgs/, then the site-packages of the environment
                            probatorium runs in (the engines, starlette, ...)

so everything the package under test brings shadows the shared environment, and everything
else (an engine's optional extras, the reference apps' framework) comes from it. pip runs from
probatorium's own environment with a shared cache dir (repeated bisects download nothing).
`ProbeEnv.verify` asks the probe's interpreter which version of the package it imports and
from where: a probe that would not test the release it names is an error, never a verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from ..errors import InfraError

#: Seconds one pip install may take (a cold cache downloads; a sdist may build).
PIP_TIMEOUT = 600.0
#: Lines of pip's stderr quoted when an install fails.
PIP_TAIL = 3


def default_pip_cache() -> Path:
    """``$PROBATORIUM_PIP_CACHE``, else ``~/.cache/probatorium/pip``."""
    env = os.environ.get("PROBATORIUM_PIP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "probatorium" / "pip"


class InstallFailed(Exception):
    """pip could not install this release here (no wheel for this Python, a build error): the
    release is skipped, not judged."""


@dataclass
class ProbeEnv:
    root: Path
    package: str
    version: str

    @property
    def venv_dir(self) -> Path:
        return self.root / "venv"

    @property
    def pkgs(self) -> Path:
        return self.root / "pkgs"

    @property
    def python(self) -> str:
        return str(self.venv_dir / "bin" / "python")

    @property
    def bin_dir(self) -> str:
        return str(self.venv_dir / "bin")

    def env(self) -> dict[str, str]:
        """The environment a probe process runs in: the probe's bin/ first on PATH, no inherited
        PYTHONPATH (it would shadow the probe's packages)."""
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env["VIRTUAL_ENV"] = str(self.venv_dir)
        env["PATH"] = os.pathsep.join([self.bin_dir, env.get("PATH", "")])
        env["PROBATORIUM_BISECT_PYTHON"] = self.python
        env["PROBATORIUM_BISECT_PACKAGE"] = self.package
        env["PROBATORIUM_BISECT_VERSION"] = self.version
        return env


def create_probe(root: Path, package: str, version: str, cache_dir: Path, *, deps: bool = True) -> ProbeEnv:
    """Build the probe for `package`==`version` under `root`; InstallFailed when pip cannot."""
    probe = ProbeEnv(root, package, version)
    shutil.rmtree(root, ignore_errors=True)  # a kept probe of an earlier run: pip --target would not replace it
    root.mkdir(parents=True)
    venv.EnvBuilder(system_site_packages=False, with_pip=False, clear=True, symlinks=True).create(probe.venv_dir)
    site = _site_packages(probe.venv_dir)
    shared = sysconfig.get_paths()["purelib"]
    (site / "probatorium-probe.pth").write_text(f"{probe.pkgs}\n{shared}\n")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
           "--no-input", "--target", str(probe.pkgs), "--cache-dir", str(cache_dir), f"{package}=={version}"]
    if not deps:
        cmd.insert(4, "--no-deps")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    except subprocess.TimeoutExpired:
        raise InstallFailed(f"pip install {package}=={version} took more than {PIP_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip() and "is ignored" not in ln]
        raise InstallFailed(f"pip install {package}=={version} failed: {' | '.join(lines[-PIP_TAIL:]) or 'no output'}")
    return probe


def _site_packages(venv_dir: Path) -> Path:
    """The purelib folder of the venv at `venv_dir` (same layout as this interpreter's)."""
    rel = Path(sysconfig.get_paths()["purelib"]).relative_to(sysconfig.get_paths()["data"])
    site = venv_dir / rel
    site.mkdir(parents=True, exist_ok=True)
    return site


_VERIFY = """
import importlib.metadata as m, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        d = m.distribution(name)
        out[name] = {"version": d.version, "location": str(d.locate_file(""))}
    except m.PackageNotFoundError:
        out[name] = {"version": "not installed", "location": ""}
print(json.dumps(out))
"""


def installed_versions(probe: ProbeEnv, names: list[str], cwd: str | None = None) -> dict[str, dict[str, str]]:
    """What the probe's interpreter imports for each distribution, run in `cwd` (the check's
    working directory: it is first on sys.path there): version and location."""
    try:
        done = subprocess.run([probe.python, "-c", _VERIFY, *names], capture_output=True, text=True,
                              timeout=60, env=probe.env(), cwd=cwd)
        return json.loads(done.stdout)
    except (subprocess.TimeoutExpired, OSError, ValueError) as e:
        raise InfraError(f"cannot ask the probe's python for its versions: {e}") from None


def verify(probe: ProbeEnv, also: tuple[str, ...] = (), cwd: str | None = None) -> dict[str, str]:
    """Versions the probe really imports (the package under test first, then `also`); InfraError
    when the package under test is not the release installed for it."""
    names = list(dict.fromkeys([probe.package, *also]))
    seen = installed_versions(probe, names, cwd)
    got = seen[probe.package]
    if got["version"] == "not installed" or Version(got["version"]) != Version(probe.version) \
            or Path(got["location"]).resolve() != probe.pkgs.resolve():
        raise InfraError(f"the probe for {probe.package} {probe.version} imports {got['version']} "
                         f"from {got['location'] or 'nowhere'}, not the release installed in {probe.pkgs}")
    return {name: seen[name]["version"] for name in names}
