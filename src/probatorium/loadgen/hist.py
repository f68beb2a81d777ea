"""HdrHistogram helpers: 1 µs .. 60 s at 3 significant digits, values in microseconds.

Recording one value at a time through the ``hdrhistogram`` package costs ~2 µs,
too much for the hot path, so workers append raw microsecond values to a list
and :func:`record_many` folds them in with one ``record_value(v, count)`` per
distinct value (identical counts to recording each value on its own).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGFIGS = 3

PERCENTILES = (("p50", 50.0), ("p75", 75.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS)


def clamp(v: int) -> int:
    if v < LOWEST_US:
        return LOWEST_US
    if v > HIGHEST_US:
        return HIGHEST_US
    return v


def record_many(h: HdrHistogram, values: Iterable[int]) -> None:
    for v, n in Counter(values).items():
        h.record_value(clamp(v), n)


def encode(h: HdrHistogram) -> str:
    """V2 compressed encoding, base64 (the HdrHistogram interchange format)."""
    return h.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


def merge_encoded(encoded: Iterable[str]) -> HdrHistogram:
    """Exact merge: counts add up bucket by bucket."""
    total = new_histogram()
    for e in encoded:
        if e:
            total.add(decode(e))
    return total


def summary(h: HdrHistogram) -> dict[str, float]:
    """Percentiles read from the (merged) histogram; never averaged across histograms."""
    if h.get_total_count() == 0:
        return {name: 0 for name, _ in PERCENTILES} | {"max": 0, "mean": 0.0}
    out: dict[str, float] = {name: h.get_value_at_percentile(p) for name, p in PERCENTILES}
    out["max"] = h.get_max_value()
    out["mean"] = round(h.get_mean_value(), 1)
    return out
