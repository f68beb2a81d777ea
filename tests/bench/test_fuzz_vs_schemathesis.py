"""benchmarks/fuzz_vs_schemathesis.py: its parsing and matching rules, and the restserver's --count-file."""

from __future__ import annotations

import http.client
import importlib.util
import select
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RESTSERVER = REPO / "tests" / "servers" / "restserver.py"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


bench = _load("fuzz_vs_schemathesis", REPO / "benchmarks" / "fuzz_vs_schemathesis.py")
restserver = _load("restserver_for_bench", RESTSERVER)

REPORT = {"failures": [  # the shape of Schemathesis 4's JSON report (--report json)
    {"code": "ST402", "title": "Object-level authorization bypass", "count": 1, "operations": ["GET /items/{itemId}"]},
    {"code": "ST101", "title": "Server error", "count": 2, "operations": ["QUERY /items", "POST /items"]},
    {"code": "ST202", "title": "Schema-valid request rejected", "count": 2, "operations": ["Stateful tests"]},
]}


def test_every_planted_bug_has_a_rule_on_real_operations():
    assert set(bench.RULES) == set(restserver.BUGS)
    assert set(bench.NAMED) <= set(bench.RULES)
    doc = yaml.safe_load(bench.SPEC.read_text())
    ops = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item if m != "parameters"}
    for bug, rule in bench.RULES.items():
        assert rule.predicate.startswith("I-API-") and rule.why, bug
        assert bool(rule.codes) == bool(rule.operations), bug
        assert set(rule.operations) <= ops | {"Stateful tests"}, (bug, set(rule.operations) - ops)


def test_schemathesis_failures_match_by_code_and_operation():
    failures = bench.st_failures(REPORT)
    assert ("ST101", "QUERY /items") in failures and len(failures) == 4
    assert bench.st_caught("authz-read", failures)
    assert bench.st_caught("long-field-5xx", failures)  # ST101 on POST /items
    assert not bench.st_caught("malformed-id-5xx", failures)  # a 5xx, but on no operation with an id
    assert not bench.st_caught("use-after-delete", failures)
    assert not bench.st_caught("leak-on-reject", failures)  # no rule: never caught
    assert bench.st_codes(failures) == "ST101×2 ST202 ST402"
    assert bench.st_new(failures, [("ST101", "QUERY /items"), ("ST202", "Stateful tests")]) == \
        "ST101 POST /items; ST402 GET /items/{itemId}"
    assert bench.st_codes([]) == "-" and bench.st_new([], []) == "-"


def test_tier2_judged_by_predicate_and_severity():
    incidents = [{"predicate": "I-API-UAF", "severity": "HIGH"}, {"predicate": "I-API-LAX", "severity": "MED"},
                 {"predicate": "I-API-SCHEMA", "severity": "LOW"}]
    assert bench.t2_caught("use-after-delete", incidents) and not bench.t2_caught("authz-read", incidents)
    assert bench.t2_predicates(incidents) == ["I-API-LAX", "I-API-UAF"]
    assert bench.t2_predicates(incidents, ("HIGH",)) == ["I-API-UAF"]


def test_counts_and_durations_parse():
    text = "requests=10 first=100.0 last=104.0\nrequests=0 first=0.000000 last=0.000000\n" \
           "requests=5 first=103.0 last=110.5\n"
    assert bench.parse_counts(text) == (15, 10.5)
    assert bench.parse_counts("") == (0, 0.0)
    assert bench.parse_duration("60s") == 60 and bench.parse_duration("2m") == 120 and bench.parse_duration("7") == 7
    for bad in ("ten", "0s", "5h", ""):
        with pytest.raises(ValueError):
            bench.parse_duration(bad)


def test_bad_flags_give_one_line_and_exit_2(capsys):
    assert bench.main(["--bugs", "use-after-delete,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown bug(s) nope" in err
    assert bench.main(["--duration", "soon"]) == 2
    assert "--duration" in capsys.readouterr().err


def test_restserver_count_file_counts_api_requests(tmp_path):
    count = tmp_path / "count.txt"
    proc = subprocess.Popen([sys.executable, str(RESTSERVER), "--port", "0", "--count-file", str(count)],
                            stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        host, port = proc.stdout.readline().split("=", 1)[1].strip().split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        for path in ("/healthz", "/items", "/openapi.yaml", "/debug/vars", "/items/1"):  # only API paths count
            conn.request("GET", path)
            conn.getresponse().read()
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
    n, span = bench.parse_counts(count.read_text())
    assert n == 2 and 0 <= span < 5
