"""Thresholds: the parser and evaluator (pure), and one real loadgen run judged by the CLI."""

from __future__ import annotations

import json

import pytest

from loadgen_servers import Server
from probatorium.errors import UsageError
from probatorium.loadgen import hist
from probatorium.loadgen.cli import exit_code, run_loadgen_command
from probatorium.loadgen.thresholds import Measured, all_passed, evaluate, parse_threshold, parse_thresholds


@pytest.mark.parametrize("text, metric, op, value, unit, kind", [
    ("p99<50ms", "p99", "<", 50.0, "ms", "latency"),
    (" P99.9 <= 2 s ", "p99.9", "<=", 2.0, "s", "latency"),
    ("p999<1s", "p99.9", "<", 1.0, "s", "latency"),
    ("p(95)<200ms", "p95", "<", 200.0, "ms", "latency"),
    ("max<10s", "max", "<", 10.0, "s", "latency"),
    ("avg<800µs", "mean", "<", 800.0, "us", "latency"),
    ("mean>=0.5us", "mean", ">=", 0.5, "us", "latency"),
    ("p90 < 7 \u03bcs", "p90", "<", 7.0, "us", "latency"),  # Greek mu, not the micro sign
    ("rps>1e9", "rps", ">", 1e9, "", "rps"),
    ("throughput>=1000", "rps", ">=", 1000.0, "", "rps"),
    ("errors<0.1%", "errors", "<", 0.1, "%", "ratio"),
    ("errors<1", "errors", "<", 1.0, "", "count"),
    ("errors.timeout<=3", "errors.timeout", "<=", 3.0, "", "count"),
    ("unsent<1%", "unsent", "<", 1.0, "%", "ratio"),
])
def test_parse_valid(text, metric, op, value, unit, kind):
    t = parse_threshold(text)
    assert (t.metric, t.op, t.value, t.unit, t.kind) == (metric, op, value, unit, kind)
    assert t.expr == text.strip()


@pytest.mark.parametrize("text, why", [
    ("p99<50", "needs a unit"),
    ("p99<50xs", "needs a unit"),
    ("p99=5ms", "operator '='"),
    ("p99==5ms", "operator '=='"),
    ("p101<5ms", "not in (0, 100]"),
    ("p0<5ms", "not in (0, 100]"),
    ("latency<5ms", "unknown metric 'latency'"),
    ("errors.bogus<1", "unknown metric"),
    ("rps>5ms", "plain number"),
    ("errors<1.5", "whole number"),
    ("errors<200%", "more than 100%"),
    ("errors<5ms", "count (N) or a percentage"),
    ("p99<-1ms", ">= 0"),
    ("p99<50ms and more", "not METRIC OP VALUE"),
    ("p99", "not METRIC OP VALUE"),
    ("", "empty"),
])
def test_parse_errors_name_the_expression_and_what_is_allowed(text, why):
    with pytest.raises(UsageError) as ei:
        parse_threshold(text)
    msg = str(ei.value)
    assert why in msg and repr(text.strip()) in msg
    assert "allowed:" in msg and "< <= > >=" in msg and "\n" not in msg


def _measured(values_us, *, errors=None, unsent=0, duration=2.0) -> Measured:
    h = hist.new_histogram()
    hist.record_many(h, values_us)
    return Measured(requests=len(values_us), duration_s=duration, rps=len(values_us) / duration,
                    errors=errors or {"connect": 0, "reset": 0, "timeout": 0, "status": 0, "protocol": 0},
                    latency_us=hist.summary(h), histogram=hist.encode(h), unsent=unsent)


def test_latency_thresholds_read_the_merged_histogram():
    m = _measured([1000] * 990 + [80_000] * 10)  # p99 = 1 ms, p99.5 = 80 ms, max 80 ms
    v = {x.threshold: x for x in evaluate(parse_thresholds(
        ["p99<2ms", "p99.5<50ms", "max<100ms", "mean<2ms", "p50>=1ms", "p(99)<1ms"]), m)}
    assert v["p99<2ms"].passed and v["p99<2ms"].actual == pytest.approx(1.0, rel=0.01)
    assert v["p99<2ms"].detail == "p99 = 1 ms"
    assert not v["p99.5<50ms"].passed and v["p99.5<50ms"].actual == pytest.approx(80.0, rel=0.01)
    assert v["max<100ms"].passed and v["max<100ms"].actual == pytest.approx(80.0, rel=0.01)
    assert v["mean<2ms"].passed and v["mean<2ms"].actual == pytest.approx(1.79, rel=0.01)  # (990*1 + 10*80)/1000
    assert v["p50>=1ms"].passed
    assert not v["p(99)<1ms"].passed  # 1 ms is not < 1 ms


