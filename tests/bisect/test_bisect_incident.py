"""--from-run RUN_DIR --incident ID: which dossier, and which target its cell served (pure file reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probatorium.bisect.incident import find_incident
from probatorium.errors import UsageError

CELL = "cell-01-echoapp_app-uvicorn-h11"


def make_run(root: Path, target: dict, dossiers: dict[str, bool]) -> Path:
    (root / CELL / "incidents").mkdir(parents=True)
    (root / "validate-results.json").write_text("{}")
    doc = {"validation_results": {"cells": [{"folder": CELL, "target": target}]}}
    (root / CELL / "validate-results.json").write_text(json.dumps(doc))
    for name, has_repro in dossiers.items():
        d = root / CELL / "incidents" / name
        d.mkdir()
        (d / "incident.json").write_text(json.dumps({"predicate": name.split("-", 2)[2].rsplit("-", 1)[0]}))
        if has_repro:
            (d / "repro.py").write_text("raise SystemExit(1)\n")
    return root


APP = {"kind": "app", "engine": "uvicorn-h11", "refapp": None, "app": "echoapp:app", "app_dir": "/srv/app"}
DOSSIERS = {"T-001-I-ADV-ACCEPTED-te_cl_smuggle": True, "T-002-I-ADV-ACCEPTED-chunk_data_missing_crlf": True,
            "T-003-I-HANG-x": False}


def test_finds_the_dossier_by_a_unique_part_and_the_cells_target(tmp_path):
    found = find_incident(make_run(tmp_path, APP, DOSSIERS), "chunk_data_missing_crlf")
    assert found.dossier.name == "T-002-I-ADV-ACCEPTED-chunk_data_missing_crlf"
    assert (found.predicate, found.engine, found.app, found.app_dir) == ("I-ADV-ACCEPTED", "uvicorn-h11",
                                                                         "echoapp:app", "/srv/app")


@pytest.mark.parametrize("target, incident, needle", [
    (APP, "I-ADV-ACCEPTED", "matches several incidents"),
    (APP, "nothing-like-it", "matches no incident"),
    (APP, "T-003", "has no repro.py"),
    ({"kind": "cmd", "engine": "cmd"}, "001", "was found on a cmd target"),
])
def test_bad_incident_is_one_usage_line(tmp_path, target, incident, needle):
    run = make_run(tmp_path, target, DOSSIERS)
    with pytest.raises(UsageError) as e:
        find_incident(run, incident)
    assert needle in str(e.value)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(UsageError, match="not a run folder"):
        find_incident(tmp_path, "001")
