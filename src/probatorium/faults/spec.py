"""Fault kinds as data: the names, the parameters each kind takes, and the two values that cross
the interface — :class:`FaultSpec` (what a plan asks for) and :class:`InjectedFault` (what happened).

Both are frozen and JSON-able, so a plan and its observed timeline are plain files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from probatorium.errors import UsageError

#: Every fault kind, in the order the docs list them (SPEC.md §9: names fixed).
FAULT_KINDS: tuple[str, ...] = (
    "target-kill", "target-term", "target-stop", "fd-squeeze", "service-kill", "service-stop",
    "net-latency", "net-jitter", "net-bandwidth", "net-reset", "net-stall", "net-slice",
    "net-halfclose", "net-netem",
)
#: Faults that act on the target's process, on a backing service's process, and through the proxy.
PROCESS_KINDS = frozenset({"target-kill", "target-term", "target-stop", "fd-squeeze"})
SERVICE_KINDS = frozenset({"service-kill", "service-stop"})
PROXY_KINDS = frozenset({"net-latency", "net-jitter", "net-bandwidth", "net-reset", "net-stall",
                         "net-slice", "net-halfclose"})
#: Directions through the proxy: "up" is client → target (requests), "down" target → client.
DIRECTIONS = ("up", "down", "both")

#: Each kind's parameters → (type, default, one line). A default of None means required.
PARAMS: dict[str, dict[str, tuple[type, Any, str]]] = {
    "target-kill": {},
    "target-term": {"grace_s": (float, 5.0, "seconds the process may drain after SIGTERM before SIGKILL")},
    "target-stop": {},
    "fd-squeeze": {"headroom": (int, 8, "soft RLIMIT_NOFILE = descriptors open now + headroom")},
    "service-kill": {},
    "service-stop": {},
    "net-latency": {"delay_ms": (float, None, "added to every chunk forwarded"),
                    "direction": (str, "both", "up, down or both")},
    "net-jitter": {"delay_ms": (float, None, "mean added delay per chunk"),
                   "jitter_ms": (float, None, "uniform spread around delay_ms (never below 0)"),
                   "direction": (str, "both", "up, down or both")},
    "net-bandwidth": {"bytes_per_s": (int, None, "pace of each connection's bytes, each direction"),
                      "direction": (str, "both", "up, down or both")},
    "net-reset": {"fraction": (float, 1.0, "share of connections (in flight or new) sent an RST")},
    "net-stall": {"hold_ms": (float, None, "how long a connection's bytes are held"),
                  "then": (str, "release", "release the held bytes, or reset the connection"),
                  "direction": (str, "both", "up, down or both")},
    "net-slice": {"piece_bytes": (int, None, "bytes per piece"),
                  "gap_ms": (float, None, "pause between pieces"),
                  "direction": (str, "both", "up, down or both")},
    "net-halfclose": {"direction": (str, "down", "up: the target reads EOF; down: the client reads EOF; both")},
    "net-netem": {"delay_ms": (float, 0.0, "netem delay"), "loss_pct": (float, 0.0, "netem loss")},
}
_CHOICES = {"direction": DIRECTIONS, "then": ("release", "reset")}


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` completed with the kind's defaults and checked; a UsageError names what is wrong."""
    if kind not in PARAMS:
        raise UsageError(f"unknown fault kind {kind!r}: choose from {', '.join(FAULT_KINDS)}")
    known = PARAMS[kind]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UsageError(f"fault {kind}: unknown parameter(s) {', '.join(unknown)} "
                         f"(takes {', '.join(known) or 'none'})")
    out: dict[str, Any] = {}
    for name, (kind_type, default, _doc) in known.items():
        value = params.get(name, default)
        if value is None:
            raise UsageError(f"fault {kind}: parameter {name} is required")
        out[name] = _coerce(kind, name, kind_type, value)
    return out


