"""Histogram merge across runs (exact) and bench-since on fabricated results."""

import json
import random

from probatorium.bench.runner import merge_runs
from probatorium.bench.since import bench_since, compare
from probatorium.loadgen import hist
from probatorium.results.schema import BenchDocument


def _run(values, seconds=1.0):
    h = hist.new_histogram()
    hist.record_many(h, values)
    return {"histogram": hist.encode(h), "requests": len(values), "duration_s": seconds,
            "requests_per_sec": len(values) / seconds, "errors": {"connect": 0, "status": 1},
            "client_bound": False, "client_bound_reason": None}


def test_merge_across_runs_is_exact():
    rng = random.Random(7)
    runs_values = [[rng.randint(50, 200_000) for _ in range(5000)] for _ in range(3)]
    runs_values[2] = [v * 7 for v in runs_values[2]]  # a slow run: averaging percentiles would be wrong
    merged = merge_runs([_run(v) for v in runs_values])
    one = hist.new_histogram()
    hist.record_many(one, [v for vs in runs_values for v in vs])
    again = hist.decode(merged.histogram)
    assert again.get_total_count() == one.get_total_count() == 15000
    for p in (50, 90, 99, 99.9, 100):
        assert again.get_value_at_percentile(p) == one.get_value_at_percentile(p)
    assert merged.latency_us["p99"] == one.get_value_at_percentile(99)
    assert merged.requests == 15000 and merged.rps == 5000.0
    assert merged.errors["status"] == 3


def _doc(version, cells, partial=False):
    return {"schema": "bench/1", "version": version, "partial": partial, "cells": cells}


def _cell(comp, cell, rps, slo=None, status="ok"):
    return {"competitor": comp, "cell": cell, "status": status,
            "saturation": None if rps is None else {"rps": rps}, "latency_at_slo": slo or {}}


def _write(root, name, doc):
    d = root / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(doc))


def test_since_drop_beyond_threshold_exits_1(tmp_path):
    _write(tmp_path, "20260101T000000Z-bench-v1", _doc("v1", [_cell("a", "plaintext", 10000, {"10": 8000})]))
    _write(tmp_path, "20260102T000000Z-bench-v2", _doc("v2", [_cell("a", "plaintext", 9900, {"10": 7000})]))
    code, text = bench_since(tmp_path, "v1", 0.05)
    assert code == 1
    assert "latency_at_slo@10ms" in text and "-12.5%" in text
    assert "saturation_rps" not in text  # -1 % is within the threshold


def test_since_disappeared_cell_exits_1(tmp_path):
    _write(tmp_path, "20260101T000000Z-bench-v1",
           _doc("v1", [_cell("a", "plaintext", 10000), _cell("a", "json", 8000)]))
    _write(tmp_path, "20260102T000000Z-bench-v2",
           _doc("v2", [_cell("a", "plaintext", 10000), _cell("a", "json", None, status="failed")]))
    code, text = bench_since(tmp_path, "v1", 0.05)
    assert code == 1 and "json" in text and "failed" in text
    regs = compare(BenchDocument.model_validate(_doc("v1", [_cell("b", "ws", 100)])),
                   BenchDocument.model_validate(_doc("v2", [])), 0.05)
    assert regs and regs[0]["current"] == "missing"


def test_since_within_threshold_exits_0(tmp_path):
    _write(tmp_path, "20260101T000000Z-bench-v1", _doc("v1", [_cell("a", "plaintext", 10000, {"10": 8000})]))
    # a newer baseline run of v1 is the one compared with
    _write(tmp_path, "20260101T120000Z-bench-v1", _doc("v1", [_cell("a", "plaintext", 9000, {"10": 7000})]))
    _write(tmp_path, "20260102T000000Z-bench-v2", _doc("v2", [_cell("a", "plaintext", 8800, {"10": 6900})]))
    _write(tmp_path, "20260103T000000Z-bench-v3", _doc("v3", [], partial=True))  # unfinished: ignored
    code, text = bench_since(tmp_path, "v1", 0.05)
    assert code == 0, text
    assert "20260101T120000Z-bench-v1" in text


def test_since_without_baseline_exits_2(tmp_path):
    _write(tmp_path, "20260102T000000Z-bench-v2", _doc("v2", [_cell("a", "plaintext", 1)]))
    assert bench_since(tmp_path, "v1", 0.05)[0] == 2
