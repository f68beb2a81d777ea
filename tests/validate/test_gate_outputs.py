"""The gate's baseline of accepted findings and its CI outputs (issue 14 items 3 and 4), as pure
functions on run documents: matching, stale entries, --baseline-update, JUnit against the JUnit 10
XSD, SARIF against the SARIF 2.1.0 JSON schema (both vendored: tests/data/schemas/PROVENANCE.md)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema
from typer.testing import CliRunner

from probatorium.cli import app
from probatorium.errors import UsageError
from probatorium.results.schema import Cell, Incident, PropertyResult, ValidateDocument, ValidationResults
from probatorium.validate import baseline as B
from probatorium.validate import ci_outputs as C
from probatorium.validate.gate import gate_exit_code

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schemas"


def _inc(pred: str, case: str, engine: str = "uvicorn", sev: str = "HIGH", operation: str = "") -> Incident:
    cell = f"cell-01-app-{engine}"
    return Incident(predicate=pred, severity=sev, refapp="app", engine=engine, arch="amd64", cell=cell,
                    first_seen="2026-01-01T00:00:00.000Z", dossier=f"{cell}/incidents/x-{pred}-{case}",
                    case=case, operation=operation, detail=f"{case}: it went wrong",
                    reproducer=f"python3 {cell}/incidents/x-{pred}-{case}/repro.py")


def _doc(incidents: list[Incident], engine: str = "uvicorn", props: dict | None = None) -> ValidateDocument:
    high = sorted({i.predicate for i in incidents if i.severity == "HIGH"})
    props = props or {p: PropertyResult(status="failed", evaluations=3) for p in {i.predicate for i in incidents}}
    props.setdefault("I-RFC-1", PropertyResult(status="passed", evaluations=3))
    props.setdefault("I-MEM-1", PropertyResult(status="not_judged", reason="too short to judge a leak"))
    cell = Cell(refapp="app", engine=engine, arch="amd64", status="failed" if high else "ok",
                reason="HIGH: " + ", ".join(high) if high else "", folder=f"cell-01-app-{engine}",
                started_at="2026-01-01T00:00:00.000Z", finished_at="2026-01-01T00:00:05.500Z",
                properties=props, incidents=incidents)
    return ValidateDocument(host_arch_pair="h-amd64", kind="single", probatorium_version="0",
                            command=["probatorium", "validate"],
                            validation_results=ValidationResults(started_at=cell.started_at, duration_s=5.5,
                                                                 cells=[cell]),
                            incidents=list(incidents))


def _baseline(*rows: tuple[str, str, str]) -> list[B.Entry]:
    return [B.Entry(predicate=p, case=c, engine=e, reason="known uvicorn parser leniency") for p, c, e in rows]


def test_an_entry_covers_only_its_predicate_case_and_engine():
    e = B.Entry(predicate="I-ADV-ACCEPTED", case="host_duplicate", engine="uvicorn", reason="r")
    assert e.covers(_inc("I-ADV-ACCEPTED", "host_duplicate"))
    assert not e.covers(_inc("I-ADV-ACCEPTED", "host_missing_http11"))  # same predicate, another case
    assert not e.covers(_inc("I-ADV-ACCEPTED", "host_duplicate", engine="hypercorn"))
    assert not e.covers(_inc("I-RFC-1", "host_duplicate"))
    assert B.Entry(predicate="I-ADV-ACCEPTED", case="host_duplicate", engine="*", reason="r").covers(
        _inc("I-ADV-ACCEPTED", "host_duplicate", engine="granian"))
    op = B.Entry(predicate="I-API-5XX", operation="createItem", engine="uvicorn", reason="r")
    assert op.covers(_inc("I-API-5XX", "createItem-500", operation="createItem"))
    assert not op.covers(_inc("I-API-5XX", "createItem-500"))  # no operation recorded: not by guess


def test_accepted_findings_do_not_fail_the_gate_and_a_new_case_does():
    known = [_inc("I-ADV-ACCEPTED", "host_duplicate"), _inc("I-ADV-ACCEPTED", "absolute_form_no_host")]
    doc = _doc(list(known))
    assert gate_exit_code(doc) == 1
    summary = B.apply_baseline(doc, _baseline(("I-ADV-ACCEPTED", "host_duplicate", "uvicorn"),
                                              ("I-ADV-ACCEPTED", "absolute_form_no_host", "uvicorn")), "bl.yaml")
    cell = doc.validation_results.cells[0]
    assert gate_exit_code(doc) == 0 and cell.status == "ok" and "accepted by the baseline" in cell.reason
    assert all(i.accepted and i.accepted_reason for i in doc.incidents)
    assert summary["accepted"] == 2 and summary["stale"] == [] and summary["file"] == "bl.yaml"

    doc = _doc([*(_inc("I-ADV-ACCEPTED", c) for c in ("host_duplicate", "slowloris_body"))])
    B.apply_baseline(doc, _baseline(("I-ADV-ACCEPTED", "host_duplicate", "uvicorn")))
    cell = doc.validation_results.cells[0]
    assert gate_exit_code(doc) == 1 and cell.status == "failed" and cell.reason == "HIGH: I-ADV-ACCEPTED"
    assert [i.case for i in doc.incidents if not i.accepted] == ["slowloris_body"]


def test_a_failed_high_property_without_incidents_still_fails():
    props = {"I-RFC-1": PropertyResult(status="failed", evaluations=9)}
    doc = _doc([_inc("I-ADV-ACCEPTED", "host_duplicate")], props=props)
    doc.validation_results.cells[0].reason = "HIGH: I-ADV-ACCEPTED, I-RFC-1"
    B.apply_baseline(doc, _baseline(("I-ADV-ACCEPTED", "host_duplicate", "uvicorn")))
    assert doc.validation_results.cells[0].reason == "HIGH: I-RFC-1" and gate_exit_code(doc) == 1


def test_stale_entries_and_entries_this_run_could_not_check():
    doc = _doc([_inc("I-ADV-ACCEPTED", "host_duplicate")])
    summary = B.apply_baseline(doc, _baseline(
        ("I-ADV-ACCEPTED", "host_duplicate", "uvicorn"),
        ("I-ADV-ACCEPTED", "host_invalid_port", "uvicorn"),  # judged here, did not reproduce: stale
        ("I-RFC-1", "chunked_bad", "uvicorn"),  # judged (passed): stale
        ("I-MEM-1", "-", "uvicorn"),  # not_judged in this run: not_checked
        ("I-ADV-ACCEPTED", "host_duplicate", "granian"),  # no granian cell: not_checked
    ))
    assert [e["case"] for e in summary["stale"]] == ["host_invalid_port", "chunked_bad"]
    assert [(e["predicate"], e["engine"]) for e in summary["not_checked"]] == [("I-MEM-1", "uvicorn"),
                                                                              ("I-ADV-ACCEPTED", "granian")]
    assert doc.model_dump(mode="json")["baseline"]["accepted"] == 1  # in validate-results.json


def test_baseline_update_creates_then_extends_keeping_edited_entries(tmp_path):
    path = tmp_path / "baseline.yaml"
    doc = _doc([_inc("I-ADV-ACCEPTED", "host_duplicate"), _inc("I-ADV-HANG", "upgrade_ws", sev="MED"),
                _inc("I-ADV-LENIENT", "bare_lf", sev="LOW"), _inc("I-API-5XX", "createItem-500", operation="createItem")])
    added = B.update_baseline(path, doc)
    assert [(e.predicate, e.case, e.operation) for e in added] == [
        ("I-ADV-ACCEPTED", "host_duplicate", ""), ("I-ADV-HANG", "upgrade_ws", ""), ("I-API-5XX", "", "createItem")]
    assert all(e.reason.startswith("accepted by --baseline-update on 20") for e in added)  # LOW is not written
    path.write_text(path.read_text().replace(added[0].reason, "tracked upstream (uvicorn)", 1))
    doc2 = _doc([_inc("I-ADV-ACCEPTED", "host_duplicate"), _inc("I-ADV-ACCEPTED", "slowloris_body")])
    assert [e.case for e in B.update_baseline(path, doc2)] == ["slowloris_body"]
    entries = B.load_baseline(path)
    assert len(entries) == 4 and entries[0].reason == "tracked upstream (uvicorn)"
    assert B.update_baseline(path, doc2) == []


@pytest.mark.parametrize("text, why", [
    ("accepted: [\n", "not valid YAML"),
    ("- 1\n", "expected a mapping"),
    ("version: 2\naccepted: []\n", "unsupported version"),
    ("accepted:\n- {predicate: I-X, engine: uvicorn, reason: r}\n", "exactly one of case and operation"),
    ("accepted:\n- {predicate: I-X, case: c, operation: o, engine: uvicorn, reason: r}\n", "exactly one of"),
    ("accepted:\n- {predicate: I-X, case: c, engine: uvicorn}\n", "a reason is required"),
    ("accepted:\n- {predicate: I-X, case: c, reason: r}\n", "predicate and engine are required"),
    ("accepted:\n- {predicate: I-X, case: c, engine: uvicorn, reason: r, refapp: a}\n", "unknown key(s) refapp"),
    ("accepted:\n- {predicate: I-X, case: 3, engine: uvicorn, reason: r}\n", "case must be a string"),
])
def test_a_malformed_baseline_is_one_clear_error(text, why):
    with pytest.raises(UsageError, match="^bl: .*" + why.replace("(", r"\(").replace(")", r"\)")):
        B.parse_baseline(text, "bl")


def test_json_baselines_load_too():
    text = json.dumps({"version": 1, "accepted": [{"predicate": "I-X", "case": "c", "engine": "*", "reason": "r"}]})
    assert B.parse_baseline(text) == [B.Entry(predicate="I-X", case="c", engine="*", reason="r")]


def _accepted_doc() -> ValidateDocument:
    doc = _doc([_inc("I-ADV-ACCEPTED", "host_duplicate"), _inc("I-ADV-ACCEPTED", "slowloris_body"),
                _inc("I-ADV-LENIENT", "bare_lf", sev="LOW"), _inc("I-API-SCHEMA", "getItem-200", sev="MED",
                                                                  operation="getItem")])
    B.apply_baseline(doc, _baseline(("I-ADV-ACCEPTED", "host_duplicate", "uvicorn")))
    return doc


def test_junit_is_valid_against_the_junit_xsd_and_carries_details_and_reproducers(tmp_path):
    doc = _accepted_doc()
    text = C.junit_xml(doc, tmp_path)
    xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd")).validate(text)
    root = ET.fromstring(text)
    suite = root.find("testsuite")
    assert suite.get("name") == "app/uvicorn/amd64" and suite.get("time") == "5.500"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert all(c.get("classname") == "app/uvicorn/amd64" for c in cases.values())
    fail = cases["I-ADV-ACCEPTED"].find("failure")  # one case accepted, one new: still a failure
    assert fail.get("message") == "host_duplicate: it went wrong" and fail.get("type") == "HIGH"
    assert "slowloris_body/repro.py" in fail.text and f"cd {tmp_path} && python3" in fail.text
    assert cases["I-RFC-1"].find("failure") is None and cases["I-RFC-1"].find("skipped") is None
    assert cases["I-MEM-1"].find("skipped").get("message") == "not_judged: too short to judge a leak"
    assert cases["I-ADV-LENIENT"].find("failure").get("type") == "LOW"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (str(len(cases)), "3", "1")

    for inc in doc.incidents:  # every I-ADV-ACCEPTED incident accepted: skipped, with the reason
        inc.accepted, inc.accepted_reason = inc.predicate == "I-ADV-ACCEPTED" or inc.accepted, "known"
    case = ET.fromstring(C.junit_xml(doc, tmp_path)).find("testsuite/testcase[@name='I-ADV-ACCEPTED']")
    assert case.find("failure") is None and case.find("skipped").get("message").startswith("accepted by the baseline")


def test_junit_of_a_cell_that_did_not_run_is_valid(tmp_path):
    doc = _doc([])
    cell = doc.validation_results.cells[0]
    cell.status, cell.reason, cell.properties = "not_run", "target never became ready", {}
    text = C.junit_xml(doc, tmp_path)
    xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd")).validate(text)
    assert "target never became ready" in ET.fromstring(text).find("testsuite/testcase/skipped").get("message")


def test_sarif_is_valid_against_the_sarif_schema(tmp_path):
    doc = _accepted_doc()
    log = C.sarif_log(doc, tmp_path)
    schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft4Validator(schema).validate(log)
    results = log["runs"][0]["results"]
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert [r["ruleId"] for r in results] == ["I-ADV-ACCEPTED", "I-ADV-ACCEPTED", "I-ADV-LENIENT", "I-API-SCHEMA"]
    assert [r["level"] for r in results] == ["error", "error", "note", "warning"]
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in results)
    assert results[0]["suppressions"][0]["status"] == "accepted" and "suppressions" not in results[1]
    names = [loc["name"] for loc in results[3]["locations"][0]["logicalLocations"]]
    assert names == ["cell-01-app-uvicorn", "getItem", "getItem-200"]
    assert results[1]["message"]["text"] == "slowloris_body: it went wrong"


def test_a_broken_sarif_log_fails_the_schema_check(tmp_path):
    """The schema check can fail: a level outside SARIF's enum is refused."""
    log = C.sarif_log(_accepted_doc(), tmp_path)
    log["runs"][0]["results"][0]["level"] = "HIGH"
    schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(log)
    with pytest.raises(xmlschema.XMLSchemaValidationError):  # and the XSD: a testcase without a name
        xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd")).validate(
            '<testsuites><testsuite name="s" tests="1" failures="0" errors="0"><testcase/></testsuite></testsuites>')


@pytest.mark.parametrize("args, why", [
    (["--baseline-update"], "--baseline-update needs --baseline FILE"),
    (["--baseline", "/nonexistent/bl.yaml"], "no such file"),
    (["--junit", "/nonexistent/dir/out.xml"], "does not exist"),
])
def test_gate_flags_refuse_bad_input_before_the_run(tmp_path, args, why):
    res = CliRunner().invoke(app, ["validate", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "r"), *args])
    assert res.exit_code == 2 and why in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r" / "validate-results.json").exists()
