"""validate-diff: cross-engine, cross-arch and per-case findings, not_compared, exit codes, outputs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.results import (
    Cell,
    Incident,
    PropertyResult,
    ValidateDocument,
    ValidationResults,
    cell_folder_name,
    run_folder,
    write_json_atomic,
)
from probatorium.validate.diff import (
    compute_diff,
    diff_exit_code,
    load_documents,
    render_text,
    run_diff,
)

REFAPP = "auth_session_ratelimit"
T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
CLEAN_PROPS = ("I-ADV-ACCEPTED", "I-ADV-HANG", "I-ADV-LENIENT", "I-WS-ACCEPTED", "I-WS-HANG")


def tally(**overrides: int) -> dict:
    adversarial = {"adv_sent": 100, "adv_wrong_accepted": 0, "adv_hang_until_timeout": 0, "adv_lenient_accepted": 0}
    ws = {"ws_sent": 10, "ws_accepted_bad_frame": 0, "ws_hang_no_close": 0}
    for name, value in overrides.items():
        (adversarial if name.startswith("adv_") else ws)[name] = value
    return {"requests_sent": 1000, "requests_2xx": 990, "adversarial": adversarial, "ws_torture": ws}


def cell(index: int, engine: str, arch: str = "amd64", *, status: str = "ok", props: dict | None = None,
         incidents: list[Incident] | None = None, **counters: int) -> Cell:
    properties = {p: PropertyResult(status="passed", evaluations=1) for p in CLEAN_PROPS}
    for pid, st in (props or {}).items():
        properties[pid] = PropertyResult(status=st, reason="why" if st == "not_judged" else "")
    return Cell(
        refapp=REFAPP, engine=engine, arch=arch, status=status,
        reason="engine not installed" if status == "not_run" else "",
        folder=cell_folder_name(index, REFAPP, engine),
        tier_1={} if status == "not_run" else tally(**counters),
        properties={} if status == "not_run" else properties,
        incidents=incidents or [],
    )


def write_matrix(root: Path, pair: str, cells: list[Cell], cases: dict[str, dict[str, str]] | None = None,
                 when: datetime = T0) -> Path:
    """A matrix run folder; ``cases`` maps engine -> {case: verdict} for the tier1_tally.json sidecars."""
    arch = pair.rsplit("-", 1)[1]
    folder = run_folder(root, "validate-matrix", arch, now=when)
    doc = ValidateDocument(
        host_arch_pair=pair, kind="matrix", probatorium_version="0.1.0",
        validation_results=ValidationResults(started_at=when.isoformat(), cells=cells),
    )
    write_json_atomic(folder / "validate-results.json", doc)
    for c in cells:
        if cases and c.engine in cases:
            sidecar = {"adversarial": {"cases": {
                name: {"verdict": verdict, "counts": {verdict: 3}, "level": "MUST", "clause": "RFC 9112 §6.1"}
                for name, verdict in cases[c.engine].items()
            }}}
            write_json_atomic(folder / c.folder / "tier1_tally.json", sidecar)
    return folder


def diff_of(*folders: Path, **kw) -> dict:
    return compute_diff(load_documents(folders), **kw)


def by(findings: list[dict], kind: str) -> list[dict]:
    return [f for f in findings if f["kind"] == kind]


def test_cross_engine_high_counter_divergence(tmp_path: Path):
    folder = write_matrix(tmp_path, "hostA-amd64", [
        cell(1, "uvicorn", adv_wrong_accepted=3, props={"I-ADV-ACCEPTED": "failed"}),
        cell(2, "uvicorn-h11"),
        cell(3, "hypercorn", status="not_run"),
    ])
    diff = diff_of(folder)
    [finding] = by(diff["findings"], "cross-engine")
    assert finding["severity"] == "HIGH" and finding["predicate"] == "I-ADV-ACCEPTED"
    assert finding["counter"] == "adversarial.adv_wrong_accepted"
    assert (finding["refapp"], finding["arch"]) == (REFAPP, "amd64")
    assert [(b["label"], b["counters"]["adversarial.adv_wrong_accepted"]) for b in finding["bad"]] == [("uvicorn", 3)]
    assert [g["label"] for g in finding["good"]] == ["uvicorn-h11"]
    # the not_run cell is never "good": it is listed as not compared
    assert [(n["kind"], n["engine"]) for n in diff["not_compared"]] == [("cell", "hypercorn")]
    assert "engine not installed" in diff["not_compared"][0]["reason"]
    assert diff["summary"] == {"HIGH": 1, "MED": 0, "LOW": 0}
    assert diff_exit_code(diff) == 1


def test_not_judged_and_missing_counters_are_not_good(tmp_path: Path):
    ws_missing = cell(3, "granian")
    del ws_missing.tier_1["ws_torture"]
    del ws_missing.properties["I-WS-HANG"]
    folder = write_matrix(tmp_path, "hostA-amd64", [
        cell(1, "uvicorn", ws_hang_no_close=2),
        cell(2, "daphne", props={"I-WS-HANG": "not_judged"}),
        ws_missing,
    ])
    diff = diff_of(folder)
    # nothing judged clean on another engine: no finding, both others not compared
    assert diff["findings"] == []
    reasons = {n["engine"]: n["reason"] for n in diff["not_compared"] if n["predicate"] == "I-WS-HANG"}
    assert set(reasons) == {"daphne", "granian"}
    assert "not_judged" in reasons["daphne"] and "no counter" in reasons["granian"]
    assert diff_exit_code(diff) == 0


def test_med_and_low_divergence_exit_codes_with_and_without_strict(tmp_path: Path):
    folder = write_matrix(tmp_path, "hostA-amd64", [
        cell(1, "uvicorn", adv_hang_until_timeout=1, adv_lenient_accepted=4),
        cell(2, "uvicorn-h11"),
    ])
    diff = diff_of(folder)
    assert [(f["predicate"], f["severity"]) for f in diff["findings"]] == [("I-ADV-HANG", "MED"),
                                                                            ("I-ADV-LENIENT", "LOW")]
    assert diff_exit_code(diff) == 0
    assert diff_exit_code(diff, strict=True) == 1


def test_property_and_incident_only_divergences(tmp_path: Path):
    inc = Incident(predicate="I-MEM-1", severity="HIGH", refapp=REFAPP, engine="hypercorn", arch="amd64",
                   cell=cell_folder_name(2, REFAPP, "hypercorn"), first_seen="2024-05-06T07:09:00Z",
                   dossier="cell-02/incidents/x")
    folder = write_matrix(tmp_path, "hostA-amd64", [
        cell(1, "uvicorn", props={"I-RFC-1": "failed", "I-MEM-1": "passed"}),
        cell(2, "hypercorn", props={"I-RFC-1": "passed"}, incidents=[inc]),
    ])
    diff = diff_of(folder)
    got = {(f["predicate"], f["bad"][0]["label"], f["good"][0]["label"]) for f in diff["findings"]}
    # I-RFC-1 has no counter: a failed property alone diverges (HIGH by default);
    # I-MEM-1: an incident on hypercorn, a passed property on uvicorn.
    assert got == {("I-RFC-1", "uvicorn", "hypercorn"), ("I-MEM-1", "hypercorn", "uvicorn")}
    assert all(f["severity"] == "HIGH" for f in diff["findings"])
    mem = next(f for f in diff["findings"] if f["predicate"] == "I-MEM-1")
    assert mem["bad"][0]["incidents"] == 1 and mem["counter"] == ""


def test_cross_arch_divergence_between_hosts(tmp_path: Path):
    amd = write_matrix(tmp_path, "hostA-amd64", [cell(1, "uvicorn"), cell(2, "uvicorn-h11")])
    arm = write_matrix(tmp_path, "hostB-aarch64", [cell(1, "uvicorn", "aarch64", ws_accepted_bad_frame=5),
                                                   cell(2, "uvicorn-h11", "aarch64")])
    diff = diff_of(amd, arm)
    [cross_arch] = by(diff["findings"], "cross-arch")
    assert cross_arch["predicate"] == "I-WS-ACCEPTED" and cross_arch["engine"] == "uvicorn"
    assert [b["label"] for b in cross_arch["bad"]] == ["hostB-aarch64"]
    assert [g["label"] for g in cross_arch["good"]] == ["hostA-amd64"]
    # the same counter also diverges across engines on the aarch64 host
    [cross_engine] = by(diff["findings"], "cross-engine")
    assert cross_engine["arch"] == "aarch64" and cross_engine["good"][0]["label"] == "uvicorn-h11"
    assert diff_exit_code(diff) == 1


def test_same_counter_bad_everywhere_is_not_a_divergence(tmp_path: Path):
    folder = write_matrix(tmp_path, "hostA-amd64", [cell(1, "uvicorn", adv_wrong_accepted=1),
                                                    cell(2, "uvicorn-h11", adv_wrong_accepted=2)])
    assert diff_of(folder)["findings"] == []


def test_per_case_verdict_divergence_and_missing_sidecar(tmp_path: Path):
    folder = write_matrix(
        tmp_path, "hostA-amd64",
        [cell(1, "uvicorn"), cell(2, "uvicorn-h11"), cell(3, "hypercorn"), cell(4, "daphne")],
        cases={
            "uvicorn": {"cl_te_both": "wrong_accepted", "obs_fold": "rejected", "slow": "rejected", "lf": "rejected_400"},
            "uvicorn-h11": {"cl_te_both": "rejected", "obs_fold": "rejected", "slow": "hang_until_timeout",
                            "lf": "rejected_close"},
            "hypercorn": {"cl_te_both": "rejected", "obs_fold": "rejected"},
        },
    )
    diff = diff_of(folder)
    cases = {f["case"]: f for f in by(diff["findings"], "case")}
    assert set(cases) == {"cl_te_both", "slow", "lf"}
    high = cases["cl_te_both"]
    assert high["severity"] == "HIGH" and high["level"] == "MUST" and high["clause"] == "RFC 9112 §6.1"
    assert high["verdicts"] == {"uvicorn": "wrong_accepted", "uvicorn-h11": "rejected", "hypercorn": "rejected"}
    assert high["bad"] == ["uvicorn"] and high["good"] == ["hypercorn", "uvicorn-h11"]
    assert cases["slow"]["severity"] == "MED"
    assert cases["lf"]["severity"] == "LOW"
    assert any("daphne" in note and "tier1_tally.json" in note for note in diff["notes"])
    assert diff_exit_code(diff) == 1


def test_per_case_across_arches(tmp_path: Path):
    amd = write_matrix(tmp_path, "hostA-amd64", [cell(1, "uvicorn")], cases={"uvicorn": {"c1": "rejected"}})
    arm = write_matrix(tmp_path, "hostB-aarch64", [cell(1, "uvicorn", "aarch64")], cases={"uvicorn": {"c1": "crash"}})
    [finding] = by(diff_of(amd, arm)["findings"], "case-arch")
    assert finding["engine"] == "uvicorn" and finding["severity"] == "HIGH"
    assert finding["verdicts"] == {"hostA-amd64": "rejected", "hostB-aarch64": "crash"}


def test_counter_mapping_is_a_parameter(tmp_path: Path):
    c1, c2 = cell(1, "uvicorn"), cell(2, "uvicorn-h11")
    c1.tier_1["requests_5xx"], c2.tier_1["requests_5xx"] = 7, 0
    for c in (c1, c2):
        c.properties = {}
    folder = write_matrix(tmp_path, "hostA-amd64", [c1, c2])
    diff = diff_of(folder, counter_predicates={"requests_5xx": ("I-X-5XX", "MED")})
    [finding] = diff["findings"]
    assert (finding["predicate"], finding["severity"], finding["counter"]) == ("I-X-5XX", "MED", "requests_5xx")


def test_run_diff_newest_per_host_writes_outputs(tmp_path: Path):
    root = tmp_path / "results"
    # an older amd64 run that diverged; the newest one does not (except MED)
    write_matrix(root, "hostA-amd64", [cell(1, "uvicorn", adv_wrong_accepted=9), cell(2, "uvicorn-h11")])
    newest = write_matrix(root, "hostA-amd64",
                          [cell(1, "uvicorn", adv_hang_until_timeout=1), cell(2, "uvicorn-h11")],
                          when=T0.replace(hour=9))
    assert run_diff(results_root=root) == 0
    out = root / "validate-diff"
    assert sorted(p.name for p in out.iterdir()) == ["diff.json", "diff.txt"]
    data = json.loads((out / "diff.json").read_text())
    assert [d["path"] for d in data["documents"]] == [str(newest / "validate-results.json")]
    assert set(data) == {"generated_at", "documents", "findings", "not_compared", "notes", "summary"}
    assert data["summary"] == {"HIGH": 0, "MED": 1, "LOW": 0}
    assert run_diff(results_root=root, strict=True) == 1
    echoed: list[str] = []
    explicit = tmp_path / "elsewhere"
    older = sorted(root.glob("*-validate-matrix-*"))[0]
    assert run_diff([older], out_dir=explicit, echo=echoed.append) == 1
    assert "I-ADV-ACCEPTED" in (explicit / "diff.txt").read_text() and echoed


def test_render_text_is_sorted_by_severity_one_line_per_finding(tmp_path: Path):
    folder = write_matrix(tmp_path, "hostA-amd64", [
        cell(1, "uvicorn", adv_lenient_accepted=1, adv_hang_until_timeout=2, ws_hang_no_close=1),
        cell(2, "uvicorn-h11"),
    ])
    diff = diff_of(folder)
    text = render_text(diff)
    rows = [line for line in text.splitlines() if line.split()[:1] in (["HIGH"], ["MED"], ["LOW"])]
    assert [r.split()[0] for r in rows] == ["HIGH", "MED", "LOW"]
    high = rows[0].split()
    assert high[1:6] == ["cross-engine", "I-WS-HANG", REFAPP, "amd64", "*"]
    assert "uvicorn=1" in rows[0] and "uvicorn-h11=0" in rows[0]
    assert "SEVERITY" in text and "PREDICATE/CASE" in text


def test_no_documents_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError):
        run_diff(results_root=tmp_path / "results")
    with pytest.raises(UsageError):
        run_diff([tmp_path / "missing"], out_dir=tmp_path / "out")


def test_single_engine_document_notes_no_comparison(tmp_path: Path):
    folder = write_matrix(tmp_path, "hostA-amd64", [cell(1, "uvicorn", adv_wrong_accepted=1)])
    diff = diff_of(folder)
    assert diff["findings"] == [] and any("no cross-engine" in n for n in diff["notes"])


def test_diff_reads_the_one_catalogue(tmp_path: Path):
    """validate-diff and the gate share the catalogue: I-WS-CLOSE counts unclean closes too."""
    from probatorium.validate.invariants import COUNTER_PREDICATES

    assert COUNTER_PREDICATES["ws_torture.ws_unclean_close"] == ("I-WS-CLOSE", "MED")
    assert COUNTER_PREDICATES["h2c_churn.h2c_body_mismatch"] == ("I-ADV-ACCEPTED", "HIGH")
    a = cell(1, "uvicorn")
    a.tier_1["ws_torture"] = {"ws_sent": 10, "ws_upgraded": 10, "ws_unclean_close": 2}
    b = cell(2, "hypercorn")
    b.tier_1["ws_torture"] = {"ws_sent": 10, "ws_upgraded": 10, "ws_unclean_close": 0}
    diff = diff_of(write_matrix(tmp_path, "hostA-amd64", [a, b]))
    rows = [f for f in by(diff["findings"], "cross-engine") if f["predicate"] == "I-WS-CLOSE"]
    assert rows and rows[0]["severity"] == "MED" and rows[0]["counters"] == ["ws_torture.ws_unclean_close"]


def test_ws_and_h2c_per_case_rows(tmp_path: Path):
    """Per-case divergences of the ws and h2c slices are rows too, graded by the catalogue."""
    folder = write_matrix(tmp_path, "hostA-amd64", [cell(1, "uvicorn"), cell(2, "hypercorn")])
    doc = load_documents([folder])[0].document
    verdicts = {"uvicorn": ("ws_accepted_bad_frame", "bad_upgrade_accepted"),
                "hypercorn": ("ws_closed_correctly", "declined")}
    for c in doc.validation_results.cells:
        ws_v, h2c_v = verdicts[c.engine]
        write_json_atomic(folder / c.folder / "tier1_tally.json", {
            "ws": {"cases": {"reserved opcode 3": {"verdict": ws_v, "counts": {ws_v: 1}}}},
            "h2c": {"cases": {"duplicate HTTP2-Settings": {"verdict": h2c_v, "counts": {h2c_v: 1}}}}})
    rows = {f["case"]: f for f in by(diff_of(folder)["findings"], "case")}
    assert rows["ws:reserved opcode 3"]["severity"] == "HIGH"
    assert rows["ws:reserved opcode 3"]["bad"] == ["uvicorn"] and rows["ws:reserved opcode 3"]["slice"] == "ws"
    assert rows["h2c:duplicate HTTP2-Settings"]["severity"] == "HIGH"
    assert rows["h2c:duplicate HTTP2-Settings"]["good"] == ["hypercorn"]


def test_cli_prints_plain_unwrapped_rows_when_piped(tmp_path: Path):
    """Issue 14 item 8: a piped validate-diff printed its table hard-wrapped mid-row."""
    import os
    import subprocess
    import sys

    long_engine = "uvicorn-" + "x" * 150  # a row far wider than any console default
    folder = write_matrix(tmp_path, "hostA-amd64", [
        cell(1, long_engine, adv_wrong_accepted=3, props={"I-ADV-ACCEPTED": "failed"}), cell(2, "uvicorn-h11")])
    src = Path(__file__).resolve().parents[2] / "src"
    r = subprocess.run([sys.executable, "-m", "probatorium.cli", "validate-diff", str(folder), "--out",
                        str(tmp_path / "d")], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(src), "COLUMNS": "80"})
    assert r.returncode == 1, r.stderr
    assert r.stdout == (tmp_path / "d" / "diff.txt").read_text()
    [row] = [line for line in r.stdout.splitlines() if line.startswith("HIGH")]
    assert long_engine in row and "uvicorn-h11" in row
