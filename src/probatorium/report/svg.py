"""Small inline SVG charts: grouped bars, lines (linear or log axes), a percentile spectrum.

Pure functions: data in, an ``<svg>`` string out (no network, no library). Every
text is escaped; an empty data set gives a small "no data" box, never a crash.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

# One colour per series, in order (colour-blind-friendly Okabe-Ito palette).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")

W, H = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 52
LEGEND_PER_ROW = 3


def colour(i: int) -> str:
    """The colour of series ``i``."""
    return PALETTE[i % len(PALETTE)]


def fmt_num(v: float) -> str:
    """A compact tick label: 1.2k, 35, 0.25."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    if a >= 1 or a == 0:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _empty(title: str) -> str:
    return (f'<svg class="chart" role="img" viewBox="0 0 {W} 60" width="{W}" height="60">'
            f'<text x="8" y="34" class="muted">{escape(title)}: no data</text></svg>')


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


class _Axis:
    """Maps data values to pixels along one axis, linear or log10."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool) -> None:
        self.log = log
        if log:
            lo, hi = max(lo, 1e-9), max(hi, 1e-9)
            self.ticks = _log_ticks(lo, hi)
            lo, hi = self.ticks[0], self.ticks[-1]
            if hi <= lo:
                hi = lo * 10
        else:
            if hi <= lo:
                hi = lo + 1
            self.ticks = _nice_ticks(lo, hi)
            lo, hi = min(lo, self.ticks[0]), max(hi, self.ticks[-1])
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, 1e-9)
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + f * (self.p1 - self.p0)


def _frame(title: str, xlabel: str, ylabel: str, body: str, legend: Sequence[str], height: int = H,
           colours: Sequence[str] | None = None) -> str:
    leg = "".join(
        f'<g transform="translate({LEFT + 8 + (i % LEGEND_PER_ROW) * 185},{H - 10 + (i // LEGEND_PER_ROW) * 14})">'
        f'<rect width="10" height="10" y="-9" fill="{colours[i] if colours else colour(i)}"/>'
        f'<text x="14" y="0">{escape(name[:30])}</text></g>'
        for i, name in enumerate(legend))
    return (f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {height}" '
            f'width="{W}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<title>{escape(title)}</title>'
            f'<text x="{LEFT}" y="16" class="ctitle">{escape(title)}</text>{body}'
            f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - BOTTOM + 30}" text-anchor="middle" class="axis">'
            f'{escape(xlabel)}</text>'
            f'<text transform="translate(14,{(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" '
            f'class="axis">{escape(ylabel)}</text>{leg}</svg>')


def bar_chart(title: str, groups: Sequence[str], series: Sequence[str],
              values: dict[tuple[str, str], float], ylabel: str) -> str:
    """Grouped bars: one group per ``groups`` entry, one bar per series; ``values[(group, series)]``."""
    vals = [v for v in values.values() if v is not None]
    if not groups or not series or not vals:
        return _empty(title)
    height = H + 14 * ((len(series) - 1) // LEGEND_PER_ROW)
    y = _Axis(0, max(vals) * 1.05, H - BOTTOM, TOP, log=False)
    gw = (W - LEFT - RIGHT) / len(groups)
    bw = max(2.0, gw * 0.8 / len(series))
    parts = [_y_grid(y)]
    for gi, g in enumerate(groups):
        x0 = LEFT + gi * gw + gw * 0.1
        for si, s in enumerate(series):
            v = values.get((g, s))
            if v is None:
                continue
            top = y(v)
            parts.append(f'<rect x="{x0 + si * bw:.1f}" y="{top:.1f}" width="{bw - 1:.1f}" '
                         f'height="{max(0.0, y.p0 - top):.1f}" fill="{colour(si)}">'
                         f'<title>{escape(g)} / {escape(s)}: {fmt_num(v)}</title></rect>')
        parts.append(f'<text x="{LEFT + gi * gw + gw / 2:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">'
                     f'{escape(g[:24])}</text>')
    return _frame(title, "", ylabel, "".join(parts), series, height)


def _y_grid(y: _Axis) -> str:
    out = []
    for t in y.ticks:
        py = y(t)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 4}" y="{py + 4:.1f}" text-anchor="end">{fmt_num(t)}</text>')
    return "".join(out)


def _x_grid(x: _Axis, labels: dict[float, str] | None, bottom: float) -> str:
    out = []
    ticks = list(labels) if labels else x.ticks
    for t in ticks:
        px = x(t)
        text = labels[t] if labels else fmt_num(t)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{bottom}" class="grid"/>'
                   f'<text x="{px:.1f}" y="{bottom + 14}" text-anchor="middle">{escape(text)}</text>')
    return "".join(out)


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, *,
               xlog: bool = False, ylog: bool = False, hlines: dict[str, float] | None = None,
               xlabels: dict[float, str] | None = None, markers: bool = True,
               colours: dict[str, str] | None = None) -> str:
    """Lines through points ``series[name] = [(x, y), ...]`` (sorted by x); ``hlines`` are labelled
    dashed horizontal references (e.g. SLOs); ``xlabels`` replace the x ticks; ``colours`` fix a
    series' colour (else the palette's, in order)."""
    pts = [p for s in series.values() for p in s if p[1] is not None]
    if ylog:
        pts = [p for p in pts if p[1] > 0]
    if not pts:
        return _empty(title)
    names = list(series)
    height = H + 14 * ((len(names) - 1) // LEGEND_PER_ROW)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + [v for v in (hlines or {}).values() if not ylog or v > 0]
    lo, hi = min(xs), max(xs)
    if hi <= lo:  # one x: centred
        lo, hi = (lo / 10, hi * 10) if xlog else (lo - 1, hi + 1)
    x = _Axis(lo, hi, LEFT, W - RIGHT, xlog)
    y = _Axis(min(ys) if ylog else 0, max(ys) * (1.0 if ylog else 1.08), H - BOTTOM, TOP, ylog)
    parts = [_y_grid(y), _x_grid(x, xlabels, H - BOTTOM)]
    for label, v in (hlines or {}).items():
        if ylog and v <= 0:
            continue
        py = y(v)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" class="ref"/>'
                     f'<text x="{W - RIGHT - 2}" y="{py - 3:.1f}" text-anchor="end" class="muted">'
                     f'{escape(label)}</text>')
    cols = [(colours or {}).get(name) or colour(i) for i, name in enumerate(names)]
    for i, name in enumerate(names):
        s = sorted(p for p in series[name] if p[1] is not None and (not ylog or p[1] > 0))
        if not s:
            continue
        d = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in s)
        parts.append(f'<polyline points="{d}" fill="none" stroke="{cols[i]}" stroke-width="2"/>')
        if markers:
            parts.extend(f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="3" fill="{cols[i]}">'
                         f'<title>{escape(name)}: {fmt_num(px)}, {fmt_num(py)}</title></circle>' for px, py in s)
    return _frame(title, xlabel, ylabel, "".join(parts), names, height, cols)


# Percentiles of a spectrum, as in HdrHistogram's percentile distribution plots.
SPECTRUM_PERCENTILES = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)


def spectrum_x(p: float) -> float:
    """A percentile's x on the spectrum's log axis: 1 / (1 - p/100), capped so 100 stays finite."""
    return 1.0 / max(1.0 - p / 100.0, 1e-6)


def spectrum_chart(title: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """Latency (ms, log) against percentile (log of 1/(1-p)); ``series[name] = [(percentile, ms), ...]``."""
    xlabels = {spectrum_x(p): f"{p:g}" for p in (0.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0)}
    data = {name: [(spectrum_x(p), ms) for p, ms in pts] for name, pts in series.items()}
    return line_chart(title, data, "percentile", "latency (ms, log)", xlog=True, ylog=True,
                      xlabels=xlabels, markers=True)
