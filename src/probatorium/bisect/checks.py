"""What a bisect probe decides: good, bad or skip, with one line of evidence.

* `PredicateCheck` serves an app with an engine started from the probe's venv (through the one
  launcher) and runs our own adversarial case(s) through the adversarial slice's own code path
  (calibration, `run_case`, `verdict.judge`); bad = a case's verdict, or a framing violation,
  is predicate P (the catalogue's verdict→predicate mapping).
* `CmdCheck` runs the user's command with the probe's python first on PATH (and in
  ``$PROBATORIUM_BISECT_PYTHON``): exit 0 = good, 125 = skip, any other = bad (git bisect run).

An engine that does not start, or a case that cannot connect, is a skip with the reason as its
evidence: the release was not judged.
"""

from __future__ import annotations

import asyncio
import difflib
import shlex
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .. import procs
from ..errors import TargetStartError, UsageError
from ..targets.engines import ENGINE_DEFS, engine_argv, resolve_engine
from ..targets.launcher import TargetSpec, start_target
from ..targets.refapps import refapp_app_target
from ..validate.invariants import CATALOGUE, VERDICT_PREDICATES, predicate_for
from ..validate.tier1.adversarial.cases import CASES
from ..validate.tier1.adversarial.catalogue import Case
from ..validate.tier1.adversarial.runner import AdversarialSlice
from .probeenv import ProbeEnv

#: Exit status of a --cmd-check that asks to skip the release (git bisect run's convention).
SKIP_EXIT = 125
ECHO_APP = ("echoapp:app", Path(__file__).resolve().parent / "app")
CASES_BY_NAME = {c.name: c for c in CASES}
#: Predicates an adversarial case can show: the slice's verdicts, and the framing checks that
#: run on every response it reads.
ADVERSARIAL_PREDICATES = tuple(dict.fromkeys(
    [pred for (slice_name, _), pred in VERDICT_PREDICATES.items() if slice_name == "adversarial"]
    + ["I-RFC-1", "I-RFC-2"]))


@dataclass
class ProbeOutcome:
    state: str  # good | bad | skip
    evidence: str


def engine_for(package: str) -> str:
    """The engine a package belongs to (the first engine listing it), else ``auto``."""
    name = package.lower().replace("_", "-")
    for engine, definition in ENGINE_DEFS.items():
        if name in definition.packages:
            return engine
    return "auto"


def check_predicate(predicate: str) -> str:
    """`predicate` if an adversarial case can show it; one UsageError line otherwise."""
    if predicate not in CATALOGUE:
        raise UsageError(f"unknown predicate {predicate!r}; adversarial cases judge: {', '.join(ADVERSARIAL_PREDICATES)} "
                         "(probatorium invariants lists them all)")
    if predicate not in ADVERSARIAL_PREDICATES:
        raise UsageError(f"predicate {predicate} is not judged by an adversarial case (those judge "
                         f"{', '.join(ADVERSARIAL_PREDICATES)}); use --cmd-check for it")
    return predicate


def find_cases(names: list[str]) -> list[Case]:
    """The adversarial cases named (all of them when none is); one UsageError line for a typo."""
    if not names:
        return list(CASES)
    out = []
    for name in names:
        if name not in CASES_BY_NAME:
            near = list(dict.fromkeys([c for c in CASES_BY_NAME if c.startswith(name)]
                                      + difflib.get_close_matches(name, CASES_BY_NAME, n=3)))[:3]
            hint = f"; did you mean {', '.join(near)}?" if near else \
                "; the cases are listed in src/probatorium/validate/tier1/adversarial/cases.py"
            raise UsageError(f"unknown adversarial case {name!r}{hint}")
        out.append(CASES_BY_NAME[name])
    return out


