"""A Tier 3 plan: a value built from (seed, profile) — the workload and the fault schedule.

``Plan.from_seed(seed, profile)`` is a pure function: the same seed and profile give
byte-identical canonical JSON (sorted keys, integers for every time on the workload side,
fault times in whole milliseconds), and ``digest()`` is its sha256. The runner takes every
choice from the plan, so a plan file replays what a seed ran (``replay --plan``).

Shape (docs/tier3.md): a plan is a list of *phases*. Each phase has at most one fault,
anchored ``lead_ms`` after the phase starts; its steps are timed relative to that anchor
(negative = before the fault starts), so a slow restart never shifts a step across the fault it
was written for. The phases run one after another, the last one reads back every key the plan
mutated ("reads after recovery"). Each kind's steps make its fault bite:

- ``target-kill``: acknowledged writes in the 150 ms before the SIGKILL;
- ``target-term``: writes whose body is still being sent when SIGTERM lands (in flight ≥ 100 ms);
- ``target-stop``: requests sent while the process is stopped;
- ``fd-squeeze``: more simultaneous connections than the squeezed limit leaves room for;
- ``service-*``: writes just before and while the backing service is down;
- ``net-*``: requests (some with bodies) through the proxy while the impairment lasts.

Keys: every key a plan touches is ``profile.key.render(namespace, salt, index)``; the namespace
comes from the seed, the salt from the run (the runner records it), so each seed — and each
replay of it — starts from a known state (every key absent) on a reused target. Each key is
mutated by one connection only, so its history is a total order the lost-write judge can read.

Producers as writes: a profile without the key/value contract but with producer → reader pairs
(:mod:`.producers`) gets the same phases, draws and bites, with ``create`` (a POST of a new
resource; its key index picks the pair, ``key % len(pairs)``) in place of ``put``, and ``get`` /
``delete`` / ``verify`` on the created item by the id its create answered. Every create makes a
new resource (no overwrite); a ``delete`` the spec does not offer is a ``get``. Key/value plans
are drawn exactly as before (same bytes: the corpus index stays valid).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from ...errors import UsageError
from ...faults import DIRECTIONS, FaultSpec
from ...seeds import derive_seed
from .profile import TargetProfile

PLAN_VERSION = 1
NET_KINDS = ("net-latency", "net-jitter", "net-bandwidth", "net-reset", "net-stall", "net-slice",
             "net-halfclose", "net-netem")
PROCESS_KINDS = ("target-kill", "target-term", "target-stop", "fd-squeeze")
SERVICE_KINDS = ("service-kill", "service-stop")
#: kind → (min, max) fault duration in ms: how long the fault holds before it is reverted.
#: Each range is long enough for the kind's biting steps (below) to land inside the window.
DURATION_MS = {"target-kill": (150, 400), "target-term": (200, 500), "target-stop": (300, 800),
               "fd-squeeze": (500, 900), "service-kill": (300, 800), "service-stop": (300, 800),
               **{k: (300, 800) for k in NET_KINDS}}
WARMUP_MS = 300  # traffic before the first fault, outside every window
#: phase start → the fault: target-term's in-flight bodies start up to 350 ms before SIGTERM,
#: target-kill's writes up to 150 ms before SIGKILL.
LEAD_MS = {"target-term": (360, 450)}
DEFAULT_LEAD_MS = (150, 250)
TAIL_MS = 100  # after a fault window: the phase's last background requests
VERIFY_LEAD_MS = 0  # the reads follow the last recovery; the runner reads again after the grace (runner.py)
OPS = ("put", "create", "get", "delete", "hold", "verify")


@dataclass(frozen=True)
class Step:
    """One request of the workload."""

    phase: int
    at_ms: int  # relative to the phase's anchor (its fault's start); negative: before it
    conn: int  # connection id; a connection's steps run in order, one at a time
    op: str  # put | create | get | delete | hold (GET, then keep the connection open to the phase end) | verify
    key: int = -1  # key index (rendered with the profile's KeyRule); -1: none
    write: int = 0  # write number on the key: values are unique per (namespace, salt, key, write)
    size: int = 16  # value bytes of a put
    split_ms: int = 0  # > 0: the second half of the body is sent this long after the first

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Phase:
    """A stretch of the plan around at most one fault (``fault`` has FaultSpec's fields)."""

    index: int
    lead_ms: int  # phase start → anchor
    tail_ms: int  # anchor + fault duration → the phase may end (its steps permitting)
    fault: dict[str, Any] | None = None  # {kind, start_s, duration_s, params, subject}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Plan:
    """The workload and fault schedule of one seed (see the module docstring)."""

    seed: int
    profile: TargetProfile
    namespace: int
    phases: tuple[Phase, ...]
    steps: tuple[Step, ...]
    version: int = PLAN_VERSION

    # ---- values ------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "seed": f"{self.seed:#x}", "profile": self.profile.as_dict(),
                "namespace": f"{self.namespace:#010x}", "phases": [p.as_dict() for p in self.phases],
                "steps": [s.as_dict() for s in self.steps]}

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON: sorted keys, fixed separators (byte-identical for equal plans)."""
        if indent is None:
            return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.as_dict(), sort_keys=True, indent=indent) + "\n"

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            d = json.loads(text)
            if d.get("version") != PLAN_VERSION:
                raise UsageError(f"plan version {d.get('version')!r} is not {PLAN_VERSION}")
            return cls(seed=int(d["seed"], 0), profile=TargetProfile.from_dict(d["profile"]),
                       namespace=int(d["namespace"], 0),
                       phases=tuple(Phase(**p) for p in d["phases"]), steps=tuple(Step(**s) for s in d["steps"]))
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"not a Tier 3 plan: {type(e).__name__}: {e}") from None

    # ---- what it holds -----------------------------------------------------------------------
    @property
    def faults(self) -> list[dict[str, Any]]:
        return [p.fault for p in self.phases if p.fault is not None]

    def kinds(self) -> list[str]:
        return [f["kind"] for f in self.faults]

    def uses_proxy(self) -> bool:
        return any(k in NET_KINDS for k in self.kinds())

    def with_faults(self, keep: list[int]) -> Plan:
        """The plan with only the faults of these phase indexes (the others' phases keep their steps)."""
        phases = tuple(p if p.fault is None or p.index in keep else dataclasses.replace(p, fault=None)
                       for p in self.phases)
        return dataclasses.replace(self, phases=phases)

    def with_steps(self, steps: list[Step]) -> Plan:
        return dataclasses.replace(self, steps=tuple(steps))

    # ---- from a seed -------------------------------------------------------------------------
    @classmethod
    def from_seed(cls, seed: int, profile: TargetProfile) -> Plan:
        """The plan of ``seed`` for ``profile`` (pure; see the module docstring)."""
        if not profile.faults:
            raise UsageError("a Tier 3 plan needs at least one allowed fault kind")
        rng = random.Random(derive_seed(seed, "tier3", "plan", PLAN_VERSION))
        return _Builder(seed, profile, rng).build()


def pair_of(profile: TargetProfile, key: int) -> dict[str, Any]:
    """The producer → reader pair that key index ``key`` of a producer plan writes with."""
    return profile.producers[key % len(profile.producers)]


class _Builder:
    """Draws one plan; every random choice in the order written here (the order is the format)."""

    def __init__(self, seed: int, profile: TargetProfile, rng: random.Random) -> None:
        self.seed, self.profile, self.rng = seed, profile, rng
        self.namespace = rng.getrandbits(32)
        self.background = rng.randint(2, 4)  # long-lived connections 0..background-1
        self.next_conn = self.background
        self.next_key = 0
        self.owned: dict[int, list[int]] = {c: [] for c in range(self.background)}  # conn → its keys
        self.writes: dict[int, int] = {}  # key → writes so far
        self.mutated: list[int] = []
        self.steps: list[Step] = []
        self.phases: list[Phase] = []
        self.clock_ms = 0  # nominal plan time of the next phase's start

    def build(self) -> Plan:
        kinds = list(self.profile.faults)
        n = self.rng.choice((1, 1, 2, 2, 3))
        chosen = [self.rng.choice(kinds) for _ in range(n)]
        self._warmup()
        for kind in chosen:
            self._fault_phase(kind)
        self._verify()
        return Plan(self.seed, self.profile, self.namespace, tuple(self.phases), tuple(self.steps))

    # ---- keys and steps ----------------------------------------------------------------------
    def _fresh_conn(self) -> int:
        c = self.next_conn
        self.next_conn += 1
        self.owned[c] = []
        return c

    def _put(self, phase: int, at: int, conn: int, *, new: bool = True, split_ms: int = 0) -> None:
        if self.profile.producers:  # a create: always a new resource
            key = self.next_key
            self.next_key += 1
            self.owned[conn].append(key)
            self.writes[key] = 1
            self.mutated.append(key)
            self.steps.append(Step(phase, at, conn, "create", key, 1, 0, split_ms))
            return
        if new or not self.owned[conn]:
            key = self.next_key
            self.next_key += 1
            self.owned[conn].append(key)
        else:
            key = self.rng.choice(self.owned[conn])
        self.writes[key] = self.writes.get(key, 0) + 1
        if key not in self.mutated:
            self.mutated.append(key)
        size = self.rng.choice((16, 64, 512, 4096))
        self.steps.append(Step(phase, at, conn, "put", key, self.writes[key], size, split_ms))

    def _background(self, phase: int, start: int, end: int, count: int) -> None:
        """``count`` mixed requests on the long-lived connections between start and end (ms)."""
        for _ in range(count):
            at = self.rng.randint(start, end)
            conn = self.rng.randrange(self.background)
            r = self.rng.random()
            own = self.owned[conn]
            if r < 0.45 or not own:
                self._put(phase, at, conn, new=self.rng.random() < 0.7)
            elif r < 0.8:
                self.steps.append(Step(phase, at, conn, "get", self.rng.choice(own)))
            else:
                key = self.rng.choice(own)
                if self.profile.producers and not pair_of(self.profile, key).get("delete"):
                    self.steps.append(Step(phase, at, conn, "get", key))  # the spec offers no DELETE
                    continue
                if key not in self.mutated:
                    self.mutated.append(key)
                self.steps.append(Step(phase, at, conn, "delete", key))

    def _warmup(self) -> None:
        self.phases.append(Phase(0, 0, WARMUP_MS))
        self._background(0, 0, WARMUP_MS, self.rng.randint(24, 32))  # outside every grace: judged for 5xx
        self.clock_ms += WARMUP_MS

    def _verify(self) -> None:
        # the reads start once the last fault's recovery probe succeeded; a read that got no usable
        # answer inside the last window's grace is read again after it (the runner)
        index = len(self.phases)
        self.phases.append(Phase(index, VERIFY_LEAD_MS, 0))
        conn = self._fresh_conn()
        for key in self.mutated:
            self.steps.append(Step(index, 0, conn, "verify", key))

    # ---- one fault and the steps that make it bite --------------------------------------------
    def _fault_phase(self, kind: str) -> None:
        index = len(self.phases)
        lead = self.rng.randint(*LEAD_MS.get(kind, DEFAULT_LEAD_MS))
        lo, hi = DURATION_MS[kind]
        duration = self.rng.randint(lo, hi)
        params = self._params(kind)
        subject = "target"
        if kind in SERVICE_KINDS:
            if not self.profile.services:
                raise UsageError(f"fault {kind} needs a backing service (--services)")
            subject = self.rng.choice(self.profile.services)
        # FaultSpec checks the parameters and gives them their canonical types and order
        fault = FaultSpec(kind, (self.clock_ms + lead) / 1000, duration / 1000, params, subject).as_dict()
        tail = TAIL_MS
        self.phases.append(Phase(index, lead, tail, fault))
        self._background(index, -lead, duration + tail, self.rng.randint(6, 12))
        self._bite(index, kind, duration, params)
        self.clock_ms += lead + duration + tail

    def _params(self, kind: str) -> dict[str, Any]:
        r = self.rng
        table: dict[str, dict[str, Any]] = {
            "target-term": {"grace_s": 5.0},
            "fd-squeeze": {"headroom": r.randint(2, 6)},
            "net-latency": {"delay_ms": r.choice((50, 100, 200, 400)), "direction": r.choice(DIRECTIONS)},
            "net-jitter": {"delay_ms": r.choice((20, 50, 100)), "jitter_ms": r.choice((20, 50, 150)),
                           "direction": r.choice(DIRECTIONS)},
            "net-bandwidth": {"bytes_per_s": r.choice((2048, 8192, 32768)), "direction": r.choice(DIRECTIONS)},
            "net-reset": {"fraction": r.choice((0.5, 1.0))},
            "net-stall": {"hold_ms": r.choice((200, 500, 900)), "then": r.choice(("release", "reset")),
                          "direction": r.choice(DIRECTIONS)},
            "net-slice": {"piece_bytes": r.choice((1, 3, 7)), "gap_ms": r.choice((1, 5, 10)),
                          "direction": r.choice(DIRECTIONS)},
            "net-halfclose": {"direction": r.choice(DIRECTIONS)},
            "net-netem": {"delay_ms": r.choice((20, 100)), "loss_pct": r.choice((0, 1, 5))},
        }
        return table.get(kind, {})

    def _bite(self, phase: int, kind: str, duration: int, params: dict[str, Any]) -> None:
        r = self.rng
        if kind in ("target-kill", "service-kill", "service-stop"):
            for _ in range(r.randint(2, 4)):  # writes acknowledged just before the fault
                self._put(phase, r.randint(-150, -10), self._fresh_conn())
        if kind == "target-term":
            for _ in range(r.randint(1, 2)):  # bodies still arriving when SIGTERM lands (in flight >= 100 ms)
                at = r.randint(-350, -150)
                self._put(phase, at, self._fresh_conn(), split_ms=-at + r.randint(100, 250))
        if kind in ("target-stop", "service-stop", *NET_KINDS):
            for _ in range(r.randint(2, 4)):  # requests sent while the fault lasts
                conn = self._fresh_conn()
                self._put(phase, r.randint(20, max(21, duration // 2)), conn)
                self.steps.append(Step(phase, duration + 50, conn, "get", self.owned[conn][-1]))
        if kind == "fd-squeeze":
            for _ in range(params["headroom"] + r.randint(4, 8)):  # more connections than the limit allows
                self.steps.append(Step(phase, r.randint(50, 150), self._fresh_conn(), "hold", -1))
