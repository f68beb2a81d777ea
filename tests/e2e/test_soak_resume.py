"""End-to-end: a soak SIGKILLed at 40 % and resumed finishes with the combined duration and
every incident once (issue 13's done-when line), against the strict test server with a planted
smuggling bug (te-cl-prefer-cl: HIGH I-ADV-* incidents within seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime

from e2e_helpers import CLI, REPO, h1cmd, run_cli

DURATION, EVERY = 20.0, 8.0


def _dossiers_on_disk(soak_dir):
    return sorted(p.parent.relative_to(soak_dir).as_posix()
                  for p in soak_dir.glob("round-*/cell-*/incidents/*/incident.json"))


def test_soak_killed_at_40_percent_resumes_to_the_combined_duration(tmp_path):
    soak_dir = tmp_path / "soak"
    args = ["soak", "-d", f"{DURATION:g}s", "--checkpoint-every", f"{EVERY:g}s", "--out", str(soak_dir),
            "--seed", "0x5eed", "--cmd", h1cmd("te-cl-prefer-cl"), "--slices", "adversarial", "-c", "2"]
    proc = subprocess.Popen(CLI + args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    t0 = time.monotonic()
    try:
        # 40 % of the soak, and at least one incident on disk to lose or duplicate; bounded
        while time.monotonic() - t0 < 40:
            if time.monotonic() - t0 >= 0.4 * DURATION and _dossiers_on_disk(soak_dir):
                break
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.2)
    finally:
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)  # the soak, its validate round and (PDEATHSIG) the server
        proc.wait(timeout=10)
        proc.stderr.close()
    before = _dossiers_on_disk(soak_dir)
    assert before, "no incident before the kill"
    killed = json.loads((soak_dir / "soak.json").read_text())
    assert [r["status"] for r in killed["rounds"]] == ["running"]
    ran = killed_at - datetime.fromisoformat(killed["rounds"][0]["started_at"].replace("Z", "+00:00")).timestamp()

    res = run_cli(["soak", "--resume", str(soak_dir), "--json"], timeout=120)
    assert res.returncode == 1, res.stderr[-3000:]  # the planted bug's HIGH incidents fail the gate
    assert "round 1 was killed" in res.stderr
    summary = json.loads(res.stdout)
    state = json.loads((soak_dir / "soak.json").read_text())
    rounds = state["rounds"]
    assert state["finished"] and rounds[0]["status"] == "killed" and len(rounds) >= 2
    assert all(r["status"] == "done" for r in rounds[1:])
    assert [r["index"] for r in rounds] == list(range(1, len(rounds) + 1))
    spent = 0.0
    for r in rounds:  # contiguous in soak time: each round starts where the ones before ended
        assert abs(r["soak_offset_s"] - spent) < 0.01
        spent += r["seconds"]
    # the killed round's time counts up to its last heartbeat (1 s) or checkpoint
    assert ran - 1.5 <= rounds[0]["seconds"] <= ran + 0.1, (ran, rounds[0])
    assert abs(spent - DURATION) <= 6.0, rounds
    assert summary["spent_s"] == state["spent_s"] and abs(state["spent_s"] - spent) < 0.01

    doc = json.loads((soak_dir / "validate-results.json").read_text())
    dossiers = [i["dossier"] for i in doc["incidents"]]
    assert len(dossiers) == len(set(dossiers)), "an incident counted twice"
    assert sorted(dossiers) == _dossiers_on_disk(soak_dir), "an incident lost"
    assert set(before) <= set(dossiers)
    assert {c["folder"].split("/")[0] for c in doc["validation_results"]["cells"]} == {r["folder"] for r in rounds}
    assert summary["incidents"] == len(dossiers) and summary["hourly"][0]["incidents"]["HIGH"] >= 1
    assert summary["requests"] > 0 and summary["hourly"][0]["requests"] == summary["requests"]
