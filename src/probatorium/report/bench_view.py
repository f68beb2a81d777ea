"""The bench view: throughput per competitor and cell, latency against offered rate from the
latency_at_slo search (every probe shown), percentile spectra from the merged HdrHistograms,
and the server's CPU from the observer."""

from __future__ import annotations

from probatorium.bench.ratesearch import DEFAULT_ERROR_BUDGET, Probe
from probatorium.loadgen import hist
from probatorium.report import svg
from probatorium.report.markup import badge, details, e, kv, table
from probatorium.report.sources import Run
from probatorium.results.schema import BenchCell, BenchDocument


def spectrum_points(encoded: str) -> list[tuple[float, float]]:
    """(percentile, latency ms) read from a merged, encoded HdrHistogram; [] when it is empty."""
    if not encoded:
        return []
    h = hist.decode(encoded)
    if h.get_total_count() == 0:
        return []
    return [(p, h.get_value_at_percentile(p) / 1000.0) for p in svg.SPECTRUM_PERCENTILES]


def probe_verdict(p: dict, slos_ms: list, error_budget: float) -> str:
    """Which SLOs one recorded probe passes, by the rule the search used (ratesearch.Probe)."""
    probe = Probe(rate=p["rate"], achieved_rps=p["achieved_rps"], p99_ms=p["p99_ms"],
                  requests=p.get("requests", 0), errors=p.get("errors", 0), unsent=p.get("unsent", 0))
    if not probe.sustained(error_budget):
        return "none: not sustained"
    passed = [f"{s:g}" for s in slos_ms if probe.passes(float(s), error_budget)]
    return ", ".join(passed) or "none: p99 above every SLO"


def who(c: BenchCell) -> str:
    """A cell's series name: its competitor, and on a multi-host roll-up the server host it ran on."""
    return f"{c.competitor} @ {c.host}" if c.host else c.competitor


def _ok_cells(doc: BenchDocument) -> list[BenchCell]:
    return [c for c in doc.cells if c.status == "ok" and c.saturation is not None]


def throughput(doc: BenchDocument) -> str:
    """Saturation rps: a grouped bar chart (cells × competitors) and the table of every cell's status."""
    groups = list(dict.fromkeys(c.cell for c in doc.cells))
    series = list(dict.fromkeys(who(c) for c in doc.cells))
    values = {(c.cell, who(c)): c.saturation.rps for c in _ok_cells(doc)}
    rows = []
    for c in doc.cells:
        s = c.saturation
        lat = s.latency_us if s else {}
        slo = ", ".join(f"{k} ms: {svg.fmt_num(v) if v else '–'}" for k, v in (c.latency_at_slo or {}).items())
        rows.append([e(who(c)), e(c.cell), badge(c.status), e(c.reason or ""),
                     e(f"{s.rps:.1f}" if s else ""), e(lat.get("p50", "")), e(lat.get("p99", "")),
                     e(lat.get("p999", "")), e(sum((s.errors or {}).values()) if s else ""), e(slo)])
    return (svg.bar_chart("Saturation throughput (closed loop)", groups, series, values, "requests/s")
            + table(("competitor", "cell", "status", "reason", "rps", "p50 µs", "p99 µs", "p99.9 µs", "errors",
                     "latency_at_slo (rps)"), rows, "bench", raw=True))


def rate_search(doc: BenchDocument) -> str:
    """Per cell: p99 against offered rate for every probe, the SLOs as reference lines; probes as a table."""
    out = []
    slos = {f"SLO {s:g} ms": float(s) for s in doc.config.slos_ms}
    for cell in dict.fromkeys(c.cell for c in doc.cells):
        series, rows = {}, []
        for c in doc.cells:
            probes = (c.rate_search or {}).get("probes") or []
            if c.cell != cell or not probes:
                continue
            series[who(c)] = [(p["rate"], p["p99_ms"]) for p in probes]
            budget = float((c.rate_search or {}).get("error_budget", DEFAULT_ERROR_BUDGET))
            rows += [[who(c), f'{p["rate"]:.1f}', f'{p["achieved_rps"]:.1f}', f'{p["p99_ms"]:.2f}',
                      p.get("requests", ""), p.get("errors", ""), p.get("unsent", ""),
                      f'{p.get("error_ratio", 0):.4%}', probe_verdict(p, doc.config.slos_ms, budget)]
                     for p in probes]
        if not series:
            continue
        out.append(f"<h4>{e(cell)}</h4>" + svg.line_chart(
            f"p99 vs offered rate: {cell}", series, "offered rate (requests/s)", "p99 (ms, log)", ylog=True,
            hlines=slos) + details(f"{len(rows)} probes (evidence)", table(
                ("competitor", "offered rps", "achieved rps", "p99 ms", "requests", "errors", "unsent", "error ratio",
                 "passes SLOs (ms)"),
                rows)))
    return "".join(out) or '<p class="muted">no rate search in this run</p>'


