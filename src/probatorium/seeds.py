"""Seeds: every walker, cell and plan gets its own seed, derived from the run seed.

A run is reproducible from its seed alone (SPEC.md §5): derivation is a hash
of the run seed and the names along the path (cell, slice, walker), stable
across Python versions, processes and hosts.
"""

from __future__ import annotations

import hashlib
import random

from .errors import UsageError

SEED_BITS = 64


def derive_seed(run_seed: int, *parts: object) -> int:
    """A 64-bit seed for one unit (cell, slice, walker), derived from the run seed."""
    h = hashlib.sha256(repr((run_seed, *parts)).encode()).digest()
    return int.from_bytes(h[:8], "big")


def random_seed() -> int:
    """A fresh run seed (63 bits, so it prints the same signed or unsigned)."""
    return random.SystemRandom().getrandbits(63)


def parse_seed(text: str) -> int:
    """'1234' or '0x4d2' → int (64 bits); anything else is a one-line usage error."""
    try:
        return int(text, 0) & ((1 << SEED_BITS) - 1)
    except ValueError:
        raise UsageError(f"invalid --seed {text!r}: a decimal or 0x-hex integer") from None
