"""Tier 3 plans: a pure function of (seed, profile); byte-identical JSON; each kind's workload bites."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.faults import FAULT_KINDS, FaultSpec
from probatorium.validate.tier3 import corpus
from probatorium.validate.tier3.plan import DURATION_MS, Plan
from probatorium.validate.tier3.profile import KeyRule, TargetProfile, build_profile
from probatorium.validate.tier3.session import static_kinds

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "tests" / "servers" / "kvserver.openapi.yaml"


def profile(*kinds: str, durable: bool = True) -> TargetProfile:
    return build_profile(SPEC, kinds or FAULT_KINDS, durable=durable, services=("redis",),
                         durable_services=("redis",))


def test_same_seed_same_bytes_in_another_process():
    p = profile()
    here = Plan.from_seed(0xDEADBEEF, p).to_json()
    assert here == Plan.from_seed(0xDEADBEEF, p).to_json()
    code = ("import sys; from pathlib import Path; from probatorium.validate.tier3.plan import Plan;"
            "from probatorium.validate.tier3.profile import build_profile; from probatorium.faults import FAULT_KINDS;"
            f"p = build_profile(Path({str(SPEC)!r}), FAULT_KINDS, durable=True, services=('redis',), "
            "durable_services=('redis',)); sys.stdout.write(Plan.from_seed(0xDEADBEEF, p).to_json())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": str(REPO / "src"), "PYTHONHASHSEED": "123"}).stdout
    assert other == here
    assert Plan.from_seed(0xDEADBEF0, p).to_json() != here


def test_json_round_trip_and_digest():
    plan = Plan.from_seed(7, profile())
    again = Plan.from_json(plan.to_json(indent=2))
    assert again == plan and again.digest() == plan.digest()
    assert re.fullmatch(r"[0-9a-f]{64}", plan.digest())
    with pytest.raises(UsageError):
        Plan.from_json('{"version": 99}')


def test_profile_never_holds_duration_or_concurrency():
    assert set(profile().as_dict()) == {"kv_path", "key", "faults", "durable", "services", "durable_services"}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_faults_flag_draws_only_those_kinds(kind):
    p = profile(kind)
    for seed in range(20):
        plan = Plan.from_seed(seed, p)
        assert plan.kinds() and set(plan.kinds()) == {kind}
        for f in plan.faults:
            spec = FaultSpec.from_dict(f)  # the fault package accepts every drawn fault
            lo, hi = DURATION_MS[kind]
            assert lo / 1000 <= spec.duration_s <= hi / 1000


def _bite(kind: str, seed: int):
    plan = Plan.from_seed(seed, profile(kind))
    phase = next(p for p in plan.phases if p.fault is not None)
    return plan, phase, [s for s in plan.steps if s.phase == phase.index]


@pytest.mark.parametrize("seed", range(10))
def test_each_kind_bites(seed):
    _, _, steps = _bite("target-kill", seed)  # writes just before the kill
    assert any(s.op == "put" and -150 <= s.at_ms < 0 for s in steps)
    _, _, steps = _bite("target-term", seed)  # a body still arriving >= 100 ms before and after SIGTERM
    assert any(s.op == "put" and s.split_ms and s.at_ms <= -100 and s.at_ms + s.split_ms > 0 for s in steps)
    _, phase, steps = _bite("fd-squeeze", seed)  # more connections than the headroom
    holds = [s for s in steps if s.op == "hold"]
    assert len({s.conn for s in holds}) > phase.fault["params"]["headroom"]
    _, phase, steps = _bite("target-stop", seed)  # requests while stopped
    assert any(0 < s.at_ms < phase.fault["duration_s"] * 1000 for s in steps)


def test_reads_after_recovery_and_one_owner_per_key():
    plan = Plan.from_seed(11, profile())
    last = plan.phases[-1]
    assert last.fault is None and last.lead_ms == 0  # the runner reads again after the grace (runner.reread)
    mutated = {s.key for s in plan.steps if s.op in ("put", "delete")}
    assert {s.key for s in plan.steps if s.op == "verify"} == mutated
    owners: dict[int, set[int]] = {}
    for s in plan.steps:
        if s.op in ("put", "delete"):
            owners.setdefault(s.key, set()).add(s.conn)
    assert all(len(c) == 1 for c in owners.values())
    writes = [(s.key, s.write) for s in plan.steps if s.op == "put"]
    assert len(writes) == len(set(writes))  # unique values


def test_keys_follow_the_schema():
    digits = KeyRule.from_schema({"pattern": "^[0-9]{1,40}$", "maxLength": 40})
    key = digits.render(0xFFFFFFFF, 0xFFFF, 17)
    assert key.isdigit() and len(key) <= 40
    assert digits.render(1, 2, 3) != digits.render(1, 3, 3) != digits.render(2, 2, 3)
    with pytest.raises(UsageError):
        KeyRule.from_schema({"maxLength": 4})
    padded = KeyRule.from_schema({"minLength": 30})
    assert len(padded.render(0, 0, 1)) == 30


def test_service_faults_need_a_service():
    with pytest.raises(UsageError):
        Plan.from_seed(1, build_profile(SPEC, ("service-kill",), durable=False))


def test_no_kv_contract_is_a_reason():
    with pytest.raises(UsageError, match="key/value"):
        build_profile(REPO / "tests" / "servers" / "h1server.openapi.yaml", ("target-kill",), durable=False)


def test_corpus_first_n_and_index_computed_from_the_plans():
    assert corpus.parse_seeds("3") == corpus.first(3) == [corpus.seed_at(i) for i in range(3)]
    assert corpus.parse_seeds("0xa,0xB") == [10, 11]
    with pytest.raises(UsageError):
        corpus.parse_seeds("50001")
    for row in corpus.rows(offset=0, limit=150):
        plan = Plan.from_seed(int(row["seed"], 16), corpus.REFERENCE)
        assert row["faults"] == len(plan.kinds()) and row["kinds"] == [k for k in FAULT_KINDS if k in plan.kinds()]
    st = corpus.stats()
    assert st["size"] == corpus.SIZE == 50_000
    assert all(n > 0 for n in st["plans_with_kind"].values())


def test_static_kinds_follow_the_injector_rules():
    assert "net-netem" not in static_kinds(None, local_process=True, services=())
    assert "service-kill" not in static_kinds(None, local_process=True, services=())
    assert "target-kill" not in static_kinds(None, local_process=False, services=("redis",))
    assert static_kinds(("target-kill",), local_process=True, services=()) == ("target-kill",)
