"""End to end: a planted state-dependent bug found by the Markov slice is shrunk to its three
steps (create, archive, update) among the walk's noise, and the repro.py reproduces it against a
freshly started server (`probatorium repro-check`)."""

from __future__ import annotations

import json
import subprocess
import sys

from e2e_helpers import REPO, load_doc, run_cli

PLANTED = "tests/validate/markov/planted"


def test_planted_bug_is_shrunk_and_reproduced_on_a_fresh_server(tmp_path):
    out = tmp_path / "run"
    res = run_cli(["validate", "--app", "planted_app:app", "--app-dir", PLANTED, "--spec", f"{PLANTED}/openapi.yaml",
                   "--markov", f"{PLANTED}/markov.yaml", "--slices", "markov", "--duration", "20s",
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
