"""Histogram merge exactness: merging per-worker histograms equals one histogram fed all values."""

from __future__ import annotations

import random

from probatorium.loadgen import hist


def test_merge_of_parts_equals_whole():
    rng = random.Random(7)
    values = [int(rng.lognormvariate(6, 1.5)) + 1 for _ in range(50_000)] + [1, 59_999_999, 60_000_000]
    whole = hist.new_histogram()
    for v in values:
        whole.record_value(v)
    parts = [hist.new_histogram() for _ in range(4)]
    for i, v in enumerate(values):
        hist.record_many(parts[i % 4], [v])  # through the batched path too
    merged = hist.merge_encoded(hist.encode(p) for p in parts)
    assert merged.get_total_count() == whole.get_total_count() == len(values)
    assert [merged.get_count_at_index(i) for i in range(whole.counts_len)] == [
        whole.get_count_at_index(i) for i in range(whole.counts_len)
    ]
    for p in (50, 75, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(p) == whole.get_value_at_percentile(p)
    assert merged.get_max_value() == whole.get_max_value()
    assert merged.get_min_value() == whole.get_min_value()


def test_record_many_equals_one_by_one():
    rng = random.Random(3)
    values = [rng.randint(1, 5_000) for _ in range(20_000)]
    a = hist.new_histogram()
    b = hist.new_histogram()
    for v in values:
        a.record_value(v)
    hist.record_many(b, values)
    assert hist.encode(a) == hist.encode(b)


def test_clamp_out_of_range():
    h = hist.new_histogram()
    hist.record_many(h, [0, -5, 10**12])
    assert h.get_total_count() == 3
    assert h.get_min_value() == 1


def test_summary_percentiles_from_merged():
    h = hist.new_histogram()
    hist.record_many(h, list(range(1, 1001)))
    s = hist.summary(h)
    assert s["p50"] == 500 and s["p99"] == 990 and s["max"] == 1000
