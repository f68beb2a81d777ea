"""The catalogue's judges, the gate and the schedule are pure: tested with plain values."""

from __future__ import annotations

from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.results.schema import Cell, Incident, PropertyResult
from probatorium.validate import invariants as inv
from probatorium.validate.gate import cell_status, provisional_status
from probatorium.validate.invariants import CATALOGUE, Observed, judge_cell, predicate_for
from probatorium.validate.schedule import LEAK_MIN_CELL_S, allocate_walkers, cell_budget, schedule_cell
from probatorium.validate.tier1.registry import SLICES
from probatorium.validate.tiers import choose_tiers, parse_tiers

ROOT = Path(__file__).resolve().parents[2]


def obs(**tallies) -> Observed:
    return Observed(tallies=tallies)


def test_counters_decide_passed_failed_not_judged():
    assert CATALOGUE["I-ADV-HANG"].decide(obs(adversarial={"adv_sent": 5})).status == "passed"
    bad = CATALOGUE["I-ADV-HANG"].decide(obs(adversarial={"adv_sent": 5, "adv_hang_until_timeout": 1}))
    assert bad.status == "failed" and bad.evaluations == 5
    none = CATALOGUE["I-ADV-HANG"].decide(Observed(tallies={"adversarial": {"adv_sent": 0}},
                                                   reasons={"adversarial": "calibration failed: refused"}))
    assert none.status == "not_judged" and none.reason == "calibration failed: refused"
    # A slice that did not run: the property does not apply (absent, never "passed").
    assert CATALOGUE["I-ADV-HANG"].decide(obs(markov={"requests": 9})) is None


def test_ws_close_counts_unclean_closes_and_needs_a_handshake():
    ws = {"ws_sent": 4, "ws_upgraded": 4, "ws_unclean_close": 1}
    assert CATALOGUE["I-WS-CLOSE"].decide(obs(ws_torture=ws)).status == "failed"
    assert CATALOGUE["I-WS-CLOSE"].decide(obs(ws_torture={**ws, "ws_unclean_close": 0})).status == "passed"
    no_upgrade = CATALOGUE["I-WS-ACCEPTED"].decide(obs(ws_torture={"ws_sent": 4, "ws_upgraded": 0}))
    assert no_upgrade.status == "not_judged"
    absent = Observed(tallies={"ws_torture": ws}, evidence={"ws_endpoint_absent": True})
    assert CATALOGUE["I-WS-HANG"].decide(absent).status == "not_judged"


def test_adv_accepted_takes_the_h2c_body_check_explicitly():
    res = CATALOGUE["I-ADV-ACCEPTED"].decide(obs(adversarial={"adv_sent": 3},
                                                 h2c_churn={"h2c_body_checked": 2, "h2c_body_mismatch": 1}))
    assert res.status == "failed" and res.evaluations == 5
    assert "h2c_churn.h2c_body_mismatch" in CATALOGUE["I-ADV-ACCEPTED"].violations
    assert predicate_for("h2c", "body_mismatch") == "I-ADV-ACCEPTED"
    assert predicate_for("adversarial", "crash") == "I-LIVENESS"
    assert predicate_for("adversarial", "well_rejected") is None


def test_evidence_judges():
    conn2 = PropertyResult(status="failed", evaluations=7, reason="sse_open 40 > 12 for 11 s")
    assert CATALOGUE["I-CONN-2"].decide(Observed(evidence={"I-CONN-2": conn2})).status == "failed"
    assert CATALOGUE["I-CONN-2"].decide(Observed()) is None
    assert CATALOGUE["I-MEM-1"].decide(Observed(evidence={"leaks": "url target"})).reason == "url target"
    wd = {"has_process": True, "health_checks": 12, "events": ["I-HANG"]}
    assert CATALOGUE["I-HANG"].decide(Observed(evidence={"watchdog": wd})).status == "failed"
    assert CATALOGUE["I-LIVENESS"].decide(Observed(evidence={"watchdog": wd})).status == "passed"
    dead = Observed(evidence={"watchdog": wd}, incidents=frozenset({"I-LIVENESS"}))
    assert CATALOGUE["I-LIVENESS"].decide(dead).status == "failed"
    url = Observed(evidence={"watchdog": {"has_process": False, "health_checks": 3, "events": []}})
    assert CATALOGUE["I-LIVENESS"].decide(url).status == "not_judged"
    kv = Observed(tallies={"markov": {"drv_checks": 3}}, evidence={"kv_contract": False})
    assert CATALOGUE["I-DRV-1"].decide(kv).status == "not_judged"
    metrics = Observed(evidence={"metrics": {"comparisons": 4, "violations": 1}})
    assert CATALOGUE["I-OBS-1"].decide(metrics).status == "failed"


