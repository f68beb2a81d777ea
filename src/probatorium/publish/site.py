"""A published site: one folder per run under ``<version>/<run_id>/``, the latest badges, an index.

Layout of a site folder (the same tree is committed to a git branch by gitbranch.py)::

    index.html, index.json           every published run, newest first
    badges/<tier>.svg                the newest run of each tier (pr, nightly, weekend, bench)
    <version>/<run_id>/
        results/                     a copy of the run folder (documents, tallies, logs, incidents)
        report.html                  probatorium.report.write_report on the run
        badges/<tier>.svg            this run's badge
        publish.json                 this run's index entry

Publishing is idempotent: a run (by ``run_id``) appears once in the index; publishing it
again replaces its folder and its entry (under a new version it moves there).
"""

from __future__ import annotations

import html
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from ..results.store import LOCK_NAME, write_json_atomic, write_text_atomic
from .badges import badge_svg
from .runinfo import TIER_LABELS, TIERS, RunInfo

INDEX_SCHEMA = "probatorium-publish/1"
INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
PUBLISH_LOCK = ".probatorium-publish.lock"
BADGE_TIERS = (*TIERS, "bench")

#: (run folders, out file) -> the written report; publish passes probatorium.report.write_report
ReportWriter = Callable[[list[Path], Path], Path]


@dataclass
class SiteResult:
    """What a publish wrote: the run's folder in the site, its entry, the index and the latest badges."""

    site: Path
    run_folder: Path
    entry: dict[str, Any]
    runs: int
    latest_badges: list[str]


def load_index(site: Path) -> list[dict[str, Any]]:
    """The entries of ``site/index.json`` ([] when there is none); a foreign or broken file is a UsageError."""
    path = site / INDEX_JSON
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable publish index ({' '.join(str(exc).split())}); "
                         "publish to another folder or remove it") from None
    if not isinstance(data, dict) or data.get("schema") != INDEX_SCHEMA or not isinstance(data.get("runs"), list):
        raise UsageError(f"{path}: not a probatorium publish index (schema {INDEX_SCHEMA}); "
                         "publish to another folder or remove it")
    return [r for r in data["runs"] if isinstance(r, dict) and isinstance(r.get("run_id"), str)]


def _sort_key(entry: dict[str, Any]) -> tuple[float, str]:
    try:
        moment = datetime.fromisoformat(str(entry.get("date", "")).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        stamp = moment.timestamp()
    except ValueError:
        stamp = float("-inf")
    return stamp, str(entry.get("run_id", ""))


def merge_entries(entries: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """``entries`` with ``new`` in place of any entry of the same run, newest first (pure)."""
    kept = [e for e in entries if e.get("run_id") != new["run_id"]]
    return sorted([*kept, new], key=_sort_key, reverse=True)


def _copy_run(run_dir: Path, dest: Path) -> None:
    """Copy the run folder, leaving out its lock and half-written temp files; world-readable modes."""
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n == LOCK_NAME or (n.startswith(".") and n.endswith(".tmp"))}

    shutil.copytree(run_dir, dest, ignore=ignore, symlinks=True)
    for root, dirs, files in os.walk(dest):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)


def _check_places(run_dir: Path, site: Path) -> None:
    src, dst = run_dir.resolve(), site.resolve()
    if dst == src or dst.is_relative_to(src):
        raise UsageError(f"--to {site} is inside the run folder {run_dir}: publish somewhere else")
    if site.exists() and not site.is_dir():
        raise UsageError(f"--to {site}: exists and is not a folder")


def _stage_run(run_dir: Path, stage: Path, info: RunInfo, path: str, write_report: ReportWriter) -> dict:
    """Fill ``stage`` with the run's published folder; returns its index entry."""
    _copy_run(run_dir, stage / "results")
    write_report([run_dir], stage / "report.html")
    if not (stage / "report.html").is_file():
        raise UsageError(f"report unavailable: the report writer wrote no {stage / 'report.html'}")
    write_text_atomic(stage / "badges" / info.badge_name, badge_svg(*info.badge()))
    entry = info.entry(path)
    write_json_atomic(stage / "publish.json", entry)
    return entry


