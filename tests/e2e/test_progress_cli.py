"""End-to-end (one short run): validate in CI mode — progress lines on stderr, stdout only the --json object."""

from __future__ import annotations

import json

import pytest

from e2e_helpers import h1cmd, run_cli

pytestmark = pytest.mark.e2e


def test_ci_mode_progress_on_stderr_and_json_alone_on_stdout(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("PROBATORIUM_PROGRESS", raising=False)
    res = run_cli(["validate", "--cmd", h1cmd(), "--slices", "adversarial", "--duration", "4s", "--concurrency", "2",
                   "--out", str(tmp_path / "run"), "--json"], timeout=90)
    summary = json.loads(res.stdout)  # nothing but the object
    assert (summary["command"], summary["exit_code"]) == ("validate", res.returncode), res.stderr[-2000:]
    lines = res.stderr.splitlines()
    assert lines[0].startswith("probatorium ") and ": 1 cell(s), 4s" in lines[0]
    ends = [ln for ln in lines if ln.startswith("progress: cell 1/1 done (")]
    assert len(ends) == 1 and " elapsed" in ends[0], res.stderr
    assert "\r" not in res.stderr and "\x1b" not in res.stderr  # plain lines: no live redraws in CI
    assert not [ln for ln in lines if ln.startswith("progress: validate")]  # no heartbeat in a 4 s run