def test_every_tier_judge_decides_from_its_evidence():
    # Each Tier 2 / Tier 3 predicate: absent evidence → does not apply; present → a decision.
    t2 = {f"checked_{p}": 3 for p in CATALOGUE if p.startswith("I-API-")}
    t2["findings_I-API-UAF"] = 1
    for pred in (p for p in CATALOGUE if p.startswith("I-API-")):
        assert CATALOGUE[pred].decide(Observed()) is None, pred
        assert CATALOGUE[pred].decide(Observed(evidence={"tier_2": t2})).status == (
            "failed" if pred == "I-API-UAF" else "passed"), pred
    verdict = {"status": "passed", "evaluations": 2, "reason": ""}
    for pred in (p for p in CATALOGUE if p.startswith("I-T3-")):
        assert CATALOGUE[pred].decide(Observed()) is None, pred
        assert CATALOGUE[pred].decide(Observed(evidence={"tier3": {pred: verdict}})).status == "passed", pred


def test_an_incident_fails_its_property_whoever_reported_it():
    props = judge_cell(obs(adversarial={"adv_sent": 3}), {"I-MW-JWT": "alg none accepted", "I-ADV-HANG": "x"})
    assert props["I-MW-JWT"].status == "failed" and "alg none" in props["I-MW-JWT"].reason
    assert props["I-ADV-HANG"].status == "failed" and props["I-ADV-HANG"].evaluations == 3


def incident(pred: str) -> Incident:
    return Incident(predicate=pred, severity=inv.severity(pred), refapp="r", engine="e", arch="amd64", cell="c",
                    first_seen="2026-01-01T00:00:00Z", dossier="d")


def test_cell_status_rules():
    passed = {"I-RFC-1": PropertyResult(status="passed", evaluations=3)}
    assert cell_status(passed, [], "") == ("ok", "")
    assert cell_status(passed, [incident("I-HANG")], "")[0] == "failed"
    assert cell_status({"I-ADV-HANG": PropertyResult(status="failed")}, [], "")[0] == "ok"  # MED
    nothing = {"I-RFC-1": PropertyResult(status="not_judged"), "I-HANG": PropertyResult(status="passed")}
    assert cell_status(nothing, [], "")[0] == "failed"  # measured nothing
    assert cell_status(passed, [], "internal error while driving the cell: X")[0] == "not_run"
    # Interrupted mid-run: the status of what was judged, never not_run once traffic was sent.
    st, why = cell_status(nothing, [], "", interrupted=True, traffic_sent=True)
    assert st == "ok" and why.endswith("interrupted")
    assert cell_status(nothing, [incident("I-DRV-1")], "", interrupted=True)[0] == "failed"


def test_provisional_status_of_a_running_cell():
    c = Cell(refapp="r", engine="e", arch="amd64", status="not_run")
    assert provisional_status(c)[0] == "not_run"
    c.tier_1["requests_sent"] = 10
    assert provisional_status(c)[0] == "ok"
    c.incidents = [incident("I-RFC-1")]
    assert provisional_status(c)[0] == "failed"


def test_walker_split_follows_the_registry():
    assert set(allocate_walkers(9, None)) == {"markov", "adversarial"}  # h2c joins at C = 10
    alloc = allocate_walkers(24, None)
    assert set(alloc) == set(SLICES) and sum(alloc.values()) == 24
    assert alloc["markov"] > alloc["adversarial"] > alloc["h2c"] >= alloc["ws"]
    assert allocate_walkers(2, ["ws", "sse"]) == {"ws": 1, "sse": 1}
    with pytest.raises(UsageError, match="unknown slice"):
        allocate_walkers(4, ["nope"])


