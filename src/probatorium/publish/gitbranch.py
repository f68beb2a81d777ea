"""Publish into a local git branch without touching the user's checkout.

The branch's current tree is read into a temporary folder through a temporary index
(``GIT_INDEX_FILE``), the site is updated there exactly as for ``--to DIR``, and the new
tree becomes one commit on the branch (``write-tree``, ``commit-tree``, ``update-ref`` with
the old value, so a concurrent change is refused, not overwritten). The working tree, the
index and HEAD of the repository are never used; nothing is fetched or pushed. A missing
branch is created as an orphan (a commit with no parent).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InfraError, UsageError
from .runinfo import RunInfo
from .site import ReportWriter, SiteResult, publish_to_dir

_GIT_TIMEOUT_S = 120
_FALLBACK_IDENT = {"GIT_AUTHOR_NAME": "probatorium publish", "GIT_AUTHOR_EMAIL": "probatorium@localhost",
                   "GIT_COMMITTER_NAME": "probatorium publish", "GIT_COMMITTER_EMAIL": "probatorium@localhost"}


@dataclass
class GitResult:
    """The branch, the commit it now points at (``None`` when the tree did not change) and the site."""

    branch: str
    commit: str | None
    message: str
    site: SiteResult


class _Git:
    """``git`` on one repository with a private index file; every call bounded in time."""

    def __init__(self, repo: Path, git_dir: str, index_file: Path, work_tree: Path) -> None:
        self.repo = repo
        # the repository's own git dir (works for bare repositories and linked worktrees too),
        # a private index and a private work tree: the user's index and checkout are never read
        self.env = {**_clean_env(), "GIT_DIR": git_dir, "GIT_WORK_TREE": str(work_tree),
                    "GIT_INDEX_FILE": str(index_file), "GIT_TERMINAL_PROMPT": "0"}
        self.work_tree = work_tree

    def run(self, *args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None) -> str:
        cmd = ["git", "-c", "core.autocrlf=false", "-c", "core.safecrlf=false", *args]
        try:
            proc = subprocess.run(cmd, cwd=cwd or self.work_tree, env=env or self.env, capture_output=True,
                                  text=True, timeout=_GIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise InfraError(f"git {args[0]} did not finish in {_GIT_TIMEOUT_S}s") from None
        if check and proc.returncode != 0:
            why = " ".join((proc.stderr or proc.stdout).split())[:300]
            raise InfraError(f"git {' '.join(args[:2])} failed: {why}")
        return proc.stdout.strip() if proc.returncode == 0 else ""


def _check_branch(git: _Git, branch: str) -> str:
    ok = None if not branch or branch.startswith("-") else subprocess.run(
        ["git", "check-ref-format", "--branch", branch], capture_output=True, text=True,
        timeout=_GIT_TIMEOUT_S, env=git.env)
    if ok is None or ok.returncode != 0 or ok.stdout.strip() != branch:
        raise UsageError(f"--to git:{branch}: not a valid branch name")
    ref = f"refs/heads/{branch}"
    for line in git.run("worktree", "list", "--porcelain").splitlines():
        if line == f"branch {ref}":
            raise UsageError(f"--to git:{branch}: that branch is checked out in a working tree of {git.repo}; "
                             "publish to a branch nobody has checked out (e.g. git:probatorium-results)")
    return ref


def _identity_env(git: _Git) -> dict:
    """The caller's git identity when one is configured, else a fixed probatorium one."""
    if git.run("var", "GIT_COMMITTER_IDENT", check=False) and git.run("var", "GIT_AUTHOR_IDENT", check=False):
        return git.env
    return {**git.env, **_FALLBACK_IDENT}


def commit_message(info: RunInfo, run_dir: Path) -> str:
    """One publish, one honest message: what was published and its verdict."""
    head = f"publish {info.kind} {info.version} ({info.tier} tier): {info.status.replace('_', ' ')}"
    if info.kind == "bench":
        head = f"publish bench {info.version}: {info.headline or info.status.replace('_', ' ')}"
    body = [f"run {info.run_id}, started {info.date or 'unknown'}, host {info.host or 'unknown'}"]
    if info.reason:
        body.append(info.reason)
    body.append(f"from {run_dir} by probatorium {info.probatorium_version or ''}".rstrip())
    return head + "\n\n" + "\n".join(body) + "\n"


def _clean_env() -> dict[str, str]:
    # a caller's GIT_DIR / GIT_WORK_TREE / GIT_INDEX_FILE must not redirect us
    return {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}


def resolve_repo(repo: Path | None) -> tuple[Path, str]:
    """The repository to publish into (``repo`` or the one around the current directory) and its git dir."""
    where = Path(repo) if repo is not None else Path.cwd()
    if not where.is_dir():
        raise UsageError(f"--repo {where}: no such folder")
    if shutil.which("git") is None:
        raise InfraError("git is not installed (needed for --to git:BRANCH)")
    try:
        proc = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=where, capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S, env=_clean_env())
    except subprocess.TimeoutExpired:
        raise InfraError(f"git rev-parse did not finish in {_GIT_TIMEOUT_S}s") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        raise UsageError(f"{where}: not inside a git repository (give --repo PATH)")
    return where.resolve(), proc.stdout.strip()


def publish_to_git(run_dir: Path, branch: str, repo: Path | None, info: RunInfo,
                   write_report: ReportWriter) -> GitResult:
    """Publish the run as one new commit on the local ``branch`` of ``repo`` (orphan if missing)."""
    where, git_dir = resolve_repo(repo)
    with tempfile.TemporaryDirectory(prefix="probatorium-publish-") as tmp:
        tree_dir = Path(tmp) / "tree"
        tree_dir.mkdir()
        git = _Git(where, git_dir, Path(tmp) / "index", tree_dir)
        ref = _check_branch(git, branch)
        old = git.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if old:
            git.run("read-tree", old)
            git.run("checkout-index", "--all", "--force")
        site = publish_to_dir(run_dir, tree_dir, info, write_report, lock=False)
        # --force: the user's ignore rules (a global *.log, say) must not drop published files
        git.run("add", "--all", "--force", ".")
        tree = git.run("write-tree")
        message = commit_message(info, Path(run_dir))
        commit: str | None = None
        if not old or tree != git.run("rev-parse", f"{old}^{{tree}}"):  # an unchanged tree is no new commit
            parents = ["-p", old] if old else []
            commit = git.run("commit-tree", tree, *parents, "-m", message, env=_identity_env(git))
            git.run("update-ref", "-m", f"probatorium publish {info.run_id}", ref, commit, old or "")
    return GitResult(branch=branch, commit=commit, message=message, site=site)
