"""I-OBS-1 from outside: Prometheus exposition parsing and the monotonicity judge (pure)."""

from probatorium.validate.metrics import monotonic_violations, parse_exposition

PAGE = """# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{route="/a",status="200"} 10
http_requests_total{route="/b",status="200"} 3.0
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 7
latency_seconds_bucket{le="+Inf"} 13
latency_seconds_count 13
latency_seconds_sum 0.52
in_flight 4
"""


def test_parse_keeps_only_cumulative_series():
    s = parse_exposition(PAGE)
    assert s['http_requests_total{route="/a",status="200"}'] == 10
    assert s['latency_seconds_bucket{le="+Inf"}'] == 13
    assert "in_flight" not in s and len(s) == 6


def test_growth_is_fine_and_decrease_or_vanishing_is_not():
    before = parse_exposition(PAGE)
    grown = {k: v + 1 for k, v in before.items()}
    assert monotonic_violations(before, grown) == []
    shrunk = dict(grown)
    shrunk['latency_seconds_bucket{le="0.1"}'] = 2
    del shrunk["latency_seconds_sum"]
    bad = monotonic_violations(before, shrunk)
    assert any("decreased" in b and 'le="0.1"' in b for b in bad)
    assert any("vanished" in b and "latency_seconds_sum" in b for b in bad)
