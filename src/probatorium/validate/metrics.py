"""I-OBS-1 from outside: scrape a target's Prometheus `/metrics` and check monotonicity.

Counters (`*_total`) and histogram series (`*_bucket`, `*_count`, `*_sum`) are
cumulative: between two scrapes of the same process none of them may
decrease, and a series that existed may not vanish. The parser reads the
Prometheus text exposition format (name, optional {labels}, value) and
nothing more; the judge is a pure function over two scrapes.
"""

from __future__ import annotations

import http.client
import math
import re
from dataclasses import dataclass, field

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+\d+)?$')
MONOTONIC_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def parse_exposition(text: str) -> dict[str, float]:
    """`{'name{labels}': value}` for every cumulative sample in a Prometheus text page."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m or not m.group(1).endswith(MONOTONIC_SUFFIXES):
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if not math.isnan(value):
            out[m.group(1) + (m.group(2) or "")] = value
    return out


def monotonic_violations(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """Series that decreased or vanished between two scrapes of one process."""
    bad = []
    for key, old in before.items():
        if key not in after:
            bad.append(f"{key} vanished (was {old:g})")
        elif after[key] < old:
            bad.append(f"{key} decreased {old:g} -> {after[key]:g}")
    return bad


@dataclass
class MetricsScraper:
    """Scrapes GET path on host:port; `check()` compares with the previous scrape."""

    host: str
    port: int
    path: str = "/metrics"
    scrapes: int = 0
    comparisons: int = 0
    violations: list[str] = field(default_factory=list)
    absent_reason: str = ""
    _last: dict[str, float] | None = None

    def reset(self) -> None:
        """Forget the previous scrape (the target was restarted: counters legitimately restart)."""
        self._last = None

    def check(self, timeout: float = 2.0) -> list[str]:
        """One scrape; returns the new violations (empty when fine or when nothing to compare)."""
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            conn.request("GET", self.path)
            resp = conn.getresponse()
            body = resp.read(8 << 20).decode("utf-8", "replace")
            conn.close()
        except (OSError, http.client.HTTPException):
            return []
        if resp.status != 200:
            if self.scrapes == 0:
                self.absent_reason = f"GET {self.path} answered {resp.status}"
            return []
        sample = parse_exposition(body)
        if not sample:
            if self.scrapes == 0:
                self.absent_reason = f"GET {self.path} has no counter or histogram series"
            return []
        self.absent_reason = ""
        self.scrapes += 1
        new: list[str] = []
        if self._last is not None:
            self.comparisons += 1
            new = monotonic_violations(self._last, sample)
            self.violations += new
        self._last = sample
        return new
