"""The bench results.json through its schema models: the file keeps its JSON shape byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probatorium.bench.since import load_bench_document
from probatorium.results.schema import BenchDocument
from probatorium.results.store import write_json_atomic

NOT_RUN = {"saturation": None, "latency_at_slo": None, "rate_search": None, "observer": None, "verify": None,
           "started_at": None, "finished_at": None}

# The shape run_bench wrote as a plain dict (bench/1), key order included.
LEGACY = {
    "schema": "bench/1", "kind": "bench", "version": "dev", "started_at": "2026-12-02T16:18:29Z",
    "finished_at": "2026-12-02T16:18:42Z", "partial": False,
    "host": {"hostname": "vm", "kernel": "6.1", "machine": "x86_64", "cpu_model": "AMD EPYC", "cpus_online": 2,
             "affinity": [0, 1], "server_cpus": [0], "client_cpus": [1],
             "versions": {"python": "3.11.7", "probatorium": "0.1.0"}, "loadavg": [2.75390625, 1.5, 0.0]},
    "config": {"runs": 1, "duration_s": 1.0, "warmup_s": 0.5, "slos_ms": [10, 50, 100, 500, 1000],
               "error_budget": 0.001, "max_probes": 1, "competitors": ["ghost", "bench_app-uvicorn"],
               "cells": ["plaintext", "sse"]},
    "competitors": [
        {"name": "ghost", "group": "baseline", "description": "x", "install": "apt-get install ghost",
         "status": "not_applicable", "reason": "toolchain missing", "versions": {"ghost": "not installed"}},
        {"name": "bench_app-uvicorn", "group": "python", "description": "y", "install": "-", "status": "ok",
         "reason": None, "versions": {}},
    ],
    "cells": [
        {"index": 1, "competitor": "ghost", "cell": "plaintext", "kind": "http", "connections": 64,
         "status": "not_applicable", "reason": "toolchain missing", "folder": None, **NOT_RUN},
        {"index": 2, "competitor": "bench_app-uvicorn", "cell": "plaintext", "kind": "http", "connections": 64,
         "status": "ok", "reason": None, "folder": "02-bench_app-uvicorn-plaintext",
         "saturation": {"runs": 1, "requests": 11297, "duration_s": 1.0, "rps": 11297.0,
                        "errors": {"connect": 0, "status": 0},
                        "latency_us": {"p50": 4367, "p99": 25583, "max": 69311, "mean": 5669.4},
                        "histogram": "HISTFAAAA", "count": 11297, "per_run_rps": [11297.0],
                        "client_bound": False, "client_bound_reason": None},
         "latency_at_slo": {"10": None, "1000": 9000.5},
         "rate_search": {"slos": {"10": {"rps": None, "lower": 0.0, "upper": 11297.0, "converged": False}},
                         "probes": [{"rate": 11297.0, "error_ratio": 0.26}], "saturation_rps": 11297.0},
         "observer": {"samples": 4, "peak": {"cpu_pct": 53.0, "rss_kb": 32236}},
         "verify": {"ok": True, "reason": None, "status": 200, "content_type": "text/plain",
                    "body_prefix": "Hello, World!"},
         "started_at": "2026-12-02T16:18:30Z", "finished_at": "2026-12-02T16:18:35Z"},
        {"index": 3, "competitor": "bench_app-uvicorn", "cell": "sse", "kind": "sse", "connections": 8,
         "status": "invalid", "reason": "wrong answer: no stream", "folder": "03-bench_app-uvicorn-sse",
         **NOT_RUN, "rate_search": {"skipped": "sse cell: passive subscribers, no open-loop rate"},
         "verify": {"ok": False, "reason": "no stream", "status": 404, "content_type": None, "body_prefix": None}},
    ],
}


def test_legacy_document_round_trips_byte_for_byte(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.json"
    write_json_atomic(legacy, LEGACY)
    doc = load_bench_document(legacy)
    assert doc.schema_id == "bench/1" and doc.path == str(legacy)
    assert doc.cells[1].saturation.latency_us["p99"] == 25583 and doc.cells[2].verify.status == 404
    again = write_json_atomic(tmp_path / "again.json", doc)
    assert again.read_bytes() == legacy.read_bytes()
    assert "path" not in json.loads(again.read_text())  # where it lives is not part of the document


def test_newer_fields_survive_and_bad_statuses_are_rejected() -> None:
    newer = json.loads(json.dumps(LEGACY))
    newer["cells"][0]["energy_j"] = 1.5
    newer["future"] = {"x": 1}
    assert BenchDocument.model_validate(newer).model_dump(mode="json") == newer
    newer["cells"][0]["status"] = "great"
    with pytest.raises(ValueError):
        BenchDocument.model_validate(newer)