def spectra(doc: BenchDocument) -> str:
    """Per cell: the percentile spectrum of each competitor's merged saturation histogram."""
    out = []
    for cell in dict.fromkeys(c.cell for c in doc.cells):
        series = {who(c): spectrum_points(c.saturation.histogram) for c in _ok_cells(doc) if c.cell == cell}
        series = {k: v for k, v in series.items() if v}
        if series:
            out.append(f"<h4>{e(cell)}</h4>" + svg.spectrum_chart(f"Latency percentile spectrum: {cell}", series))
    return "".join(out) or '<p class="muted">no histogram in this run</p>'


def cpu(run: Run) -> str:
    """Server CPU: steady (median over the saturation runs) and peak per cell; the 1 Hz samples over time."""
    doc: BenchDocument = run.document
    groups = list(dict.fromkeys(c.cell for c in doc.cells))
    series = list(dict.fromkeys(who(c) for c in doc.cells))
    steady = {(c.cell, who(c)): (c.observer or {}).get("steady", {}).get("cpu_pct")
              for c in doc.cells if c.observer}
    rows = [[who(c), c.cell, (c.observer or {}).get("samples", 0),
             (c.observer or {}).get("steady", {}).get("cpu_pct", ""), (c.observer or {}).get("peak", {}).get("cpu_pct", ""),
             (c.observer or {}).get("peak", {}).get("rss_kb", "")] for c in doc.cells]
    lines = {}
    for c in doc.cells:
        samples = run.extra.get(c.folder) or []
        if samples:
            t0 = samples[0][0]
            lines[f"{who(c)}/{c.cell}"] = [(ts - t0, pct) for ts, _phase, pct, _rss in samples]
    return (svg.bar_chart("Server CPU, steady (median over saturation runs)", groups, series,
                          {k: v for k, v in steady.items() if v is not None}, "CPU %")
            + svg.line_chart("Server CPU over each cell (1 Hz observer samples)", lines, "seconds into the cell",
                             "CPU %", markers=False)
            + table(("competitor", "cell", "samples", "steady CPU %", "peak CPU %", "peak RSS kB"), rows))


def render(run: Run, prefix: str) -> str:
    """The whole bench view of one run."""
    doc: BenchDocument = run.document
    host = doc.host
    head = kv([("run", str(run.path)), ("version", doc.version), ("started", doc.started_at),
               ("finished", doc.finished_at or "–"), ("partial", "yes" if doc.partial else "no"),
               ("host", f"{host.hostname} {host.machine} {host.cpu_model}, {host.cpus_online} CPUs"),
               ("server / client CPUs", f"{host.server_cpus} / {host.client_cpus}"),
               ("runs × duration", f"{doc.config.runs} × {doc.config.duration_s:g} s (warm-up {doc.config.warmup_s:g} s)"),
               ("SLOs", ", ".join(f"{s:g} ms" for s in doc.config.slos_ms)),
               *([("server hosts (--driver " + (doc.driver or "?") + ")", ", ".join(
                   f"{h.name} {h.address} {h.machine} (exit {h.exit_code}{', ' + h.error if h.error else ''})"
                   for h in doc.hosts))] if doc.hosts else [])])
    skipped = [[c.name, c.status, c.reason or ""] for c in doc.competitors if c.status != "ok"]
    return (f'<h2>Bench: {e(run.label)}</h2>{head}'
            f'<h3>Throughput</h3>{throughput(doc)}'
            + (f"<h4>Competitors that did not run</h4>{table(('competitor', 'status', 'reason'), skipped)}"
               if skipped else "")
            + f'<h3>Latency vs offered rate (latency_at_slo search)</h3>{rate_search(doc)}'
            f'<h3>Percentile spectra (merged HdrHistograms)</h3>{spectra(doc)}'
            f'<h3>Server CPU (observer)</h3>{cpu(run)}')
