"""End-to-end: a spec path that kills the process gets an I-LIVENESS reproducer naming that request,
and `probatorium repro-check` reproduces it against a fresh target."""

from __future__ import annotations

import json

from e2e_helpers import h1cmd, load_doc, run_cli


def test_crash_path_is_attributed_confirmed_and_reproduced(tmp_path):
    out = tmp_path / "run"
    # The walkers reach GET /chunked at once: the deaths, their narrowing and the confirming replay are
    # over within ~6 s (the three restarts are then spent and the cell only waits out its budget), so
    # 15 s holds them with room to spare (it was 30 s).
    res = run_cli(["validate", "--cmd", h1cmd("crash-path"), "--spec", "tests/servers/h1server.openapi.yaml",
                   "--slices", "markov,adversarial", "--duration", "15s", "--out", str(out)], timeout=150)
    assert res.returncode == 1, res.stderr[-2000:]
    doc = load_doc(out)
    liveness = [i for i in doc["incidents"] if i["predicate"] == "I-LIVENESS"]
    # One incident per cell: the deaths are attributed there, not to whichever case was on the wire.
    assert len(liveness) == 1, liveness
    inc = liveness[0]
    assert inc["reproducer"].startswith(f"python3 {inc['dossier']}/repro.py  # confirmed: GET /chunked "), inc
    assert "killed by GET /chunked" in inc["detail"]
    dossier = out / inc["dossier"]
    details = json.loads((dossier / "incident.json").read_text())["reproducer"]
    assert details["status"] == "confirmed" and details["request"] == "GET /chunked"
    assert details["replays"][-1] == {**details["replays"][-1], "signature": "GET /chunked", "killed": True}
    assert (dossier / "sent.bin").read_bytes().startswith(b"GET /chunked HTTP/1.1\r\n")
    assert (dossier / "repro.py").is_file()

    check = run_cli(["repro-check", str(out)], timeout=60)
    assert "I-LIVENESS" in check.stdout and "REPRODUCED" in check.stdout, check.stdout + check.stderr
    assert "NOT REPRODUCED" not in check.stdout and "1/1 reproduced" in check.stdout, check.stdout
