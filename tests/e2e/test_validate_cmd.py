"""End-to-end: `probatorium validate --cmd` against the strict test server and planted bugs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probatorium.results.store import load_document

from e2e_helpers import H1SERVER, h1cmd, load_doc, run_cli


def _validate(tmp_path, cmd: str, seconds: int = 8, extra: list[str] | None = None):
    out = tmp_path / "run"
    res = run_cli(["validate", "--cmd", cmd, "--slices", "adversarial", "--duration", f"{seconds}s",
                   "--concurrency", "4", "--quiet-timeout", "2", "--out", str(out), *(extra or [])])
    return res, out


def test_strict_server_has_no_high_finding(tmp_path):
    res, out = _validate(tmp_path, h1cmd())
    doc = load_doc(out)
    load_document(out)  # validates against the schema models
    cell = doc["validation_results"]["cells"][0]
    highs = [i for i in doc["incidents"] if i["severity"] == "HIGH"]
    assert highs == [], highs
    assert res.returncode == 0, res.stderr[-2000:]
    assert cell["status"] == "ok"
    assert cell["tier_1"]["adversarial"]["adv_sent"] >= 60
    assert cell["properties"]["I-ADV-ACCEPTED"] == {
        "status": "passed", "evaluations": cell["tier_1"]["adversarial"]["adv_sent"], "reason": ""}
    assert doc["partial"] is False and doc["schema_version"] == "5.1"
    tally = json.loads((out / cell["folder"] / "tier1_tally.json").read_text())
    assert len(tally["adversarial"]["cases"]) >= 60


@pytest.mark.parametrize("bug,predicate", [
    ("space-before-colon", "I-ADV-ACCEPTED"),
    ("te-cl-prefer-cl", "I-ADV-ACCEPTED"),
    ("chunk-size-lenient", "I-ADV-ACCEPTED"),
    ("keepalive-after-close", "I-ADV-ACCEPTED"),
    ("head-body", "I-RFC-1"),
    ("resp-header-crlf", "I-RFC-2"),
])
def test_planted_bug_is_caught(tmp_path, bug, predicate):
    res, out = _validate(tmp_path, h1cmd(bug))
    doc = load_doc(out)
    preds = {i["predicate"] for i in doc["incidents"] if i["severity"] == "HIGH"}
    assert predicate in preds, (preds, res.stderr[-1500:])
    assert res.returncode == 1
    inc = next(i for i in doc["incidents"] if i["predicate"] == predicate)
    dossier = out / inc["dossier"]
    for name in ("incident.json", "forensics_status.txt", "repro.py", "sent.bin", "received.bin"):
        assert (dossier / name).is_file(), name


def test_repro_reproduces_against_a_live_server(tmp_path):
    res, out = _validate(tmp_path, h1cmd("te-cl-prefer-cl"), seconds=5)
    doc = load_doc(out)
    inc = next(i for i in doc["incidents"] if i["predicate"] == "I-ADV-ACCEPTED")
    repro = out / inc["dossier"] / "repro.py"
    for bugs, expect_code in (((" --bug", "te-cl-prefer-cl"), 1), ((), 0)):
        server = subprocess.Popen([sys.executable, str(H1SERVER), "--port", "0", *[b.strip() for b in bugs]],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            addr = line.strip().split("=", 1)[1]
            # a bare system python3: the reproducer must stand alone (no probatorium, no site-packages)
            python3 = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
            r = subprocess.run([python3, "-I", "-S", str(repro), addr], capture_output=True, text=True, timeout=30)
            assert r.returncode == expect_code, r.stdout + r.stderr
            assert ("REPRODUCED" if expect_code else "NOT REPRODUCED") in r.stdout
        finally:
            server.terminate()
            server.wait(5)


def test_target_that_never_starts_is_not_run(tmp_path):
    res, out = _validate(tmp_path, f"{sys.executable} -c 'import sys; sys.exit(3)'", seconds=3)
    assert res.returncode == 2
    doc = load_doc(out)
    cell = doc["validation_results"]["cells"][0]
    assert cell["status"] == "not_run" and cell["reason"]
    assert "Traceback" not in res.stderr


def test_bad_flags_give_one_line_and_exit_2(tmp_path):
    for args in (["--engine", "nope"], ["--duration", "ten"], ["--slices", "bogus"],
                 ["--cmd", "x", "--url", "http://127.0.0.1:1/"], ["--url", "http://10.1.2.3:80/"]):
        res = run_cli(["validate", "--out", str(tmp_path / "x"), *args], timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        assert "Traceback" not in res.stderr
        assert "error" in res.stderr.lower()


def test_sigint_leaves_a_partial_document(tmp_path):
    import os
    import signal

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "probatorium.cli", "validate", "--cmd", h1cmd(),
                             "--duration", "60s", "--concurrency", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (out / "validate-results.json").exists():
            time.sleep(0.2)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    doc = load_doc(out)
    assert doc["partial"] is True
    assert proc.returncode == 2
    load_document(out)


def test_missing_service_makes_cells_not_run(tmp_path):
    import os

    out = tmp_path / "run"
    env_bin = os.environ.get("PROBATORIUM_SERVICE_BIN_DIRS")
    os.environ["PROBATORIUM_SERVICE_BIN_DIRS"] = str(tmp_path / "no-binaries-here")
    try:
        res = run_cli(["validate", "--app", "echo_app:app", "--app-dir", "tests/apps", "--services", "redis",
                       "--duration", "3s", "--out", str(out)], timeout=60)
    finally:
        if env_bin is None:
            os.environ.pop("PROBATORIUM_SERVICE_BIN_DIRS")
        else:
            os.environ["PROBATORIUM_SERVICE_BIN_DIRS"] = env_bin
    assert res.returncode == 2, res.stderr[-2000:]
    cell = load_doc(out)["validation_results"]["cells"][0]
    assert cell["status"] == "not_run" and "redis-server" in cell["reason"]
    assert "Traceback" not in res.stderr


def test_spec_path_that_kills_the_process_is_I_LIVENESS(tmp_path):
    out = tmp_path / "run"
    res = run_cli(["validate", "--cmd", h1cmd("crash-path"), "--spec", "tests/servers/h1server.openapi.yaml",
                   "--slices", "markov", "--duration", "8s", "--concurrency", "3", "--out", str(out)], timeout=120)
    doc = load_doc(out)
    assert "I-LIVENESS" in {i["predicate"] for i in doc["incidents"]}, res.stderr[-2000:]
    assert res.returncode == 1
