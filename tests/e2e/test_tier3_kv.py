"""End-to-end Tier 3: `probatorium validate --tiers 3 --faults KIND --seeds 2|3` against the planted
key/value servers of tests/servers/kvserver.py exits 1 with the right predicate, `probatorium replay
--seed` of the failing seed reproduces it, and the strict durable server passes every fault kind."""

from __future__ import annotations

import json
import os
import sys

import pytest

from e2e_helpers import REPO, load_doc, run_cli

KVSERVER = REPO / "tests" / "servers" / "kvserver.py"
KVSPEC = REPO / "tests" / "servers" / "kvserver.openapi.yaml"

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _short_shrink(monkeypatch):
    monkeypatch.setenv("PROBATORIUM_TIER3_SHRINK", "2,10")  # the e2e budget; the default is 20 replays, 2 min


# Explicit --seeds run whatever the cell budget, and their cell ends after a few seconds of seeds: a
# budget under the leak judges' 55 s (validate/schedule.py LEAK_MIN_CELL_S) leaves out the 10 s quiet
# settle that only feeds those judges (not_judged on so short a series either way).
NO_SETTLE = ["--duration", "30s"]


def kvcmd(data, *bugs: str) -> str:
    return f"{sys.executable} {KVSERVER} --port {{port}} --data {data}" + "".join(f" --bug {b}" for b in bugs)


CASES = [  # bug, fault kind, predicate, seeds, extra flags
    ("ack-before-durable", "target-kill", "I-T3-LOST-WRITE", 3, ["--durable"]),
    ("drop-on-term", "target-term", "I-T3-DRAIN", 3, ["--durable"]),
    # every plan of these holds the fault and the bug never fails to bite: two seeds prove the same
    # (each failing seed waits out the recovery deadline, then the restart before the next one); the
    # next seed after a wedged target is run once, by the stop case: one seed for fd-squeeze
    ("no-recover-after-stop", "target-stop", "I-T3-NO-RECOVERY", 2, ["--recovery-deadline", "3"]),
    ("accept-dies-on-emfile", "fd-squeeze", "I-T3-NO-RECOVERY", 1, ["--recovery-deadline", "3"]),
    ("5xx", "net-latency", "I-T3-5XX", 3, []),
]


@pytest.mark.parametrize("bug,kind,predicate,seeds,extra", CASES, ids=[c[0] for c in CASES])
def test_planted_bug_found_and_replayed(tmp_path, bug, kind, predicate, seeds, extra):
    cmd = kvcmd(tmp_path / "kv.log", bug)
    out = tmp_path / "run"
    r = run_cli(["validate", "--cmd", cmd, "--spec", str(KVSPEC), "--tiers", "3", "--faults", kind,
                 "--seeds", str(seeds), "--out", str(out), *NO_SETTLE, *extra], timeout=150)
    assert r.returncode == 1, r.stderr[-3000:]
    doc = load_doc(out)
    cell = doc["validation_results"]["cells"][0]
    assert cell["properties"][predicate]["status"] == "failed"
    assert cell["tier_3"]["seeds_attempted"] == seeds and cell["tier_3"]["seeds_failed"] >= 1
    assert cell["tier_3"][f"faults_{kind}"] >= 1
    inc = next(i for i in cell["incidents"] if i["predicate"] == predicate)
    assert inc["seed"].startswith("0x")
    dossier = out / inc["dossier"]
    for name in ("plan.json", "timeline.json", "shrink/minimal-plan.json", "replay.sh"):
        assert (dossier / name).is_file(), name
    tally = json.loads((out / cell["folder"] / "tier3_tally.json").read_text())
    entry = next(s for s in tally["seeds"] if s["seed"] == inc["seed"])
    assert entry["outcome"] == "failed" and predicate in entry["failed"] and entry["timeline"]["requests"]
    rep = run_cli(["replay", "--seed", inc["seed"], "--cmd", kvcmd(tmp_path / "replay.log", bug), "--spec",
                   str(KVSPEC), "--faults", kind, *extra], timeout=90)
    assert rep.returncode == 1, rep.stderr[-3000:]
    assert "reproduced 1 of 1" in rep.stderr and predicate in rep.stderr
    assert f"plan {entry['plan_digest'][:16]}" in rep.stderr  # the same plan, rebuilt from the seed


def test_strict_durable_server_passes_every_fault_kind(tmp_path):
    out = tmp_path / "run"
    r = run_cli(["validate", "--cmd", kvcmd(tmp_path / "kv.log"), "--spec", str(KVSPEC), "--tiers", "3",
                 "--seeds", "4", "--durable", "--out", str(out), *NO_SETTLE], timeout=150)
    doc = load_doc(out)
    cell = doc["validation_results"]["cells"][0]
    assert r.returncode == 0, (cell["reason"], cell["properties"], r.stderr[-3000:])
    t3 = cell["tier_3"]
    assert t3["seeds_attempted"] == 4 and t3["seeds_failed"] == 0 and t3["seeds_errored"] == 0
    assert sum(v for k, v in t3.items() if k.startswith("faults_")) >= 4
    assert not [i for i in cell["incidents"] if i["severity"] == "HIGH"]


def test_replay_dry_run_prints_the_plan(tmp_path):
    args = ["replay", "--seed", "0x1", "--cmd", kvcmd(tmp_path / "kv.log"), "--spec", str(KVSPEC),
            "--faults", "target-kill,net-reset", "--dry-run"]
    a, b = run_cli(args, timeout=30), run_cli(args, timeout=30)
    assert a.returncode == 0 and a.stdout == b.stdout
    plan = json.loads(a.stdout)
    assert {f["fault"]["kind"] for f in plan["phases"] if f["fault"]} <= {"target-kill", "net-reset"}
    assert not os.path.exists(tmp_path / "kv.log")  # nothing was started


@pytest.mark.skipif(not os.path.exists("/usr/bin/redis-server"), reason="no /usr/bin/redis-server")
def test_backend_never_reconnects_found_and_replayed(tmp_path, monkeypatch):
    """The planted 'backend connection never re-established' (kvserver --backend redis, the redis of
    --services redis): service-kill → I-T3-NO-RECOVERY, and the replay reproduces it. One seed, no
    shrink replay: CASES' three seeds take a minute here (docs/detection.md has the 20-seed run)."""
    monkeypatch.setenv("PROBATORIUM_TIER3_SHRINK", "0,1")
    cmd = f"{sys.executable} {KVSERVER} --port {{port}} --backend redis --bug backend-never-reconnects"
    flags = ["--spec", str(KVSPEC), "--faults", "service-kill", "--services", "redis", "--recovery-deadline", "3"]
    out = tmp_path / "run"
    r = run_cli(["validate", "--cmd", cmd, "--tiers", "3", "--seeds", "1", "--out", str(out), *NO_SETTLE, *flags],
                timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]
    cell = load_doc(out)["validation_results"]["cells"][0]
    assert cell["properties"]["I-T3-NO-RECOVERY"]["status"] == "failed"
    assert cell["tier_3"]["faults_service-kill"] == 1
    inc = next(i for i in cell["incidents"] if i["predicate"] == "I-T3-NO-RECOVERY")
    rep = run_cli(["replay", "--seed", inc["seed"], "--cmd", cmd, *flags], timeout=90)
    assert rep.returncode == 1 and "reproduced 1 of 1" in rep.stderr and "I-T3-NO-RECOVERY" in rep.stderr, \
        rep.stderr[-3000:]
    assert "Traceback" not in r.stderr + rep.stderr
