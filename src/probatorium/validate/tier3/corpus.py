"""The Tier 3 corpus: 50 000 seeds stored compactly under ``validation/corpus/``.

The seeds are not listed one per file: seed ``i`` is ``derive_seed(ROOT, "tier3-corpus", i)``
(the rule is written in ``corpus.json``), so the first N seeds — what ``--seeds N`` runs — are
the same everywhere. ``index.bin`` records what each seed's plan exercises, computed from the
plans themselves for the REFERENCE profile (every fault kind, one durable service): 3 bytes per
seed, a 14-bit mask of the fault kinds its plan holds (bit = position in FAULT_KINDS) and its
number of faults. ``probatorium corpus list|show|stats`` read them; ``corpus build`` rewrites them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...faults import FAULT_KINDS
from ...seeds import derive_seed
from .plan import PLAN_VERSION, Plan
from .profile import KeyRule, TargetProfile

ROOT = 0x7072_6F62_6174_3300  # "probat3\0"
SIZE = 50_000
CORPUS_DIR = Path(__file__).resolve().parents[4] / "validation" / "corpus"
REFERENCE = TargetProfile(key=KeyRule(pattern="^[A-Za-z0-9._-]+$"), faults=FAULT_KINDS, durable=True,
                          services=("redis",), durable_services=("redis",))


def seed_at(i: int) -> int:
    """The corpus's i-th seed (63 bits, so it prints the same signed or unsigned)."""
    if not 0 <= i < SIZE:
        raise UsageError(f"corpus index {i} is outside 0..{SIZE - 1}")
    return derive_seed(ROOT, "tier3-corpus", i) & ((1 << 63) - 1)


def first(n: int) -> list[int]:
    """The first n seeds (``--seeds N``)."""
    if not 0 < n <= SIZE:
        raise UsageError(f"--seeds {n}: the corpus holds 1..{SIZE} seeds")
    return [seed_at(i) for i in range(n)]


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds N`` → the first N corpus seeds; ``--seeds 0xA,0xB`` → those; None → None (as many as fit)."""
    if text is None or not text.strip():
        return None
    t = text.strip()
    if t.isdigit():
        return first(int(t))
    try:
        return [int(p.strip(), 0) & ((1 << 64) - 1) for p in t.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"invalid --seeds {text!r}: a count N or a list 0xA,0xB") from None


def entry(seed: int) -> tuple[int, int]:
    """(kind mask, fault count) of a seed's reference plan."""
    kinds = Plan.from_seed(seed, REFERENCE).kinds()
    mask = 0
    for k in kinds:
        mask |= 1 << FAULT_KINDS.index(k)
    return mask, len(kinds)


def build(folder: Path = CORPUS_DIR, size: int = SIZE) -> dict[str, Any]:
    """Write corpus.json and index.bin (computed from every plan); returns the stats."""
    folder.mkdir(parents=True, exist_ok=True)
    packed = bytearray()
    for i in range(size):
        mask, n = entry(seed_at(i))
        packed += bytes((mask >> 8, mask & 0xFF, n))
    (folder / "index.bin").write_bytes(bytes(packed))
    meta = {"root": f"{ROOT:#x}", "size": size, "plan_version": PLAN_VERSION,
            "rule": "seed(i) = sha256(repr((root, 'tier3-corpus', i)))[:8] big-endian, & (2**63 - 1)",
            "index": "index.bin: 3 bytes per seed: kind mask (16 bits, bit = FAULT_KINDS position), fault count",
            "fault_kinds": list(FAULT_KINDS), "reference_profile": REFERENCE.as_dict()}
    (folder / "corpus.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return stats(folder)


def load(folder: Path = CORPUS_DIR) -> tuple[dict[str, Any], bytes]:
    try:
        meta = json.loads((folder / "corpus.json").read_text())
        index = (folder / "index.bin").read_bytes()
    except (OSError, ValueError) as e:
        raise UsageError(f"{folder}: no readable corpus ({e}); `probatorium corpus build` writes it") from None
    if len(index) != 3 * meta["size"]:
        raise UsageError(f"{folder}/index.bin holds {len(index) // 3} entries, corpus.json says {meta['size']}")
    return meta, index


def rows(folder: Path = CORPUS_DIR, offset: int = 0, limit: int = 20) -> list[dict[str, Any]]:
    """Index entries: i, seed, kinds, faults."""
    meta, index = load(folder)
    out = []
    for i in range(max(0, offset), min(meta["size"], offset + limit)):
        mask, n = (index[3 * i] << 8) | index[3 * i + 1], index[3 * i + 2]
        out.append({"i": i, "seed": f"{seed_at(i):#x}", "faults": n,
                    "kinds": [k for b, k in enumerate(FAULT_KINDS) if mask >> b & 1]})
    return out


def stats(folder: Path = CORPUS_DIR) -> dict[str, Any]:
    """Coverage: per fault kind, how many plans hold it; the distribution of fault counts."""
    meta, index = load(folder)
    per_kind = {k: 0 for k in FAULT_KINDS}
    counts: dict[str, int] = {}
    for i in range(meta["size"]):
        mask, n = (index[3 * i] << 8) | index[3 * i + 1], index[3 * i + 2]
        counts[str(n)] = counts.get(str(n), 0) + 1
        for b, k in enumerate(FAULT_KINDS):
            if mask >> b & 1:
                per_kind[k] += 1
    return {"size": meta["size"], "plans_with_kind": per_kind, "faults_per_plan": counts}


def show(seed_text: str, profile: TargetProfile = REFERENCE) -> Plan:
    """A seed (``0x…``) or a corpus index (``#12``) → its plan for ``profile``."""
    t = seed_text.strip()
    try:
        seed = seed_at(int(t[1:])) if t.startswith("#") else int(t, 0)
    except ValueError:
        raise UsageError(f"invalid seed {seed_text!r}: 0x-hex, decimal, or #INDEX") from None
    return Plan.from_seed(seed, profile)
