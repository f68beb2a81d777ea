"""latency_at_slo on a model server of known capacity (pure logic, no sockets)."""

import pytest

from probatorium.bench.ratesearch import Probe, latency_at_slo

CAPACITY = 10_000.0
BASE_MS = 1.0


def model_server(capacity=CAPACITY, base_ms=BASE_MS, calls=None):
    """M/M/1-like: p99 grows as base/(1-rho); above capacity it cannot keep up."""
    def run(rate):
        if calls is not None:
            calls.append(rate)
        rho = rate / capacity
        if rho >= 1.0:
            return Probe(rate=rate, achieved_rps=capacity, p99_ms=60_000.0, requests=int(capacity),
                         unsent=int(rate - capacity))
        return Probe(rate=rate, achieved_rps=rate, p99_ms=base_ms / (1.0 - rho), requests=int(rate))
    return run


def analytic(slo_ms, capacity=CAPACITY, base_ms=BASE_MS):
    return capacity * (1.0 - base_ms / slo_ms)


def test_finds_capacity_under_each_slo_within_a_few_percent():
    calls = []
    result = latency_at_slo(model_server(calls=calls), saturation_rps=CAPACITY, max_probes=30, resolution=0.02)
    assert calls[0] == CAPACITY  # the search starts from the saturation rate
    for slo in (10, 50, 100, 500, 1000):
        found = result["slos"][f"{slo:g}"]["rps"]
        truth = analytic(slo)
        assert found <= truth + 1e-6, (slo, found, truth)  # never reports a failing rate
        assert found >= 0.96 * truth, (slo, found, truth)
        assert result["slos"][f"{slo:g}"]["converged"]
    # every probe is kept as evidence: rate, achieved, p99
    assert len(result["probes"]) == len(calls)
    assert {"rate", "achieved_rps", "p99_ms", "error_ratio"} <= set(result["probes"][0])


def test_probe_budget_is_bounded():
    calls = []
    result = latency_at_slo(model_server(calls=calls), saturation_rps=CAPACITY, max_probes=5)
    assert len(calls) <= 5
    for slo in result["slos"].values():
        assert slo["rps"] is None or slo["rps"] <= CAPACITY


def test_saturation_that_passes_is_the_answer():
    # a server that keeps up at the saturation rate with a tiny p99
    def run(rate):
        return Probe(rate=rate, achieved_rps=rate, p99_ms=0.5, requests=int(rate))
    result = latency_at_slo(run, saturation_rps=5000, max_probes=8)
    assert all(v["rps"] == 5000 for v in result["slos"].values())
    assert len(result["probes"]) == 1


def test_errors_beyond_budget_fail_a_rate():
    # fast, but 1 % errors everywhere: no rate passes with a 0.1 % budget
    def run(rate):
        return Probe(rate=rate, achieved_rps=rate, p99_ms=1.0, requests=int(rate), errors=int(rate * 0.01) + 1)
    result = latency_at_slo(run, saturation_rps=1000, max_probes=6)
    assert all(v["rps"] is None for v in result["slos"].values())


def test_achieved_below_99_percent_fails():
    p = Probe(rate=1000, achieved_rps=980, p99_ms=1.0, requests=980)
    assert not p.passes(1000, 0.001)
    assert Probe(rate=1000, achieved_rps=995, p99_ms=1.0, requests=995).passes(1000, 0.001)


@pytest.mark.parametrize("capacity", [300.0, 52_000.0])
def test_other_capacities(capacity):
    result = latency_at_slo(model_server(capacity=capacity), saturation_rps=capacity, max_probes=30,
                            resolution=0.02)
    assert result["slos"]["1000"]["rps"] >= 0.96 * analytic(1000, capacity)