class ServedApp:
    """An app served by an engine started from a probe's venv, through the one launcher."""

    def __init__(self, engine: str, *, refapp: str | None = None, app: str | None = None,
                 app_dir: str | None = None, ready_timeout: float = 30.0) -> None:
        self.engine = resolve_engine(engine)
        if refapp:
            self.app, path = refapp_app_target(refapp)
            self.app_dir = str(path.resolve())
            self.label = f"refapp {refapp}"
        elif app:
            if ":" not in app:
                raise UsageError(f"--app must be 'module:attr', got {app!r}")
            self.app, self.app_dir = app, str(Path(app_dir or ".").resolve())
            if not Path(self.app_dir).is_dir():
                raise UsageError(f"--app-dir {app_dir!r} is not a directory")
            self.label = f"app {app}"
        else:
            self.app, self.app_dir = ECHO_APP[0], str(ECHO_APP[1])
            self.label = "the built-in echo app"
        self.ready_timeout = ready_timeout
        self.note = ""  # how the last start differed from the engine registry's command line

    def packages(self) -> tuple[str, ...]:
        """The engine's packages: their versions are recorded with each probe."""
        return ENGINE_DEFS[self.engine].packages

    def start(self, probe: ProbeEnv):
        """The running target, or a skip outcome when the engine does not start. A uvicorn release
        older than its websockets-sansio protocol (0.35) refuses our --ws flag: it is started
        again with --ws auto, the release's own default, and `note` says so."""
        argv = engine_argv(self.engine, self.app, "{port}", self.app_dir, python=probe.python)
        self.note = ""
        try:
            return self._start(probe, argv)
        except TargetStartError as e:
            if "websockets-sansio" not in str(e) or "--ws" not in argv:
                return ProbeOutcome("skip", f"{self.engine} did not start: {e}")
        at = argv.index("--ws") + 1
        argv[at] = "auto"
        try:
            target = self._start(probe, argv)
        except TargetStartError as e:
            return ProbeOutcome("skip", f"{self.engine} did not start (also with --ws auto): {e}")
        self.note = "(this release has no --ws websockets-sansio: served with --ws auto) "
        return target

    def _start(self, probe: ProbeEnv, argv: list[str]):
        env = probe.env()
        # A cmd target: the engine runs under the probe's python, with no inherited PYTHONPATH.
        spec = TargetSpec(kind="cmd", cmd=shlex.join(argv), app_dir=self.app_dir, ready_timeout=self.ready_timeout,
                          env={k: env[k] for k in ("PATH", "VIRTUAL_ENV")} | {"PYTHONPATH": ""})
        return start_target(spec, probe.root / "logs")


class _OnServedApp:
    """A check that starts `self.served` in each probe: its packages and working folder."""

    served: ServedApp

    def packages(self) -> tuple[str, ...]:
        return self.served.packages()

    @property
    def workdir(self) -> str:
        return self.served.app_dir


class PredicateCheck(_OnServedApp):
    """Bad = an adversarial case's verdict against the probe's engine violates the predicate."""

    def __init__(self, predicate: str, cases: list[Case], served: ServedApp, *, quiet_timeout: float = 3.0) -> None:
        self.predicate = check_predicate(predicate)
        self.cases = cases
        self.served = served
        self.quiet_timeout = quiet_timeout

    def describe(self) -> str:
        which = self.cases[0].name if len(self.cases) == 1 else f"{len(self.cases)} adversarial cases"
        return f"{which} judged for {self.predicate} on {self.served.engine} serving {self.served.label}"


    def run(self, probe: ProbeEnv) -> ProbeOutcome:
        target = self.served.start(probe)
        if isinstance(target, ProbeOutcome):
            return target
        try:
            out = asyncio.run(self._judge(target))
        finally:
            target.stop(grace=3.0)
        return ProbeOutcome(out.state, self.served.note + out.evidence)

    async def _judge(self, target) -> ProbeOutcome:
        async def alive() -> bool:
            return target.alive()

        host, port = target.host, target.port
        sl = AdversarialSlice(host, port, cases=self.cases, quiet_timeout=self.quiet_timeout, alive=alive)
        why = await sl.prepare()
        if why:
            return ProbeOutcome("skip", why)
        seen: Counter = Counter()
        for i, case in enumerate(self.cases):
            _, _, v, _ = await sl.run_case(case, f"bisect{i}")
            seen[v.verdict] += 1
            hit = predicate_for("adversarial", v.verdict) == self.predicate or any(
                x.predicate == self.predicate for x in v.violations)
            framing = "; ".join(f"{x.predicate} {x.detail}" for x in v.violations)
            line = f"{case.name}: verdict {v.verdict} - {v.reason}" + (f" [{framing}]" if framing else "")
            if hit:
                return ProbeOutcome("bad", line)
            if v.verdict == "conn_error" and len(self.cases) == 1:
                return ProbeOutcome("skip", line)
            if v.verdict == "crash" and not target.alive():
                return ProbeOutcome("skip", f"the target died on {case.name} (verdict crash): later cases unjudged")
        if len(self.cases) == 1:
            return ProbeOutcome("good", line)
        return ProbeOutcome("good", f"{len(self.cases)} cases, none {self.predicate}: "
                                    + ", ".join(f"{k} {n}" for k, n in seen.most_common()))


