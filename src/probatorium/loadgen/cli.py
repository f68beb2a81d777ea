"""``probatorium loadgen URL``: a plain function the typer CLI wires up."""

from __future__ import annotations

import sys
from typing import Sequence

from probatorium.errors import ProbatoriumError, UsageError, error_line
from probatorium.jsonsummary import print_json
from probatorium.loadgen.config import LoadConfig
from probatorium.loadgen.runner import LoadResult, run_load
from probatorium.loadgen.thresholds import Measured, Verdict, all_passed, evaluate, fmt_us, parse_thresholds

__all__ = ["run_loadgen_command", "render_table", "parse_header", "exit_code"]


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"loadgen: header must be 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def run_loadgen_command(
    url: str,
    *,
    connections: int = 64,
    rate: float | None = None,
    duration: float = 10.0,
    warmup: float = 0.0,
    workers: int | None = None,
    method: str = "GET",
    headers: Sequence[str] = (),
    body: str | bytes | None = None,
    close: bool = False,
    json_out: bool = False,
    timeout: float = 10.0,
    expect_status: Sequence[int] | None = None,
    allow_remote: bool = False,
    kind: str = "http",
    ws_message: str | None = None,
    thresholds: Sequence[str] = (),
) -> int:
    """Run one load test and print the result. Returns the exit code.

    0: the run completed without errors; 1: it completed but some requests failed
    (any error class) or open-loop slots were unsent; 2: configuration error or
    the target never accepted a connection (one line on stderr).
    ``headers`` are ``"Name: value"`` strings; ``body`` a string (``@file`` reads a file).
    ``kind``: "http" (default), "ws" (WebSocket echo: requests = echoed messages of
    ``ws_message``), "sse" (``connections`` subscribers: requests = events delivered,
    latency = delivery lag of events whose data is an epoch timestamp).
    ``thresholds``: k6-style criteria (``"p99<50ms"``, ``"errors<0.1%"``; see
    :mod:`probatorium.loadgen.thresholds`). When given, they decide the exit code
    instead: 0 all passed, 1 any broken; each verdict is printed (and in ``--json``
    under ``"thresholds"``).
    """
    try:
        judged = parse_thresholds(thresholds)  # a bad expression fails before any load is sent
        if isinstance(body, str) and body.startswith("@"):
            with open(body[1:], "rb") as fh:
                body_b = fh.read()
        elif isinstance(body, str):
            body_b = body.encode()
        else:
            body_b = body or b""
        cfg = LoadConfig(
            url=url,
            connections=connections,
            rate=rate,
            duration=duration,
            warmup=warmup,
            workers=workers,
            method=method,
            headers=[parse_header(h) for h in headers],
            body=body_b,
            close=close,
            timeout=timeout,
            expected_statuses=frozenset(expect_status) if expect_status else None,
            allow_remote=allow_remote,
            kind=kind,
            **({"ws_message": ws_message.encode()} if ws_message is not None else {}),
        )
        result = run_load(cfg)
    except OSError as exc:
        print(error_line(f"loadgen: {exc}"), file=sys.stderr)
        return 2
    except ProbatoriumError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    verdicts = evaluate(judged, Measured.from_load_result(result.to_dict())) if judged else []
    if json_out:
        doc = result.to_dict()
        if judged:
            doc["thresholds"] = [v.to_dict() for v in verdicts]
        # the result object, behind the envelope every command's --json starts with (docs/json.md)
        print_json("loadgen", exit_code(result, verdicts if judged else None), doc, indent=None)
        for v in verdicts:  # stdout stays one JSON object; the broken ones are named on stderr too
            if not v.passed:
                print(f"probatorium loadgen: {v.line()}", file=sys.stderr)
    else:
        render_table(result)
        for v in verdicts:
            print(v.line())
    return exit_code(result, verdicts if judged else None)


def exit_code(result: LoadResult, verdicts: Sequence[Verdict] | None) -> int:
    """Without thresholds: 1 on any error or unsent slot. With them: 1 iff one is broken."""
    if verdicts is not None:
        return 0 if all_passed(verdicts) else 1
    return 1 if (result.errors_total or result.unsent) else 0


def render_table(r: LoadResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    mode = f"open loop @ {r.target_rps:g} rps" if r.mode == "open" else "closed loop"
    if r.kind != "http":
        mode = {"ws": "WebSocket echo, ", "sse": "SSE subscribers, "}[r.kind] + mode
    t = Table(title=f"{r.url}  {mode}, {r.connections} conns, {r.workers} worker(s), {r.duration_s:g}s",
              show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("measured", justify="right")
    if r.warmup is not None:
        t.add_column("warmup", justify="right")

    def row(name: str, a: object, b: object = "") -> None:
        if r.warmup is not None:
            t.add_row(name, str(a), str(b))
        else:
            t.add_row(name, str(a))

    w = r.warmup
    row("requests", r.requests, w.requests if w else "")
    row("requests/s", f"{r.requests_per_sec:,.0f}", f"{w.requests_per_sec:,.0f}" if w else "")
    for k in ("p50", "p90", "p99", "p999", "max", "mean"):
        row(f"latency {k}", _fmt_us(r.latency_us[k]), _fmt_us(w.latency_us[k]) if w else "")
    errs = ", ".join(f"{k}={v}" for k, v in r.errors.items() if v) or "none"
    werrs = (", ".join(f"{k}={v}" for k, v in w.errors.items() if v) or "none") if w else ""
    row("errors", errs, werrs)
    if r.mode == "open":
        row("achieved rps", f"{r.achieved_rps:,.0f}")
        row("unsent", r.unsent, w.unsent if w else "")
    row("client CPU", f"{r.client_cpu['total_cpu_s']:.2f}s (max {r.client_cpu['max_util']:.0%}/core)")
    row("loop lag", f"mean {r.loop_lag_ms['mean']:.2f} ms, max {r.loop_lag_ms['max']:.1f} ms")
    row("client bound", "YES: " + r.client_bound_reason if r.client_bound else "no")
    console.print(t)


def _fmt_us(v: float) -> str:
    return fmt_us(v, ".2f")
