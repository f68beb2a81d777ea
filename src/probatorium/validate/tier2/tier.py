"""Tier 2 as a tier unit: stateful API fuzzing from the target's OpenAPI document (SPEC.md §5, §9).

Walkers (concurrent, each with its own two users and connections) take
sequences from one seeded queue — the corpus first, then the lean tasks
(:mod:`.planner`), then in ``full`` mode BFS pairs and seeded random walks
until the budget ends — run them, and hand the exchanges to the checkers
(:mod:`.checks`). A finding goes through :mod:`.findings` (confirm, shrink,
dossier). The ``tier_2`` tally is string → int; the catalogue judges it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ...errors import ProbatoriumError
from ...seeds import derive_seed
from ..tier_api import TierEnv
from .checks import CHECKERS, check_sequence
from .findings import FindingHandler
from .minischema import schema_errors
from .planner import USERS, Login, Planner, ops_view
from .runner import Runner

DISCOVERY_PATHS = ("/openapi.json", "/openapi.yaml")
DEFAULT_WALKERS = 4
# A walker's two users are replaced every USER_LIFETIME sequences: what a user accumulates
# (per-user quotas of keys, notes, items; long listings) would otherwise starve a long run.
USER_LIFETIME = 10
MAX_CORPUS = 500


def find_login(spec, markov: Path | None, login_path: str | None) -> Login | None:
    """The login contract (shared spec §3): the Markov model's ``login:``, else the operation
    whose operationId is ``login``, else a POST whose path ends in /login, else --login-path."""
    by_route = {(op.method, spec.base_path + op.path): op for op in spec.operations}
    if markov is not None:
        from ..tier1.markov.model import load_markov

        m = load_markov(markov)
        if m.login:
            op = by_route.get((m.login[0].upper(), m.login[1]))
            return Login(m.login[0].upper(), m.login[1], op.op_id if op else "login")
    for op in spec.operations:
        if op.declared_id == "login" or op.op_id == "login":
            return Login(op.method, spec.base_path + op.path, op.op_id)
    for op in spec.operations:
        if op.method == "POST" and op.path.rstrip("/").endswith("/login"):
            return Login(op.method, spec.base_path + op.path, op.op_id)
    if login_path:
        op = by_route.get(("POST", login_path))
        return Login("POST", login_path, op.op_id if op else "login")
    return None


def credential_gap(spec, graph, op, login: Login | None) -> str:
    """What `op`'s security requirement asks for that Tier 2 cannot obtain ("" when some
    alternative is satisfiable): a bearer token or OAuth/OpenID token comes from the login, an
    API key from the operation that issues it (`api.deps`, credential rule); HTTP basic or
    digest credentials, mutual TLS and a cookie API key are not given."""
    missing = []
    for requirement in op.security or [{}]:
        gaps = []
        for name in requirement if isinstance(requirement, dict) else ():
            scheme = spec.security_schemes.get(name) or {}
            kind, http = scheme.get("type"), str(scheme.get("scheme", "")).lower()
            if kind == "apiKey" and scheme.get("in") in ("header", "query") and graph is not None \
                    and graph.producers_of(op.op_id, str(scheme.get("name"))):
                continue
            if (kind == "http" and http == "bearer" or kind in ("oauth2", "openIdConnect")) and login is not None:
                continue
            if kind == "apiKey":
                gaps.append(f"an API key ({scheme.get('in')} {scheme.get('name')!r}, security scheme {name}) "
                            "that no operation of the document issues")
            elif kind == "http":
                gaps.append(f"HTTP {http or '?'} credentials (security scheme {name})")
            else:
                gaps.append(f"{kind or 'unknown'} credentials (security scheme {name})")
        if not gaps:
            return ""
        missing.append(" and ".join(gaps))
    return " or ".join(dict.fromkeys(missing))


def load_corpus(folder: Path | None) -> list[list[dict]]:
    """The sequences a corpus folder keeps (newest first is not needed: names are content hashes)."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json"))[:MAX_CORPUS]:
        try:
            steps = json.loads(path.read_text())["steps"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(steps, list) and steps:
            out.append(steps)
    return out


class Tier2:
    """Stateful API fuzzing (see the module docstring)."""

    number = 2
    key = "tier_2"
    sidecar = "tier2_tally.json"

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        self.tally: Counter = Counter()
        self.coverage: dict[str, Counter] = {}
        self.errors: list[str] = []
        self.stop_reason = ""
        self.spec = None
        self.graph = None
        self.handler: FindingHandler | None = None
        self.login: Login | None = None
        self.op_errors: dict[str, str] = {}  # operation → the last error of a request that got no answer
        self.streams: set[str] = set()
        self.upgrades: set[str] = set()

    def configure(self, options: dict[str, Any]) -> None:
        """Options of `probatorium fuzz` / validate: mode, corpus, login_path, walkers, discover, annotations."""
        self.options = dict(options)

    def applies(self, openapi: Path | None) -> str | None:
        if openapi is None and not self.options.get("discover"):
            return "no OpenAPI document"
        return None

    # ---- the spec ---------------------------------------------------------------------------
    async def _spec(self, env: TierEnv):
        from ...api.spec import SpecError, load_spec

        if env.openapi is not None:
            return load_spec(env.openapi)
        from ..tier1.markov.client import H1Connection

        host, port = env.address()
        tried = []
        for path in DISCOVERY_PATHS:
            conn = H1Connection(host, port, timeout=5.0, owner="tier2")
            try:
                res = await conn.request("GET", path)
            finally:
                await conn.close()
            tried.append(f"GET {path} → {res.status if res.status is not None else res.error}")
            if res.status == 200 and res.body:
                try:
                    return load_spec(res.body, name=f"http://{host}:{port}{path}")
                except SpecError as e:
                    tried[-1] += f" (not a usable OpenAPI document: {e})"
        self.stop_reason = "no OpenAPI document: " + "; ".join(tried)
        env.say(f"  tier 2: {self.stop_reason}")
        return None

    # ---- the run ----------------------------------------------------------------------------
    async def run(self, env: TierEnv, budget_s: float) -> None:
        from ...api.deps import infer

        deadline = time.monotonic() + budget_s
        for pred in CHECKERS:
            self.tally[f"checked_{pred}"] += 0
            self.tally[f"findings_{pred}"] += 0
        try:
            spec = await self._spec(env)
        except ProbatoriumError as e:
            self.stop_reason = f"the OpenAPI document cannot be used: {e}"
            return
        if spec is None:
            return
        self.spec = spec
        self.graph = infer(spec, self.options.get("annotations"))
        self.login = find_login(spec, env.markov, self.options.get("login_path"))
        ops = ops_view(spec)
        self.tally["operations_total"] = len(spec.operations)
        self.handler = FindingHandler(ops, env.report, self.tally, env.cell_seed, env.say)
        corpus = load_corpus(self.options.get("corpus"))
        self.tally["corpus_loaded"] = len(corpus)
        env.say(f"  tier 2: {len(spec.operations)} operations, login "
                f"{self.login.method + ' ' + self.login.path if self.login else '(none)'}, "
                f"mode {self.options.get('mode', 'full')}, corpus {len(corpus)}")
        planner = Planner(spec, self.graph, self.login, {u: u for u in USERS})
        self.streams, self.upgrades = planner.streams, planner.upgrades
        if not planner.order:
            self.stop_reason = "the OpenAPI document declares no operation Tier 2 can send"
            return
        tasks = self._tasks(corpus, planner)
        walkers = max(1, int(self.options.get("walkers") or DEFAULT_WALKERS))
        await asyncio.gather(*(self._walker(i, env, ops, tasks, deadline) for i in range(walkers)))
        self.tally["operations_covered"] = sum(
            1 for st in self.coverage.values() if any(200 <= int(s) < 300 for s in st))
        self.tally["operations_reached"] = len(self.coverage)
        self.tally["pairs_seen"] = sum(len(st) for st in self.coverage.values())
        env.say(f"  tier 2: {self.tally['sequences']} sequences, {self.tally['requests']} requests, "
                f"{self.tally['operations_covered']}/{self.tally['operations_total']} operations with a 2xx, "
                f"{self.tally['pairs_seen']} (operation, status) pairs")
        for op, why in self._unreached().items():
            env.say(f"    no 2xx for {op}: {why}")

    def _tasks(self, corpus: list, planner: Planner):
        """The seeded queue: ("steps", steps) | ("task", kind, op_id) | ("pair", a, b) | ("walk", n)."""
        for steps in corpus:
            yield ("steps", steps)
        for kind, op_id in planner.lean_tasks():
            yield ("task", kind, op_id)
        if self.options.get("mode", "full") == "lean":
            return
        for a in planner.order:
            for b in planner.order:  # BFS depth 2: every ordered pair
                yield ("pair", a, b)
        n = 0
        while True:
            n += 1
            yield ("walk", n)

    def _users(self, env: TierEnv, walker: int, generation: int = 0) -> dict[str, str]:
        """The two users of `walker`'s `generation`-th lifetime (USER_LIFETIME sequences each)."""
        tag = derive_seed(env.cell_seed, "tier2", "users") & 0xFFFFFF
        gen = f"-g{generation}" if generation else ""
        return {u: f"t2-{tag:06x}-w{walker}{gen}-{u.lower()}" for u in USERS}

    def _build(self, planner: Planner, task: tuple, index: int, seed: int) -> list[dict]:
        rng = random.Random(derive_seed(seed, "tier2", "sequence", index))
        if task[0] == "steps":
            return task[1]
        if task[0] == "task":
            return planner.build(task[1], task[2], rng)
        if task[0] == "pair":
            return planner.pair(task[1], task[2], rng)
        return planner.random_walk(rng, rng.randint(3, 8))

    async def _walker(self, i: int, env: TierEnv, ops: dict, tasks, deadline: float) -> None:
        planner = Planner(self.spec, self.graph, self.login, self._users(env, i))
        runner = Runner(env.address)
        host, port = env.address()
        mine = 0
        while time.monotonic() < deadline and not env.stop():
            try:
                index, task = self.tally["sequences"], next(tasks)
            except StopIteration:
                return
            self.tally["sequences"] += 1
            planner.users = self._users(env, i, mine // USER_LIFETIME)
            mine += 1
            try:
                steps = self._build(planner, task, index, env.cell_seed)
            except (RecursionError, KeyError, ValueError) as e:
                self.tally["unbuildable_sequences"] += 1
                self.errors.append(f"sequence {task}: {type(e).__name__}: {e}")
                continue
            before, swept = runner.requests, runner.cleanup_requests
            rng = random.Random(derive_seed(env.cell_seed, "tier2", "cleanup", index))
            seq = await runner.run(steps, cleanup=lambda done: planner.cleanup(done, rng))
            self.tally["cleanup_requests"] += runner.cleanup_requests - swept
            self.tally["requests"] += runner.requests - before - (runner.cleanup_requests - swept)
            new_pair = self._account(seq)
            if new_pair and self.options.get("corpus") is not None and task[0] != "steps":
                self._save(steps)
            counts, findings = check_sequence(seq, ops, schema_errors)
            for pred, n in counts.items():
                self.tally[f"checked_{pred}"] += n
            for f in findings:
                await self.handler.handle(f, steps, runner, f"{host}:{port}", deadline)

    def _account(self, seq: list) -> bool:
        new = False
        for ex in seq:
            if ex.status is None:
                if ex.error and ex.error.startswith("unbound"):
                    self.tally["unbound_steps"] += 1
                elif ex.error:
                    self.op_errors[ex.op_id] = ex.error
                continue
            st = self.coverage.setdefault(ex.op_id, Counter())
            new = new or str(ex.status) not in st
            st[str(ex.status)] += 1
        return new

    def _save(self, steps: list) -> None:
        folder: Path = self.options["corpus"]
        text = json.dumps({"steps": steps}, sort_keys=True)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json").write_text(text)
            self.tally["corpus_saved"] += 1
        except OSError as e:
            self.errors.append(f"corpus: {e}")

    # ---- what the cell reads ------------------------------------------------------------------
    def tallies(self) -> dict[str, Any]:
        return {k: int(v) for k, v in self.tally.items()}

    def reasons(self) -> dict[str, str]:
        return {"tier_2": self.stop_reason} if self.stop_reason else {}

    def evidence(self) -> dict[str, Any]:
        return {"tier_2": self.tallies()}

    def _unreached(self) -> dict[str, str]:
        """Every operation without a 2xx, and why."""
        unreached = {}
        for operation in self.spec.operations if self.spec is not None else []:
            op = operation.op_id
            seen = self.coverage.get(op)
            statuses = "; statuses seen: " + ", ".join(sorted(seen)) if seen else ""
            if op in self.streams:
                unreached[op] = "not sent: an event stream (text/event-stream); Tier 1's sse slice exercises it"
            elif op in self.upgrades:
                unreached[op] = ("not sent: a protocol upgrade (it declares 101 Switching Protocols, a WebSocket); "
                                 "Tier 1's ws slice exercises it")
            elif seen and any(200 <= int(s) < 300 for s in seen):
                continue
            elif not any(r.startswith("2") for r in operation.responses):
                declared = ", ".join(sorted(operation.responses)) or "nothing"
                unreached[op] = f"by design: the operation declares no 2xx response (it declares {declared}){statuses}"
            elif (gap := credential_gap(self.spec, self.graph, operation, self.login)) and (
                    not seen or all(s in ("401", "403") for s in seen)):
                unreached[op] = f"needs {gap}, which Tier 2 is not given{statuses}"
            elif not seen and op in self.op_errors:
                unreached[op] = f"never answered: {self.op_errors[op]}"
            elif not seen:
                unreached[op] = "never sent with its parameters bound: a producer it needs gave nothing"
            else:
                unreached[op] = "no 2xx" + statuses
        return unreached

    def detail(self) -> dict[str, Any]:
        """tier2_tally.json: the tally, coverage (operation → status → count), unreached operations
        and why, the findings, the dependency graph."""
        unreached = self._unreached()
        return {"tally": self.tallies(), "spec": getattr(self.spec, "source", ""), "stopped": self.stop_reason,
                "login": None if self.login is None else {"method": self.login.method, "path": self.login.path},
                "coverage": {k: dict(v) for k, v in sorted(self.coverage.items())}, "unreached": unreached,
                "findings": self.handler.recorded if self.handler else [],
                "deps": self.graph.format() if self.graph is not None else ""}

    def stopped_reason(self) -> str:
        return self.stop_reason

    def internal_errors(self) -> list[str]:
        return self.errors[:100]
