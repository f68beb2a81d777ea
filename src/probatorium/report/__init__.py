"""``probatorium report``: one self-contained HTML file from validate, bench and validate-diff runs.

Views (docs/report.md): one per RUN_DIR (validation matrix with drill-down, bench charts, or
validate-diff divergences) and, with a history file, the trends across runs. No network: CSS,
JS and SVG charts are inline.
"""

from __future__ import annotations

from pathlib import Path

from probatorium import __version__
from probatorium.errors import UsageError
from probatorium.report import bench_view, diff_view, history, validate_view
from probatorium.report.page import page
from probatorium.report.sources import Run, load_run
from probatorium.results.schema import utc_now_iso
from probatorium.results.store import write_text_atomic

REPORT_NAME = "report.html"
_RENDER = {"validate": validate_view.render, "bench": bench_view.render, "validate-diff": diff_view.render}

__all__ = ["REPORT_NAME", "Run", "build_report", "load_run", "write_report"]


def build_report(runs: list[Run], history_lines: list[dict] | None = None) -> str:
    """The HTML of the report over loaded ``runs`` (and the trends of ``history_lines`` when given)."""
    views = []
    for i, run in enumerate(runs):
        vid = f"view-{i + 1}"
        views.append((vid, f"{run.kind}: {run.label}", _RENDER[run.kind](run, vid)))
    if history_lines is not None:
        views.append(("view-trends", "trends", history.render(history_lines)))
    kinds = ", ".join(sorted({r.kind for r in runs}))
    return page("probatorium report", f"{len(runs)} run(s): {kinds}; generated {utc_now_iso()} "
                f"by probatorium {__version__}", views)


def write_report(run_dirs: list[Path], out: Path | None = None, history_file: Path | None = None) -> Path:
    """Load each run folder, write the report atomically and return its path.

    ``out`` defaults to ``<first run dir>/report.html``. With ``history_file`` the runs' summaries
    are appended to it (JSON lines, once per run) and a trends view is added. Bad input raises a
    one-line ``UsageError``.
    """
    if not run_dirs:
        raise UsageError("report: give at least one RUN_DIR")
    runs = [load_run(Path(p)) for p in run_dirs]
    lines = history.append(Path(history_file), runs) if history_file is not None else None
    target = Path(out) if out is not None else runs[0].path / REPORT_NAME
    if target.is_dir():
        target = target / REPORT_NAME
    try:
        write_text_atomic(target, build_report(runs, lines))
    except OSError as exc:
        raise UsageError(f"{target}: cannot write the report: {' '.join(str(exc).split())}") from None
    return target
