"""End-to-end: a team's app on uvicorn, its engine's known parser findings accepted by a baseline
(issue 14 items 3 and 4). `--baseline-update` writes the baseline, the same run with `--baseline`
exits 0 with every finding marked accepted, and the same app with a planted application bug
(tests/apps/echo_app.py, ECHO_APP_BUG=first-message-only) exits 1 naming only the new finding.
Three 12 s adversarial cells: each covers the whole catalogue (a 10 s cell made about 1.5 rounds of its 162 cases here),
so the baseline run and the runs judged against it see the same cases."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from e2e_helpers import load_doc, run_cli

pytestmark = pytest.mark.e2e


def _run(tmp_path, name: str, *flags: str):
    out = tmp_path / name
    res = run_cli(["validate", "--app", "tests.apps.echo_app:app", "--app-dir", ".", "--engine", "uvicorn",
                   "--slices", "adversarial", "--duration", "12s", "--seed", "0x5eed", "--out", str(out), *flags],
                  timeout=90)
    return res, load_doc(out)


def test_baseline_accepts_known_findings_and_fails_on_a_new_one(tmp_path, monkeypatch):
    monkeypatch.delenv("ECHO_APP_BUG", raising=False)
    bl = tmp_path / "baseline.yaml"
    res, doc = _run(tmp_path, "update", "--baseline", str(bl), "--baseline-update")
    assert res.returncode == 1, res.stderr[-2000:]  # the update applies from the next run on
    entries = yaml.safe_load(bl.read_text())["accepted"]
    known = {(e["predicate"], e["case"]) for e in entries}
    assert entries and all(e["engine"] == "uvicorn" and e["reason"].startswith("accepted by --baseline-update")
                           for e in entries)
    assert {(i["predicate"], i["case"]) for i in doc["incidents"] if i["severity"] == "HIGH"} <= known

    junit = tmp_path / "run.xml"
    res, doc = _run(tmp_path, "accepted", "--baseline", str(bl), "--json", "--junit", str(junit))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["exit_code"] == 0 and summary["baseline"]["stale"] == [] and summary["cells"][0]["high"] == []
    highs = [i for i in doc["incidents"] if i["severity"] == "HIGH"]
    assert highs and all(i["accepted"] for i in highs)  # still recorded and shown, marked accepted
    assert doc["validation_results"]["cells"][0]["status"] == "ok"
    case = ET.parse(junit).getroot().find("testsuite/testcase[@name='I-ADV-ACCEPTED']")
    assert case.find("failure") is None and "accepted by the baseline" in case.find("skipped").get("message")

    monkeypatch.setenv("ECHO_APP_BUG", "first-message-only")
    res, doc = _run(tmp_path, "planted", "--baseline", str(bl))
    assert res.returncode == 1, res.stderr[-2000:]
    new = [(i["predicate"], i["case"]) for i in doc["incidents"] if i["severity"] == "HIGH" and not i["accepted"]]
    assert new and all(case not in {c for _, c in known} for _, case in new), new
    # The planted bug truncates request bodies: every new finding is a body the application did not
    # receive whole (which body-carrying cases a 5 s cell reaches depends on the machine's speed).
    details = {i["case"]: i["detail"] for i in doc["incidents"] if i["severity"] == "HIGH" and not i["accepted"]}
    assert all(p == "I-ADV-ACCEPTED" and "body" in details[c] for p, c in new), details
    named = [ln for ln in res.stdout.splitlines() if "new HIGH finding" in ln]
    assert len(named) == len(new) and all(case in " ".join(named) for _, case in new)
