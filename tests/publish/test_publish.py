"""`probatorium publish`: run info, badges, the site folder, the git branch, bad input.

Run folders are written by the real results writer from schema models (no server needed);
the report is the real probatorium.report; git is the real git on temporary repositories.
One end-to-end test runs a short real `validate` and publishes it through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from probatorium import cli
from probatorium.errors import UsageError
from probatorium.publish import publish
from probatorium.publish.badges import BENCH_COLOUR, STATUS_COLOURS, badge_svg
from probatorium.publish.runinfo import read_run, tier_for_budget
from probatorium.publish.site import INDEX_SCHEMA, merge_entries
from probatorium.results.schema import (BenchCell, BenchDocument, Cell, Incident, PropertyResult, Saturation,
                                        ValidateDocument, ValidationResults)
from probatorium.results.store import LOCK_NAME, lock_run_folder, write_json_atomic

SVG = "{http://www.w3.org/2000/svg}"


def make_validate_run(folder: Path, *, started: str = "2026-12-01T02:00:00.000Z", duration_s: float = 600,
                      status: str = "ok", high: bool = False, partial: bool = False, lock_file: bool = True) -> Path:
    """A validate run folder as the results writer leaves it: one cell, a judged property."""
    props = {"I-ADV-ACCEPTED": PropertyResult(status="failed" if high else "passed", evaluations=10)}
    incidents = [Incident(predicate="I-ADV-ACCEPTED", severity="HIGH", refapp="cmd", engine="cmd", arch="amd64",
                          cell="cell-01-cmd-cmd", first_seen=started, dossier="cell-01-cmd-cmd/incidents/x")] if high else []
    cell = Cell(refapp="cmd", engine="cmd", arch="amd64", status="failed" if high else status,
                reason="HIGH: I-ADV-ACCEPTED" if high else ("target never ready" if status == "not_run" else ""),
                started_at=started, properties=props, incidents=incidents, folder="cell-01-cmd-cmd",
                tier_1={"requests_sent": 100})
    doc = ValidateDocument(host_arch_pair="box-amd64", kind="single", probatorium_version="0.1.0", partial=partial,
                           validation_results=ValidationResults(started_at=started, finished_at=started,
                                                                duration_s=duration_s, cells=[cell]),
                           incidents=incidents).finalize_back_compat()
    write_json_atomic(folder / "validate-results.json", doc)
    write_json_atomic(folder / "cell-01-cmd-cmd" / "validate-results.json", doc)
    if lock_file:  # a finished run leaves its (unlocked) lock file behind
        (folder / LOCK_NAME).write_text("123\n")
    return folder


def make_bench_run(folder: Path, *, status: str = "ok", slo_rates: dict | None = None) -> Path:
    sat = Saturation(rps=12345.6, requests=24691, duration_s=2.0, latency_us={"p50": 900, "p99": 4000})
    cell = BenchCell(competitor="bench_app-uvicorn", cell="plaintext", status=status, saturation=sat,
                     latency_at_slo=slo_rates if slo_rates is not None else {"10": 9100.0, "50": 11000.0})
    doc = BenchDocument(version="v2.0", started_at="2026-12-02T03:00:00.000Z", finished_at="2026-12-02T03:01:00.000Z",
                        cells=[cell])
    write_json_atomic(folder / "results.json", doc.model_dump(mode="json", by_alias=True))
    return folder


def parse_badge(path: Path) -> tuple[list[str], list[str]]:
    """(texts, rect fills) of a badge file; fails unless it is well-formed SVG."""
    root = ET.fromstring(path.read_text())
    assert root.tag == f"{SVG}svg"
    return [t.text for t in root.iter(f"{SVG}text")], [r.get("fill") for r in root.iter(f"{SVG}rect")]


# ---------------------------------------------------------------------------------------------- pure parts

def test_badge_is_svg_with_label_message_and_colour(tmp_path):
    p = tmp_path / "b.svg"
    p.write_text(badge_svg("nightly validation", "a<b & c", STATUS_COLOURS["failed"]))
    texts, fills = parse_badge(p)
    assert set(texts) == {"nightly validation", "a<b & c"}
    assert fills[1:3] == ["#555", "#e05d44"]  # the label box, the message box (after the clip rect)
    narrow, wide = badge_svg("x", "ok", "#4c1"), badge_svg("x", "a much longer message", "#4c1")
    assert int(ET.fromstring(wide).get("width")) > int(ET.fromstring(narrow).get("width"))


def test_tier_from_budget_and_index_merge():
    assert [tier_for_budget(s) for s in (60, 600, 1800, 3600, 6 * 3600, 86400)] == \
        ["pr", "pr", "pr", "nightly", "nightly", "weekend"]
    a = {"run_id": "a", "date": "2026-12-01T00:00:00Z"}
    b = {"run_id": "b", "date": "2026-12-02T00:00:00Z"}
    merged = merge_entries(merge_entries([], a), b)
    assert [e["run_id"] for e in merged] == ["b", "a"]
    assert [e["run_id"] for e in merge_entries(merged, {**a, "status": "failed"})] == ["b", "a"]


def test_run_status_tier_and_version_from_the_document(tmp_path):
    ok = read_run(make_validate_run(tmp_path / "20261201T020000Z-validate-v1.4"))
    assert (ok.kind, ok.status, ok.tier, ok.version, ok.run_id) == \
        ("validate", "passed", "pr", "v1.4", "20261201T020000Z-validate-v1.4")
    bad = read_run(make_validate_run(tmp_path / "f", high=True, duration_s=3600))
    assert (bad.status, bad.tier, bad.version, bad.run_id) == ("failed", "nightly", "probatorium-0.1.0",
                                                               "20261201T020000Z-f")
    assert bad.summary["incidents_high"] == 1
    # no PROBATORIUM_TARGET_VERSION at run time: the folder is named after the cell, not a version
    assert read_run(make_validate_run(tmp_path / "20261201T020000Z-validate-cmd-cmd")).version == "probatorium-0.1.0"
    assert read_run(make_validate_run(tmp_path / "n", status="not_run")).status == "not_judged"
    assert read_run(make_validate_run(tmp_path / "p", partial=True)).status == "not_judged"
    assert read_run(tmp_path / "n", tier="weekend", version="v9").tier == "weekend"
    bench = read_run(make_bench_run(tmp_path / "bench"))
    assert (bench.kind, bench.tier, bench.status, bench.version, bench.headline) == \
        ("bench", "bench", "passed", "v2.0", "9.1k rps p99<10ms")
    assert read_run(make_bench_run(tmp_path / "b2", slo_rates={})).headline == "12.3k rps saturation"
    assert read_run(make_bench_run(tmp_path / "b3", status="invalid")).status == "failed"


# ---------------------------------------------------------------------------------------------- --to DIR

def test_publish_to_dir_is_idempotent_and_keeps_the_latest_badges(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_VERSION", "v1.4.2")
    site = tmp_path / "site"
    older = make_validate_run(tmp_path / "older")
    res = publish(older, str(site))
    run = site / "v1.4.2" / "20261201T020000Z-older"
    assert res.runs == 1 and Path(res.run_path) == run
    assert (run / "results" / "validate-results.json").is_file()
    assert (run / "results" / "cell-01-cmd-cmd" / "validate-results.json").is_file()
    assert not (run / "results" / LOCK_NAME).exists()
    assert "probatorium report" in (run / "report.html").read_text()
    assert json.loads((run / "publish.json").read_text())["status"] == "passed"

    publish(older, str(site))  # the same run again: one entry, one folder
    index = json.loads((site / "index.json").read_text())
    assert index["schema"] == INDEX_SCHEMA and [r["run_id"] for r in index["runs"]] == ["20261201T020000Z-older"]

    newer = make_validate_run(tmp_path / "newer", started="2026-12-02T02:00:00.000Z", high=True)
    publish(newer, str(site))
    publish(older, str(site))  # re-publishing the older run must not steal the latest badge
    index = json.loads((site / "index.json").read_text())
    assert [(r["run_id"], r["status"]) for r in index["runs"]] == \
        [("20261202T020000Z-newer", "failed"), ("20261201T020000Z-older", "passed")]
    texts, fills = parse_badge(site / "badges" / "pr.svg")
    assert "failed" in texts and STATUS_COLOURS["failed"] in fills
    page = (site / "index.html").read_text()
    assert page.index("20261202T020000Z-newer") < page.index("20261201T020000Z-older")
    assert 'href="v1.4.2/20261201T020000Z-older/report.html"' in page

    monkeypatch.delenv("PUBLISH_VERSION")
    publish(make_bench_run(tmp_path / "bench"), str(site))
    texts, fills = parse_badge(site / "badges" / "bench.svg")
    assert "9.1k rps p99<10ms" in texts and BENCH_COLOUR in fills
    assert sorted(p.name for p in (site / "badges").iterdir()) == ["bench.svg", "pr.svg"]


FIXTURES = Path(__file__).resolve().parents[1] / "data" / "report"  # real runs, trimmed (see PROVENANCE.md)


def test_the_real_report_fixtures_publish_with_their_verdicts(tmp_path):
    site = tmp_path / "site"
    matrix = publish(FIXTURES / "validate-matrix", str(site), version="v0.1")
    bench = publish(FIXTURES / "bench" / "results.json", str(site), version="v0.1")  # a document names its run
    # the matrix run found HIGH incidents (exit 1 when it ran): a failed PR-tier badge (40 s budget)
    assert (matrix.info.status, matrix.info.tier, matrix.info.summary["cells_failed"]) == ("failed", "pr", 2)
    # bench_app-uvicorn/plaintext is the first cell; its tightest SLO with a rate is 50 ms: 5698.9 rps
    assert (bench.info.status, bench.info.headline) == ("passed", "5.7k rps p99<50ms")
    assert bench.info.summary["headline"] == {"competitor": "bench_app-uvicorn", "cell": "plaintext",
                                              "latency_at_slo_ms": 50.0, "rps": 5698.9}
    index = json.loads((site / "index.json").read_text())["runs"]
    assert [r["kind"] for r in index] == ["bench", "validate"]  # the bench started later: newest first
    assert "failed" in parse_badge(site / "badges" / "pr.svg")[0]
    for r in index:
        assert "probatorium report" in (site / r["report"]).read_text()
        assert (site / r["document"]).is_file() and f'href="{r["document"]}"' in (site / "index.html").read_text()
    assert (site / index[1]["results"] / "cell-01-auth_session_ratelimit-uvicorn" / "tier1_tally.json").is_file()


def test_a_run_still_being_written_is_refused(tmp_path):
    run = tmp_path / "live"
    with lock_run_folder(run):  # what a live validate holds while it writes
        make_validate_run(run, lock_file=False)
        with pytest.raises(UsageError, match="still writing"):
            publish(run, str(tmp_path / "site"))
    assert not (tmp_path / "site").exists()
    assert publish(run, str(tmp_path / "site")).runs == 1  # the lock died with its holder


def test_a_foreign_index_is_refused_untouched(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.json").write_text('{"something": "else"}')
    with pytest.raises(UsageError, match="not a probatorium publish index"):
        publish(make_validate_run(tmp_path / "r"), str(site))
    assert sorted(p.name for p in site.iterdir()) == ["index.json"]


# ---------------------------------------------------------------------------------------------- --to git:BRANCH

def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True,
                          timeout=60).stdout


def user_repo(path: Path) -> Path:
    """A repository with a commit, a staged change and an unstaged one (the user's work in progress)."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "a.txt").write_text("one\n")
    git(path, "add", "a.txt")
    git(path, "commit", "-qm", "init")
    (path / "a.txt").write_text("one\ntwo\n")
    (path / "b.txt").write_text("staged\n")
    git(path, "add", "b.txt")
    (path / "c.txt").write_text("untracked\n")
    return path


def test_publish_to_git_branch_leaves_the_checkout_alone(tmp_path):
    repo = user_repo(tmp_path / "repo")
    before = (git(repo, "status", "--porcelain"), git(repo, "diff"), git(repo, "diff", "--cached"),
              git(repo, "rev-parse", "HEAD"), git(repo, "symbolic-ref", "HEAD"))
    res = publish(make_validate_run(tmp_path / "r1"), "git:probatorium-results", repo=repo, tier="nightly")
    first = git(repo, "rev-parse", "probatorium-results").strip()
    assert res.commit == first
    assert git(repo, "rev-list", "--parents", "-n1", first).split() == [first]  # an orphan: no parent
    files = git(repo, "ls-tree", "-r", "--name-only", first).split()
    run = "probatorium-0.1.0/20261201T020000Z-r1"
    assert {"index.json", "index.html", "badges/nightly.svg", f"{run}/report.html", f"{run}/publish.json",
            f"{run}/results/validate-results.json", f"{run}/badges/nightly.svg"} <= set(files)
    assert "a.txt" not in files and "b.txt" not in files
    assert "publish validate probatorium-0.1.0 (nightly tier): passed" in git(repo, "log", "-1", "--format=%s", first)

    res2 = publish(make_validate_run(tmp_path / "r2", started="2026-12-02T02:00:00.000Z"), "git:probatorium-results",
                   repo=repo, version="v2")
    assert git(repo, "rev-parse", f"{res2.commit}^").strip() == first
    index = json.loads(git(repo, "show", f"{res2.commit}:index.json"))
    assert [r["tier"] for r in index["runs"]] == ["pr", "nightly"]
    after = (git(repo, "status", "--porcelain"), git(repo, "diff"), git(repo, "diff", "--cached"),
             git(repo, "rev-parse", "HEAD"), git(repo, "symbolic-ref", "HEAD"))
    assert after == before

    with pytest.raises(UsageError, match="checked out"):
        publish(tmp_path / "r1", "git:main", repo=repo)
    with pytest.raises(UsageError, match="not a valid branch name"):
        publish(tmp_path / "r1", "git:bad..name", repo=repo)


# ---------------------------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("args, message", [
    (["publish", "{tmp}/missing", "--to", "{tmp}/site"], "no such run folder"),
    (["publish", "{tmp}", "--to", "{tmp}/site"], "not a run folder"),
    (["publish", "{run}/" + LOCK_NAME, "--to", "{tmp}/site"], "a file; give the run folder"),
    (["publish", "{run}", "--to", "{tmp}/site", "--tier", "daily"], "unknown tier 'daily'"),
    (["publish", "{run}", "--to", "{run}/site"], "inside the run folder"),
    (["publish", "{run}", "--to", "{tmp}/site", "--version", "../up"], "cannot name a published folder"),
    (["publish", "{run}", "--to", "git:x", "--repo", "{tmp}"], "not inside a git repository"),
    (["publish", "{run}"], "Missing option '--to'"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    run = make_validate_run(tmp_path / "run")
    argv = [a.format(tmp=tmp_path, run=run) for a in args]
    monkeypatch.setattr(sys, "argv", ["probatorium", *argv])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("probatorium: error: ") and message in err[0]
    assert not (tmp_path / "site").exists()
