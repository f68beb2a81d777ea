"""`probatorium publish RUN_DIR --to DIR|git:BRANCH`: results + report + SVG badges + an index of runs.

The seed's publish step (README "Mage targets": Publish / PublishValidate, ``PUBLISH_VERSION``)
done locally: a folder (``site.py``) or a local git branch (``gitbranch.py``), never the network.
The report is ``probatorium.report.write_report``; badges are drawn by ``badges.py``; what a run
is (kind, version, tier, status) is read from its document by ``runinfo.py``. docs/publish.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..report import write_report
from .runinfo import TIERS, RunInfo, read_run

GIT_PREFIX = "git:"


@dataclass
class Published:
    """The outcome of one publish, for the command to print."""

    info: RunInfo
    where: str  # the site folder, or "git:BRANCH"
    run_path: str  # the run's folder inside the site
    runs: int  # runs in the index after this publish
    latest_badges: list[str]
    commit: str | None = None  # --to git: the new commit (None: the branch already had this tree)


def publish(run_dir: Path, to: str, *, version: str | None = None, tier: str | None = None,
            repo: Path | None = None) -> Published:
    """Publish ``run_dir`` to ``to`` (a folder, or ``git:BRANCH``). ``version`` defaults to
    ``PUBLISH_VERSION``, then to the run document's; ``tier`` to the one the run's budget implies."""
    if not to or not to.strip():
        raise UsageError("--to DIR|git:BRANCH is required")
    if tier is not None and tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r}: use {', '.join(TIERS)}")
    chosen = version if version is not None else (os.environ.get("PUBLISH_VERSION") or None)
    info = read_run(Path(run_dir), version=chosen, tier=tier)
    run_dir = Path(run_dir).parent if Path(run_dir).is_file() else Path(run_dir)  # a document names its folder
    if to.startswith(GIT_PREFIX):
        from .gitbranch import publish_to_git

        res = publish_to_git(run_dir, to[len(GIT_PREFIX):], repo, info, write_report)
        return Published(info=info, where=f"git:{res.branch}", run_path=f"{info.version}/{info.run_id}/",
                         runs=res.site.runs, latest_badges=res.site.latest_badges, commit=res.commit)
    if repo is not None:
        raise UsageError("--repo is for --to git:BRANCH")
    from .site import publish_to_dir

    res_dir = publish_to_dir(run_dir, Path(to), info, write_report)
    return Published(info=info, where=str(res_dir.site), run_path=str(res_dir.run_folder), runs=res_dir.runs,
                     latest_badges=res_dir.latest_badges)