class IncidentCheck(_OnServedApp):
    """Bad = an incident dossier's own repro.py reproduces against the probe's engine (its exit
    1, REPRODUCED); 0 is good; 2 (UNREACHABLE) or anything else is a skip."""

    def __init__(self, dossier: Path, served: ServedApp, timeout: float) -> None:
        self.dossier, self.served, self.timeout = dossier, served, timeout

    def describe(self) -> str:
        return f"{self.dossier.name}/repro.py on {self.served.engine} serving {self.served.label}"


    def run(self, probe: ProbeEnv) -> ProbeOutcome:
        target = self.served.start(probe)
        if isinstance(target, ProbeOutcome):
            return target
        try:
            done = subprocess.run([probe.python, str(self.dossier / "repro.py"), f"{target.host}:{target.port}"],
                                  capture_output=True, text=True, timeout=self.timeout, cwd=self.dossier,
                                  env=probe.env())
        except subprocess.TimeoutExpired:
            return ProbeOutcome("skip", f"repro.py ran past --check-timeout {self.timeout:g}s")
        finally:
            target.stop(grace=3.0)
        lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
        said = " | ".join(lines[-2:])[:300] or (done.stderr.strip().splitlines() or ["no output"])[-1]
        state = {1: "bad", 0: "good"}.get(done.returncode, "skip")
        return ProbeOutcome(state, f"{self.served.note}repro.py exit {done.returncode}: {said}")


class CmdCheck:
    """Bad = the user's command exits non-zero (125: skip) with the probe's python on PATH."""

    def __init__(self, command: str, timeout: float) -> None:
        if not command.strip():
            raise UsageError("--cmd-check needs a command")
        if timeout <= 0:
            raise UsageError("--check-timeout must be positive")
        self.command, self.timeout = command, timeout

    def describe(self) -> str:
        return f"command {self.command!r} (0 good, {SKIP_EXIT} skip, else bad)"

    def packages(self) -> tuple[str, ...]:
        return ()

    def run(self, probe: ProbeEnv) -> ProbeOutcome:
        log = probe.root / "check.log"
        with open(log, "wb") as out:
            child = procs.spawn(["/bin/sh", "-c", self.command], env=probe.env(), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            t0 = time.monotonic()
            try:
                code = child.popen.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                procs.stop(child, stop_signal=signal.SIGTERM, grace=2.0)
                return ProbeOutcome("skip", f"the check ran past --check-timeout {self.timeout:g}s: stopped")
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        last = f": {lines[-1].strip()[:200]}" if lines else ""
        took = f" after {time.monotonic() - t0:.1f}s"
        state = "good" if code == 0 else "skip" if code == SKIP_EXIT else "bad"
        return ProbeOutcome(state, f"exit {code}{took}{last}")