def _coerce(kind: str, name: str, kind_type: type, value: Any) -> Any:
    try:
        value = kind_type(value)
    except (TypeError, ValueError):
        raise UsageError(f"fault {kind}: {name}={value!r} is not a {kind_type.__name__}") from None
    if name in _CHOICES and value not in _CHOICES[name]:
        raise UsageError(f"fault {kind}: {name}={value!r}: choose from {', '.join(_CHOICES[name])}")
    if isinstance(value, (int, float)) and (not math.isfinite(value) or value < 0):
        raise UsageError(f"fault {kind}: {name}={value!r} must be a finite number >= 0")
    if name == "fraction" and value > 1:
        raise UsageError(f"fault {kind}: fraction={value!r} must be within [0, 1]")
    if name in ("bytes_per_s", "piece_bytes") and value < 1:
        raise UsageError(f"fault {kind}: {name} must be at least 1")
    return value


@dataclass(frozen=True)
class FaultSpec:
    """One planned fault: ``kind`` on ``subject`` ("target" or a service name), ``start_s`` seconds
    into the seed's run, held for ``duration_s``, with the kind's ``params`` (see :data:`PARAMS`)."""

    kind: str
    start_s: float
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)
    subject: str = "target"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise UsageError(f"unknown fault kind {self.kind!r}: choose from {', '.join(FAULT_KINDS)}")
        if not (math.isfinite(self.start_s) and math.isfinite(self.duration_s)) \
                or self.start_s < 0 or self.duration_s < 0:
            raise UsageError(f"fault {self.kind}: start_s and duration_s must be finite and >= 0")
        if self.kind in SERVICE_KINDS and self.subject == "target":
            raise UsageError(f"fault {self.kind}: the subject must name a backing service")
        if self.kind not in SERVICE_KINDS and self.subject != "target":
            raise UsageError(f"fault {self.kind}: acts on the target, not on {self.subject!r}")
        object.__setattr__(self, "params", check_params(self.kind, dict(self.params)))

    def __hash__(self) -> int:  # params is a dict: hash the JSON form (equal specs, equal hashes)
        return hash(json.dumps(self.as_dict(), sort_keys=True))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, keys in a fixed order (a plan's bytes depend on it)."""
        return {"kind": self.kind, "start_s": self.start_s, "duration_s": self.duration_s,
                "params": {k: self.params[k] for k in sorted(self.params)}, "subject": self.subject}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultSpec:
        """The inverse of :meth:`as_dict` (unknown keys are a UsageError)."""
        extra = set(data) - {"kind", "start_s", "duration_s", "params", "subject"}
        if extra:
            raise UsageError(f"fault spec: unknown key(s) {', '.join(sorted(extra))}")
        return cls(kind=data["kind"], start_s=float(data["start_s"]), duration_s=float(data["duration_s"]),
                   params=dict(data.get("params") or {}), subject=data.get("subject", "target"))


@dataclass(frozen=True)
class InjectedFault:
    """What one fault did. ``applied`` only when it bit something observable (see docs/tier3.md,
    "Faults"); ``not_applicable`` is the reason it could not be injected here ("" when it could);
    ``observed`` holds what was measured. Times are seconds on the cell's fault clock
    (:meth:`probatorium.targets.FaultWindows.now`)."""

    spec: FaultSpec
    started_at: float
    ended_at: float
    applied: bool
    not_applicable: str = ""
    observed: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.as_dict(), "started_at": round(self.started_at, 6),
                "ended_at": round(self.ended_at, 6), "applied": self.applied,
                "not_applicable": self.not_applicable, "observed": dict(self.observed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InjectedFault:
        return cls(spec=FaultSpec.from_dict(data["spec"]), started_at=float(data["started_at"]),
                   ended_at=float(data["ended_at"]), applied=bool(data["applied"]),
                   not_applicable=str(data.get("not_applicable", "")), observed=dict(data.get("observed") or {}))

    def replace(self, **changes: Any) -> InjectedFault:
        return dataclasses.replace(self, **changes)
