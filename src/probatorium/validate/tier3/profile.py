"""What a plan may assume about its target: the key/value operations, the key schema (or,
without the key/value contract, the producer → reader pairs of :mod:`.producers` and the login
path), the allowed fault kinds, durability and the backing services.

The profile is everything :meth:`~.plan.Plan.from_seed` reads besides the seed. It never holds
the duration, ``--seeds`` or the concurrency, so ``replay --seed`` rebuilds the same plan from
the same target flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ..openapi import load_operations
from ..tier1.markov.model import kv_operations
from .producers import producer_contract

#: Characters a key may use in a path segment without escaping (RFC 3986 unreserved).
UNRESERVED = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-._~"
DEFAULT_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_CLASS_RE = re.compile(r"\^?\[([^\]]+)\](?:\+|\*|\{\d+(?:,\d*)?\})\$?\Z")


def _expand_class(body: str) -> str:
    """The characters of a simple regex class body (``A-Za-z0-9._-``), unreserved ones only."""
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
            continue
        if i + 2 < len(body) and body[i + 1] == "-":
            out += [chr(x) for x in range(ord(c), ord(body[i + 2]) + 1)]
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(ch for ch in UNRESERVED if ch in set(out))


@dataclass(frozen=True)
class KeyRule:
    """How keys are spelled so they follow the key parameter's schema (pattern, min/maxLength)."""

    alphabet: str = DEFAULT_ALPHABET
    min_length: int = 1
    max_length: int = 128
    pattern: str | None = None

    @classmethod
    def from_schema(cls, schema: dict[str, Any] | None) -> KeyRule:
        schema = schema if isinstance(schema, dict) else {}
        pattern = schema.get("pattern") if isinstance(schema.get("pattern"), str) else None
        alphabet = DEFAULT_ALPHABET
        if pattern:
            m = _CLASS_RE.match(pattern)
            alphabet = _expand_class(m.group(1)) if m else DEFAULT_ALPHABET
        alphabet = "".join(c for c in alphabet if c.isalnum()) or alphabet  # separators stay out
        rule = cls(alphabet, int(schema.get("minLength", 1) or 1), int(schema.get("maxLength", 128) or 128), pattern)
        rule.render(0xFFFFFFFF, 0xFFFF, 4095)  # a schema no key can follow is one clear line now
        return rule

    def render(self, namespace: int, salt: int, index: int) -> str:
        """The key of ``index`` in a seed's namespace and a run's salt: unique, deterministic, legal."""
        n = (((namespace & 0xFFFFFFFF) << 16 | (salt & 0xFFFF)) << 12) | (index & 0xFFF)
        base, digits = len(self.alphabet), []
        while n:
            n, r = divmod(n, base)
            digits.append(self.alphabet[r])
        key = "".join(reversed(digits)) or self.alphabet[0]
        key = key.rjust(self.min_length, self.alphabet[0])
        if len(key) > self.max_length:
            raise UsageError(f"the key parameter's maxLength {self.max_length} is too short for Tier 3's "
                             f"per-seed keys ({len(key)} characters of {self.alphabet!r})")
        if self.pattern and not re.search(self.pattern, key):
            raise UsageError(f"Tier 3 cannot spell keys for the key pattern {self.pattern!r} (tried {key!r})")
        return key

    def as_dict(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet, "min_length": self.min_length, "max_length": self.max_length,
                "pattern": self.pattern}


@dataclass(frozen=True)
class TargetProfile:
    """Everything besides the seed that a plan depends on (see the module docstring)."""

    kv_path: str = "/kv/{key}"
    key: KeyRule = field(default_factory=KeyRule)
    faults: tuple[str, ...] = ()  # allowed fault kinds, in FAULT_KINDS order
    durable: bool = False  # the target keeps acknowledged writes across its own SIGKILL / SIGTERM
    services: tuple[str, ...] = ()  # backing services the target uses
    durable_services: tuple[str, ...] = ()  # those of them that keep acknowledged writes across a SIGKILL
    #: producer → reader pairs (see :mod:`.producers`), only for a target without the key/value contract
    producers: tuple[dict[str, Any], ...] = ()
    login: str = ""  # the login path the producers need ("" when they need none)

    def key_path(self, key: str) -> str:
        return re.sub(r"\{[^{}]+\}", key, self.kv_path)

    def as_dict(self) -> dict[str, Any]:
        d = {"kv_path": self.kv_path, "key": self.key.as_dict(), "faults": list(self.faults),
             "durable": self.durable, "services": list(self.services),
             "durable_services": list(self.durable_services)}
        if self.producers:  # only then: a key/value profile (and its plans' bytes) stays as it was
            d["producers"], d["login"] = [dict(p) for p in self.producers], self.login
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetProfile:
        k = d.get("key") or {}
        return cls(kv_path=d.get("kv_path", "/kv/{key}"),
                   key=KeyRule(k.get("alphabet", DEFAULT_ALPHABET), k.get("min_length", 1), k.get("max_length", 128),
                               k.get("pattern")),
                   faults=tuple(d.get("faults", ())), durable=bool(d.get("durable")),
                   services=tuple(d.get("services", ())), durable_services=tuple(d.get("durable_services", ())),
                   producers=tuple(d.get("producers", ())), login=d.get("login", ""))


def kv_contract(openapi: Path | None) -> tuple[str, dict[str, Any]] | str:
    """(the PUT/GET/DELETE path, the key parameter's schema), or the reason the target has no
    key/value contract (docs/contracts.md)."""
    if openapi is None:
        return "no OpenAPI document: Tier 3 needs the key/value contract (PUT/GET/DELETE /kv/{key})"
    ops = kv_operations(load_operations(openapi))
    if ops is None:
        return f"{openapi.name} offers no PUT/GET/DELETE /kv/{{key}} (the key/value contract Tier 3 drives)"
    put = ops["PUT"]
    name = put.path_params[0]
    schema: dict[str, Any] = {}
    for op in ops.values():
        for par in op.parameters:
            if par.get("name") == name and par.get("in") == "path" and isinstance(par.get("schema"), dict):
                schema = par["schema"]
    return put.path, schema


def build_profile(openapi: Path | None, faults: tuple[str, ...], *, durable: bool, services: tuple[str, ...] = (),
                  durable_services: tuple[str, ...] = ()) -> TargetProfile:
    """The profile of a target from its OpenAPI document and the Tier 3 flags."""
    found = kv_contract(openapi)
    pairs: tuple[dict[str, Any], ...] = ()
    login = ""
    if isinstance(found, str):
        other = producer_contract(openapi)
        if isinstance(other, str):
            raise UsageError(f"{found}; {other}")
        pairs, login = tuple(other[0]), other[1]
        path, schema = "", {}
    else:
        path, schema = found
    if not faults:
        raise UsageError("no fault kind applies to this target (see --faults)")
    return TargetProfile(path, KeyRule.from_schema(schema), tuple(faults), durable, tuple(services),
                         tuple(durable_services), pairs, login)


def tier3_contract(openapi: Path | None) -> str | None:
    """None when Tier 3 can write to the target (the key/value contract or a producer → reader
    pair), else the reason it cannot."""
    found = kv_contract(openapi)
    if not isinstance(found, str):
        return None
    if openapi is None:
        return found
    other = producer_contract(openapi)
    return f"{found}; {other}" if isinstance(other, str) else None