def _swap_in(stage: Path, dest: Path) -> None:
    """Replace ``dest`` by ``stage`` with renames, so a reader sees the old or the new folder."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        dest.rename(old)
    stage.rename(dest)
    if old.exists():
        shutil.rmtree(old)


def publish_to_dir(run_dir: Path, site: Path, info: RunInfo, write_report: ReportWriter, *,
                   lock: bool = True) -> SiteResult:
    """Publish the run into the site folder ``site`` (created if missing) and rewrite its index and
    latest badges. ``lock``: hold ``site/.probatorium-publish.lock`` so two publishers take turns."""
    run_dir, site = Path(run_dir), Path(site)
    _check_places(run_dir, site)
    load_index(site)  # before anything is written: a foreign index stops the publish
    site.mkdir(parents=True, exist_ok=True)
    fd = _lock(site) if lock else None
    try:
        return _publish_locked(run_dir, site, info, write_report)
    finally:
        if fd is not None:
            os.close(fd)


def _lock(site: Path) -> int:
    """An exclusive flock on the site's lock file, waited for at most 60 s."""
    import fcntl
    import time

    fd = os.open(site / PUBLISH_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + 60
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise UsageError(f"{site}: another publish has held it for 60 s; try again later") from None
            time.sleep(0.1)


def _publish_locked(run_dir: Path, site: Path, info: RunInfo, write_report: ReportWriter) -> SiteResult:
    entries = load_index(site)
    path = f"{info.version}/{info.run_id}/"
    dest = site / info.version / info.run_id
    new_parent = not dest.parent.exists()
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = dest.with_name(f".{info.run_id}.staging-{os.getpid()}")
    if stage.exists():
        shutil.rmtree(stage)
    try:
        entry = _stage_run(run_dir, stage, info, path, write_report)
        _swap_in(stage, dest)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
        if new_parent and not any(dest.parent.iterdir()):
            dest.parent.rmdir()  # a failed first publish of a version leaves no empty folder
    for prev in entries:  # the same run published earlier under another version moves here
        if prev.get("run_id") == info.run_id and prev.get("path") != path:
            _remove_published(site, str(prev.get("path", "")))
    runs = merge_entries(entries, entry)
    latest = write_latest_badges(site, runs)
    write_json_atomic(site / INDEX_JSON, {"schema": INDEX_SCHEMA, "runs": runs})
    write_text_atomic(site / INDEX_HTML, render_index(runs, latest))
    return SiteResult(site=site, run_folder=dest, entry=entry, runs=len(runs), latest_badges=latest)


def _remove_published(site: Path, rel: str) -> None:
    parts = [p for p in rel.strip("/").split("/") if p]
    if len(parts) != 2 or any(p in (".", "..") for p in parts):
        return  # only ever a <version>/<run_id> folder of this site
    target = site.joinpath(*parts)
    if target.is_dir():
        shutil.rmtree(target)
        if not any(target.parent.iterdir()):
            target.parent.rmdir()


def write_latest_badges(site: Path, runs: list[dict[str, Any]]) -> list[str]:
    """``site/badges/<tier>.svg`` = the badge of the newest published run of each tier; returns the tiers."""
    written = []
    for tier in BADGE_TIERS:
        newest = next((r for r in runs if r.get("tier") == tier), None)  # runs are newest first
        if newest is None:
            continue
        src = site / str(newest.get("badge", ""))
        if not src.is_file():
            continue
        write_text_atomic(site / "badges" / f"{tier}.svg", src.read_text(encoding="utf-8"))
        written.append(tier)
    return written


_STATUS_CSS = {"passed": "#2c7a1f", "failed": "#c0392b", "not_judged": "#777"}


def _row(r: dict[str, Any]) -> str:
    e = {k: html.escape(str(r.get(k, ""))) for k in ("date", "version", "tier", "kind", "status", "headline",
                                                       "reason", "run_id", "report", "document", "host")}
    status_colour = _STATUS_CSS.get(str(r.get("status")), "#777")
    detail = e["headline"] or e["reason"]
    return (f"<tr><td>{e['date']}</td><td>{e['version']}</td><td>{e['tier']}</td><td>{e['kind']}</td>"
            f"<td style=\"color:{status_colour};font-weight:bold\">{e['status'].replace('_', ' ')}</td>"
            f"<td>{e['host']}</td><td class=\"d\">{detail}</td>"
            f"<td><a href=\"{e['report']}\">report</a> · <a href=\"{e['document']}\">results</a></td>"
            f"<td class=\"id\">{e['run_id']}</td></tr>")


def render_index(runs: list[dict[str, Any]], latest: list[str]) -> str:
    """``index.html``: the latest badges and a table of every published run, newest first (pure)."""
    badges = "".join(f'<img src="badges/{t}.svg" alt="{html.escape(TIER_LABELS[t])}"> ' for t in latest)
    rows = "\n".join(_row(r) for r in runs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>probatorium: published runs</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top;white-space:nowrap}}
td.d{{max-width:32em;white-space:normal}}td.id{{color:#777;font-size:85%}}</style></head>
<body><h1>Published runs</h1>
<p>{badges}</p>
<p>{len(runs)} run{'s' if len(runs) != 1 else ''}, newest first. Machine-readable: <a href="index.json">index.json</a>.</p>
<table><thead><tr><th>date</th><th>version</th><th>tier</th><th>kind</th><th>status</th><th>host</th>
<th>headline / reason</th><th>links</th><th>run</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
