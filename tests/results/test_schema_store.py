"""Schema 5.1 models and the results store: round-trips, atomic writes, layout, history."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.results import (
    Cell,
    Checkpointer,
    Incident,
    PropertyResult,
    ValidateDocument,
    ValidationResults,
    cell_folder_name,
    host_arch_pair,
    load_document,
    newest_matrix_documents,
    normalize_arch,
    run_folder,
    utc_now_iso,
    write_json_atomic,
    write_text_atomic,
)

T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def make_cell(engine: str = "uvicorn", index: int = 1, **kw) -> Cell:
    base = dict(
        refapp="auth_session_ratelimit",
        engine=engine,
        arch="amd64",
        status="ok",
        folder=cell_folder_name(index, "auth_session_ratelimit", engine),
        tier_1={"requests_sent": 10, "adversarial": {"adv_sent": 5, "adv_wrong_accepted": 0}},
        tier_3={"seeds_attempted": 3},
        properties={"I-ADV-ACCEPTED": PropertyResult(status="passed", evaluations=5)},
    )
    base.update(kw)
    return Cell(**base)


def make_doc(pair: str = "hostA-amd64", kind: str = "matrix", cells: list[Cell] | None = None) -> ValidateDocument:
    return ValidateDocument(
        host_arch_pair=pair,
        kind=kind,
        probatorium_version="0.1.0",
        validation_results=ValidationResults(started_at="2024-05-06T07:08:09Z", cells=cells or []),
    )


# --- schema -----------------------------------------------------------------


def test_round_trip_keeps_unknown_fields_everywhere():
    doc = make_doc(cells=[make_cell()]).model_dump(mode="json")
    doc["future_top"] = {"x": 1}
    doc["validation_results"]["future_vr"] = 2
    doc["validation_results"]["cells"][0]["future_cell"] = [1, 2]
    doc["validation_results"]["cells"][0]["properties"]["I-ADV-ACCEPTED"]["future_prop"] = "y"
    doc["incidents"] = [{
        "predicate": "I-ADV-ACCEPTED", "severity": "HIGH", "refapp": "r", "engine": "e", "arch": "amd64",
        "cell": "cell-01-r-e", "first_seen": "2024-05-06T07:08:09Z", "dossier": "cell-01-r-e/incidents/x",
        "case": "", "detail": "", "reproducer": "", "seed": "", "operation": "", "accepted": False,
        "accepted_reason": "",
        "future_inc": True,
    }]
    again = ValidateDocument.model_validate(json.loads(json.dumps(doc))).model_dump(mode="json")
    assert again == doc
    assert again["schema_version"] == "5.1"


def test_schema_rejects_wrong_version_and_bad_enums():
    data = make_doc().model_dump(mode="json")
    with pytest.raises(Exception):
        ValidateDocument.model_validate({**data, "schema_version": "5.0"})
    with pytest.raises(Exception):
        PropertyResult(status="maybe")
    with pytest.raises(Exception):
        Incident(predicate="p", severity="CRIT", refapp="r", engine="e", arch="a", cell="c",
                 first_seen="t", dossier="d")


def test_finalize_back_compat_copies_single_cell_only():
    doc = make_doc(kind="single", cells=[make_cell()]).finalize_back_compat()
    assert doc.validation_results.tier_1["requests_sent"] == 10
    assert doc.validation_results.tier_3 == {"seeds_attempted": 3}
    two = make_doc(cells=[make_cell(), make_cell("hypercorn", 2)]).finalize_back_compat()
    assert two.validation_results.tier_1 == {}


@pytest.mark.parametrize(
    "machine,expected",
    [("x86_64", "amd64"), ("AMD64", "amd64"), ("arm64", "aarch64"), ("aarch64", "aarch64"),
     ("riscv64", "riscv64"), ("", "unknown")],
)
def test_normalize_arch(machine, expected):
    assert normalize_arch(machine) == expected


def test_normalize_arch_default_and_host_pair():
    assert normalize_arch() == normalize_arch(__import__("platform").machine())
    assert host_arch_pair("msa2-server.lan", "x86_64") == "msa2-server-amd64"
    assert host_arch_pair().endswith("-" + normalize_arch())


def test_utc_now_iso_is_utc_z():
    text = utc_now_iso()
    assert text.endswith("Z")
    assert datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None


# --- atomic writes ----------------------------------------------------------


def test_write_json_atomic_model_and_dict_leave_no_temp_files(tmp_path: Path):
    target = tmp_path / "sub" / "doc.json"
    write_json_atomic(target, make_doc())
    assert json.loads(target.read_text())["host_arch_pair"] == "hostA-amd64"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    write_text_atomic(tmp_path / "sub" / "x.txt", "hello\n")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["doc.json", "x.txt"]


def test_write_json_atomic_failure_keeps_old_file_and_no_temp(tmp_path: Path):
    target = tmp_path / "doc.json"
    write_json_atomic(target, {"old": True})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


# --- layout -----------------------------------------------------------------


def test_run_folder_naming_and_collision_suffix(tmp_path: Path):
    root = tmp_path / "results"
    first = run_folder(root, "validate-matrix", "amd64", now=T0)
    second = run_folder(root, "validate-matrix", "amd64", now=T0)
    third = run_folder(root, "validate-matrix", "amd64", now=T0)
    assert first.name == "20240506T070809Z-validate-matrix-amd64"
    assert second.name == first.name + "-2"
    assert third.name == first.name + "-3"
    assert all(p.is_dir() for p in (first, second, third))
    assert run_folder(root, "bench", "v1/2 rc", now=T0).name == "20240506T070809Z-bench-v1_2_rc"
    assert run_folder(root, "validate", "0.1.0", now=T0).name == "20240506T070809Z-validate-0.1.0"
    with pytest.raises(UsageError):
        run_folder(root, "fuzz", "x", now=T0)


def test_run_folder_converts_to_utc(tmp_path: Path):
    from datetime import timedelta

    local = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    assert run_folder(tmp_path, "validate", "v", now=local).name.startswith("20240506T070809Z-")


def test_cell_folder_name():
    assert cell_folder_name(1, "auth_session_ratelimit", "uvicorn") == "cell-01-auth_session_ratelimit-uvicorn"
    assert cell_folder_name(12, "my app", "uvicorn/h11") == "cell-12-my_app-uvicorn_h11"
    with pytest.raises(ValueError):
        cell_folder_name(0, "a", "b")


# --- load_document ----------------------------------------------------------


def _one_line_usage_error(path) -> str:
    with pytest.raises(UsageError) as info:
        load_document(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load_document_file_and_folder(tmp_path: Path):
    write_json_atomic(tmp_path / "validate-results.json", make_doc(cells=[make_cell()]))
    assert load_document(tmp_path).host_arch_pair == "hostA-amd64"
    assert load_document(tmp_path / "validate-results.json").validation_results.cells[0].engine == "uvicorn"


def test_load_document_errors_are_one_line_usage_errors(tmp_path: Path):
    assert "no such results file" in _one_line_usage_error(tmp_path / "missing.json")
    assert "validate-results.json" in _one_line_usage_error(tmp_path)  # empty folder
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  not json")
    message = _one_line_usage_error(bad)
    assert str(bad) in message and "invalid JSON at line 2" in message
    doc = make_doc(cells=[make_cell()]).model_dump(mode="json")
    doc["validation_results"]["cells"][0]["status"] = "exploded"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(doc))
    message = _one_line_usage_error(wrong)
    assert str(wrong) in message and "validation_results.cells.0.status" in message
    wrong.write_text(json.dumps({"schema_version": "5.1"}))
    message = _one_line_usage_error(wrong)
    assert "more errors" in message


# --- checkpointer -----------------------------------------------------------


def test_checkpointer_partial_then_final_and_cell_docs(tmp_path: Path):
    run = run_folder(tmp_path, "validate-matrix", "amd64", now=T0)
    cp = Checkpointer(run, make_doc())
    cp.checkpoint()
    assert load_document(run).partial is True
    inc = Incident(predicate="I-ADV-ACCEPTED", severity="HIGH", refapp="auth_session_ratelimit",
                   engine="uvicorn", arch="amd64", cell=cell_folder_name(1, "auth_session_ratelimit", "uvicorn"),
                   first_seen="2024-05-06T07:09:00Z", dossier="cell-01-auth_session_ratelimit-uvicorn/incidents/x")
    cell = make_cell(incidents=[inc], started_at="2024-05-06T07:08:09Z", finished_at="2024-05-06T07:09:09Z")
    cp.record_cell(cell)
    cp.record_cell(cell)  # replacing the same folder does not duplicate
    doc = load_document(run)
    assert doc.partial is True and len(doc.validation_results.cells) == 1 and len(doc.incidents) == 1
    cell_doc = load_document(run / cell.folder)
    assert cell_doc.kind == "single" and cell_doc.validation_results.cells[0].engine == "uvicorn"
    assert cell_doc.validation_results.tier_1["requests_sent"] == 10
    assert cell_doc.validation_results.duration_s == 60.0
    cp.finish()
    final = load_document(run)
    assert final.partial is False and final.validation_results.finished_at
    assert final.validation_results.tier_1["requests_sent"] == 10  # back-compat for one cell
    assert not [p for p in run.rglob("*.tmp")]


def test_checkpointer_context_manager_leaves_partial_on_interrupt(tmp_path: Path):
    cp = Checkpointer(tmp_path, make_doc())
    with pytest.raises(KeyboardInterrupt):
        with cp:
            assert load_document(tmp_path).partial is True
            raise KeyboardInterrupt
    assert load_document(tmp_path).partial is True
    with Checkpointer(tmp_path, make_doc()):
        pass
    assert load_document(tmp_path).partial is False


def test_write_cell_requires_folder(tmp_path: Path):
    with pytest.raises(ValueError):
        Checkpointer(tmp_path, make_doc()).write_cell(make_cell(folder=""))


# --- history ----------------------------------------------------------------


def _matrix(root: Path, pair: str, when: datetime, arch: str = "amd64") -> Path:
    folder = run_folder(root, "validate-matrix", arch, now=when)
    write_json_atomic(folder / "validate-results.json", make_doc(pair=pair))
    return folder / "validate-results.json"


def test_newest_matrix_documents_picks_newest_per_host(tmp_path: Path):
    root = tmp_path / "results"
    later = T0.replace(hour=9)
    _matrix(root, "hostA-amd64", T0)
    a_new = _matrix(root, "hostA-amd64", later)
    a_newest = _matrix(root, "hostA-amd64", later)  # same second: the -2 suffix is newer
    b_old = _matrix(root, "hostB-aarch64", T0, "aarch64")
    _matrix(root, "hostB-aarch64", T0.replace(year=2023), "aarch64")
    # noise: a single-run folder, a broken matrix doc, a folder without a document
    write_json_atomic(run_folder(root, "validate", "0.1.0", now=later) / "validate-results.json",
                      make_doc(pair="hostC-amd64", kind="single"))
    (run_folder(root, "validate-matrix", "amd64", now=later.replace(hour=10)) / "validate-results.json").write_text("{")
    run_folder(root, "validate-matrix", "amd64", now=later.replace(hour=11))
    assert a_newest.parent.name.endswith("-2") and a_new != a_newest
    assert newest_matrix_documents(root) == [a_newest, b_old]
    assert newest_matrix_documents(root, hosts=["hostB"]) == [b_old]
    assert newest_matrix_documents(root, hosts=["hostA-amd64"]) == [a_newest]
    assert newest_matrix_documents(tmp_path / "nowhere") == []
