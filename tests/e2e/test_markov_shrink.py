"""End to end: a planted state-dependent bug found by the Markov slice is shrunk to its three
steps (create, archive, update) among the walk's noise, and the repro.py reproduces it against a
freshly started server (`probatorium repro-check`); a plain 5xx the walk gets is an I-API-5XX
incident without Tier 2."""

from __future__ import annotations

import json
import subprocess
import sys

from e2e_helpers import REPO, load_doc, run_cli

from probatorium.targets.launcher import TargetSpec, start_target

PLANTED = "tests/validate/markov/planted"


def test_planted_bug_is_shrunk_and_reproduced_on_a_fresh_server(tmp_path):
    out = tmp_path / "run"
    # The seeded walk hits the bug within its first second and the shrink takes milliseconds (its own
    # bound is at least 5 s whatever the cell has left): a 6 s cell holds both (it was 20 s).
    res = run_cli(["validate", "--app", "planted_app:app", "--app-dir", PLANTED, "--spec", f"{PLANTED}/openapi.yaml",
                   "--markov", f"{PLANTED}/markov.yaml", "--slices", "markov", "--duration", "6s",
                   "--concurrency", "2", "--seed", "0x5eed", "--out", str(out)], timeout=90)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    cell = load_doc(out)["validation_results"]["cells"][0]
    incidents = [i for i in cell["incidents"] if i["predicate"] == "I-TEST-ARCHIVED"]
    assert len(incidents) == 1, cell["incidents"]
    dossier = out / incidents[0]["dossier"]
    rep = json.loads((dossier / "incident.json").read_text())["reproducer"]
    assert rep["reproduced"] and rep["shrink"].startswith("complete"), rep
    assert [s["op"] for s in rep["sequence"]] == ["POST /items", "POST /items/{id}/archive", "PUT /items/{id}"]
    assert rep["length_after"] == 3 < rep["length_before"] and rep["replays"] <= 50 and rep["seconds"] <= 20
    assert rep["walker_seed"].startswith("0x")
    assert cell["tier_1"]["markov"]["shrinks"] == 1

    # repro-check starts the same app again (fresh ids, fresh users) and runs every repro.py.
    check = run_cli(["repro-check", str(out)], timeout=60)
    assert check.returncode == 0 and "1/1 reproduced" in check.stdout, check.stdout + check.stderr[-2000:]

    # Against a stopped target, the reproducer says so (exit 2: unreachable).
    dead = subprocess.run([sys.executable, str(dossier / "repro.py"), "127.0.0.1:9"], capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert dead.returncode == 2 and dead.stdout.strip().splitlines()[-1].startswith("UNREACHABLE"), \
        dead.stdout + dead.stderr


PANIC_MARKOV = """\
login: POST /login
start: me
states:
  me:
    request: GET /me
    catalog: 3.0
    panic: 0.5
  catalog:
    request: GET /api/catalog
    me: 1.0
    panic: 0.5
  panic:
    request: GET /panic
    me: 1.0
"""


def test_markov_5xx_is_an_api_5xx_incident_without_tier_2(tmp_path):
    """kitchen_sink's real GET /panic (a declared 500, still a finding) walked by Markov alone
    (--slices markov: Tier 2 does not run) fails I-API-5XX from Markov evidence, with one shrunk
    incident whose repro.py reproduces under a bare interpreter (-I -S: no probatorium)."""
    (tmp_path / "markov.yaml").write_text(PANIC_MARKOV)
    out = tmp_path / "run"
    res = run_cli(["validate", "--refapp", "kitchen_sink", "--engine", "uvicorn", "--markov",
                   str(tmp_path / "markov.yaml"), "--slices", "markov", "--duration", "3s", "--concurrency", "2",
                   "--seed", "7", "--out", str(out)], timeout=60)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    cell = load_doc(out)["validation_results"]["cells"][0]
    assert not cell["tier_2"], cell["tier_2"]
    prop = cell["properties"]["I-API-5XX"]
    markov = cell["tier_1"]["markov"]
    assert prop["status"] == "failed" and prop["reason"].startswith("evidence: markov ("), prop
    assert markov["api5xx_findings"] == markov["5xx"] > 0 and markov["api5xx_checked"] == markov["requests"], markov
    incidents = [i for i in cell["incidents"] if i["predicate"] == "I-API-5XX"]
    assert [i["case"] for i in incidents] == ["markov GET /panic 500"], cell["incidents"]
    assert incidents[0]["severity"] == "HIGH" and "seed 0x" in incidents[0]["detail"]
    dossier = out / incidents[0]["dossier"]
    doc = json.loads((dossier / "incident.json").read_text())
    assert doc["operation"] == "GET /panic" and doc["status"] == 500 and doc["seed"]
    assert doc["reproducer"]["reproduced"] and [s["op"] for s in doc["reproducer"]["sequence"]] == ["GET /panic"]

    target = start_target(TargetSpec(kind="refapp", refapp="kitchen_sink", engine="uvicorn"), tmp_path / "fresh")
    try:
        rep = subprocess.run([sys.executable, "-I", "-S", str(dossier / "repro.py"), f"{target.host}:{target.port}"],
                             capture_output=True, text=True, timeout=30, cwd=tmp_path)
    finally:
        target.stop()
    assert rep.returncode == 1 and rep.stdout.strip().endswith("REPRODUCED"), rep.stdout[-2000:] + rep.stderr