def test_counts_ratios_and_rps():
    errs = {"connect": 0, "reset": 2, "timeout": 1, "status": 7, "protocol": 0}
    m = _measured([500] * 997, errors=errs, unsent=3)  # 997 answered (7 of them status errors), 3 failed unanswered
    v = {x.threshold: x for x in evaluate(parse_thresholds(
        ["errors<10", "errors<=10", "errors<1%", "errors<=1%", "errors.status<1", "errors.timeout<=1",
         "unsent<0.2%", "rps>498", "rps<498.5", "rps<=498.5"]), m)}
    assert not v["errors<10"].passed and v["errors<=10"].passed
    assert v["errors<1%"].detail == "errors = 1% (10 of 1,000)"  # attempts = 997 + 2 + 1
    assert not v["errors<1%"].passed and v["errors<=1%"].passed
    assert not v["errors.status<1"].passed and v["errors.timeout<=1"].passed
    assert not v["unsent<0.2%"].passed and v["unsent<0.2%"].actual == pytest.approx(0.2991, rel=0.01)
    assert v["rps>498"].passed and not v["rps<498.5"].passed and v["rps<=498.5"].passed  # 997 / 2 s


def test_nothing_measured_is_broken_never_passed():
    empty = _measured([])
    vs = evaluate(parse_thresholds(["p99<10s", "errors<1%", "errors<1", "rps>=0"]), empty)
    assert [v.passed for v in vs] == [False, False, True, True]
    assert vs[0].actual is None and "not measured" in vs[0].detail
    assert "no request was attempted" in vs[1].detail
    # without a histogram (an old result), latency_us is read; still nothing measured when no request
    no_hist = Measured(requests=0, duration_s=1.0, rps=0.0, errors={}, latency_us={"p99": 0})
    assert not evaluate(parse_thresholds(["p99<1s"]), no_hist)[0].passed
    old = Measured(requests=5, duration_s=1.0, rps=5.0, errors={}, latency_us={"p999": 3000, "p99": 2000})
    verdicts = evaluate(parse_thresholds(["p99.9<4ms", "p99<1ms", "p95<1s"]), old)
    assert [v.passed for v in verdicts] == [True, False, False]  # p95 is not in latency_us: not measured


def test_exit_code_rule():
    class R:  # the two fields exit_code reads
        errors_total, unsent = 3, 0
    verdicts = evaluate(parse_thresholds(["errors<=3"]), _measured([100] * 10,
                        errors={"connect": 0, "reset": 3, "timeout": 0, "status": 0, "protocol": 0}))
    assert exit_code(R(), None) == 1  # no thresholds: any error -> 1
    assert exit_code(R(), verdicts) == 0  # thresholds decide: errors<=3 holds
    assert exit_code(R(), verdicts + evaluate(parse_thresholds(["rps>1e9"]), _measured([100]))) == 1
    assert all_passed([v.to_dict() for v in verdicts])


@pytest.mark.timeout(30)
def test_real_run_one_threshold_passes_one_breaks(capsys):
    s = Server("ok")
    try:
        code = run_loadgen_command(s.url, connections=2, duration=1.0, workers=1, json_out=True,
                                   thresholds=["p99<10s", "rps>1e9"])
    finally:
        s.close()
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["requests"] > 0
    assert (doc["command"], doc["exit_code"], doc["status"]) == ("loadgen", 1, "failed")  # the --json envelope
    v = {x["threshold"]: x for x in doc["thresholds"]}
    assert v["p99<10s"]["passed"] is True and 0 < v["p99<10s"]["actual"] < 10
    assert v["rps>1e9"]["passed"] is False and v["rps>1e9"]["actual"] == doc["requests_per_sec"]
    assert code == 1
    assert "threshold rps>1e9: BROKEN" in err and "p99<10s" not in err


def test_bad_threshold_exits_2_before_any_load(capsys):
    # port 9 on loopback: nothing is sent, the expression fails first
    assert run_loadgen_command("http://127.0.0.1:9/", duration=1.0, thresholds=["p99<10s", "p99<5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad threshold 'p99<5'" in err[0]