def test_schedule_owns_budgets_and_phases():
    assert cell_budget(600, 40) == 15
    short = schedule_cell(30, 8, None, {1: 0.6})
    assert short.budget(1) == 30 and not short.judges_leaks and short.leak_settle_s == 0
    long = schedule_cell(LEAK_MIN_CELL_S + 5, 8, None, {1: 0.6, 2: 0.2})
    assert long.judges_leaks and long.leak_settle_s > 0 and [p.name for p in long.phases] == ["traffic", "settle"]
    assert abs(long.budget(1) - 0.75 * long.cell_budget_s) < 1e-9 and long.budget(1) > long.budget(2)


def test_tiers_registry():
    assert parse_tiers(None, slices_given=True) == [1]  # --slices alone means --tiers 1
    assert parse_tiers(None, slices_given=False) is None
    with pytest.raises(UsageError, match="unknown tier"):
        parse_tiers("4", False)
    chosen, skipped = choose_tiers(None, None)
    assert [t.number for t in chosen] == [1] and skipped[2] == "no OpenAPI document"
    assert "key/value" in skipped[3]  # Tier 3 is built; without the key/value contract it says why
    chosen, _ = choose_tiers(None, ROOT / "tests" / "servers" / "restserver.openapi.yaml")
    assert [t.number for t in chosen] == [1, 2, 3]  # Tier 3 writes through its producers (POST /items)
    _, skipped = choose_tiers(None, ROOT / "tests" / "servers" / "h1server.openapi.yaml")
    assert "key/value" in skipped[3] and "producer" in skipped[3]
    chosen, _ = choose_tiers([2], None, {2: {"discover": True}})  # probatorium fuzz: GET /openapi.json first
    assert [t.number for t in chosen] == [2]
    spec = ROOT / "tests" / "servers" / "kvserver.openapi.yaml"
    assert [t.number for t in choose_tiers(None, spec)[0]] == [1, 2, 3]


def test_docs_invariants_md_is_current():
    assert (ROOT / "docs" / "invariants.md").read_text() == inv.markdown(), \
        "docs/invariants.md is stale: run `probatorium invariants --markdown > docs/invariants.md`"


# --- refapp self-check properties: the debug endpoint's self_checks counts (docs/contracts.md) ---

SELF_CHECKED = ("I-MW-SESSION", "I-MW-RATELIMIT", "I-MW-JWT", "I-MW-CSRF", "I-OBS-2", "I-MW-XFF")


@pytest.mark.parametrize("pred", SELF_CHECKED)
def test_self_check_judges(pred):
    listed = Observed(evidence={"self_checks": {pred: 1234}})
    res = CATALOGUE[pred].decide(listed)
    assert (res.status, res.evaluations) == ("passed", 1234)
    zero = CATALOGUE[pred].decide(Observed(evidence={"self_checks": {pred: 0}}))
    assert zero.status == "not_judged" and f"0 self-checks of {pred}" in zero.reason
    assert CATALOGUE[pred].decide(Observed(evidence={"self_checks": {"I-OTHER": 5}})) is None  # does not apply
    assert CATALOGUE[pred].decide(Observed()) is None  # no contract at all
    # an x-invariant incident still fails it, keeping the count
    props = judge_cell(listed, {pred: "500 x-invariant"})
    assert (props[pred].status, props[pred].evaluations) == ("failed", 1234)
    props = judge_cell(Observed(evidence={"self_checks": {pred: 0}}), {pred: "500 x-invariant"})
    assert props[pred].status == "failed"


def test_obs1_self_checks_do_not_add_to_the_scrapes():
    scraped = {"comparisons": 40, "violations": 0, "absent_reason": ""}
    res = CATALOGUE["I-OBS-1"].decide(Observed(evidence={"metrics": scraped, "self_checks": {"I-OBS-1": 900}}))
    assert (res.status, res.evaluations) == ("passed", 40) and "900 self-check" in res.reason
    # without /metrics the target's own check is the evidence
    own = CATALOGUE["I-OBS-1"].decide(Observed(evidence={"self_checks": {"I-OBS-1": 900}}))
    assert (own.status, own.evaluations) == ("passed", 900)
    assert CATALOGUE["I-OBS-1"].decide(Observed()) is None
