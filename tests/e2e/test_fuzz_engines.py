"""`probatorium fuzz --refapp` on real ASGI engines: kitchen_sink's `GET /panic` 500 is found as
I-API-5XX with a dossier, and `--replay` of it against a fresh target on the same engine reproduces."""

from __future__ import annotations

import pytest

from e2e_helpers import load_doc, run_cli

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("engine", ["uvicorn", "hypercorn"])
def test_fuzz_refapp_on_an_engine_finds_and_replays(tmp_path, engine):
    out = tmp_path / "run"
    res = run_cli(["fuzz", "--refapp", "kitchen_sink", "--engine", engine, "--duration", "8s", "--seed", "3",
                   "--mode", "lean", "--out", str(out)], timeout=120)
    assert res.returncode == 1, res.stderr[-3000:]
    doc = load_doc(out)
    cell = doc["validation_results"]["cells"][0]
    assert cell["engine"] == engine and cell["folder"].endswith(f"-kitchen_sink-{engine}")
    t2 = cell["tier_2"]
    assert t2["operations_reached"] == t2["operations_total"] > 20 and t2["operations_covered"] > 20
    panic = [i for i in doc["incidents"] if i["predicate"] == "I-API-5XX" and "panic" in i["dossier"]]
    assert panic and panic[0]["severity"] == "HIGH", [i["dossier"] for i in doc["incidents"]]
    rep = run_cli(["fuzz", "--refapp", "kitchen_sink", "--engine", engine, "--replay", str(out / panic[0]["dossier"])],
                  timeout=90)
    assert rep.returncode == 1 and "REPRODUCED" in rep.stdout, rep.stdout[-2000:] + rep.stderr[-2000:]
