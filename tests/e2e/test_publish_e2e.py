"""End to end: a short real `validate` run, published through the CLI to a folder and to a git branch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from e2e_helpers import h1cmd, run_cli


def test_a_real_run_published_to_a_folder_and_a_branch(tmp_path):
    run = tmp_path / "run"
    res = run_cli(["validate", "--cmd", h1cmd(), "--slices", "adversarial", "-d", "3s", "--out", str(run)], timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]

    site = tmp_path / "site"
    pub = run_cli(["publish", str(run), "--to", str(site), "--version", "v0.9"], timeout=60)
    assert pub.returncode == 0, pub.stderr
    assert "published validate v0.9 (pr): passed" in pub.stdout
    entry = json.loads((site / "index.json").read_text())["runs"][0]
    assert (entry["version"], entry["tier"], entry["status"]) == ("v0.9", "pr", "passed")
    assert (site / entry["report"]).is_file() and (site / entry["results"] / "validate-results.json").is_file()

    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    pub = run_cli(["publish", str(run), "--to", "git:results", "--repo", str(repo), "--tier", "weekend"], timeout=60)
    assert pub.returncode == 0, pub.stderr
    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "results"], check=True,
                           capture_output=True, text=True, timeout=30).stdout.split()
    assert "badges/weekend.svg" in files and any(f.endswith("/report.html") for f in files)
    assert sorted(p.name for p in repo.iterdir()) == [".git"]  # the checkout itself got nothing
