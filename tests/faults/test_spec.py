"""FaultSpec / InjectedFault as values: fixed names, checked parameters, JSON round trips."""

from __future__ import annotations

import json

import pytest

from probatorium.errors import UsageError
from probatorium.faults import FAULT_KINDS, PARAMS, PROCESS_KINDS, PROXY_KINDS, SERVICE_KINDS, FaultSpec, InjectedFault


def test_the_kind_names_are_fixed_and_partitioned() -> None:
    assert FAULT_KINDS == ("target-kill", "target-term", "target-stop", "fd-squeeze", "service-kill",
                           "service-stop", "net-latency", "net-jitter", "net-bandwidth", "net-reset",
                           "net-stall", "net-slice", "net-halfclose", "net-netem")
    assert set(PARAMS) == set(FAULT_KINDS)
    assert PROCESS_KINDS | SERVICE_KINDS | PROXY_KINDS | {"net-netem"} == set(FAULT_KINDS)


def test_defaults_fill_in_and_the_json_round_trips() -> None:
    spec = FaultSpec("net-stall", 1.5, 2.0, {"hold_ms": 300})
    assert spec.params == {"hold_ms": 300.0, "then": "release", "direction": "both"}
    text = json.dumps(spec.as_dict(), sort_keys=True)
    assert FaultSpec.from_dict(json.loads(text)) == spec
    fault = InjectedFault(spec, 1.5, 3.6, True, "", {"stalls": 2})
    assert InjectedFault.from_dict(json.loads(json.dumps(fault.as_dict()))) == fault
    assert FaultSpec("service-kill", 0, 1, subject="redis").subject == "redis"
    assert len({spec, FaultSpec("net-stall", 1.5, 2.0, {"hold_ms": 300.0, "then": "release"})}) == 1


@pytest.mark.parametrize("kind, params, start, duration, subject, message", [
    ("net-slow", {}, 0, 1, "target", "unknown fault kind"),
    ("net-latency", {}, 0, 1, "target", "delay_ms is required"),
    ("net-latency", {"delay_ms": 1, "loss": 3}, 0, 1, "target", "unknown parameter"),
    ("net-reset", {"fraction": 1.5}, 0, 1, "target", "within [0, 1]"),
    ("net-stall", {"hold_ms": 5, "then": "drop"}, 0, 1, "target", "choose from release, reset"),
    ("net-halfclose", {"direction": "sideways"}, 0, 1, "target", "choose from up, down, both"),
    ("net-slice", {"piece_bytes": 0, "gap_ms": 1}, 0, 1, "target", "at least 1"),
    ("target-stop", {}, -1, 1, "target", ">= 0"),
    ("service-kill", {}, 0, 1, "target", "must name a backing service"),
    ("target-stop", {}, 0, 1, "redis", "acts on the target"),
])
def test_bad_specs_are_one_clear_usage_error(kind: str, params: dict, start: float, duration: float,
                                             subject: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        FaultSpec(kind, start, duration, params, subject)


def test_the_netem_probe_answers_and_leaves_no_namespace() -> None:
    import os
    import subprocess

    from probatorium.faults import netem_unavailable

    netem_unavailable.cache_clear()
    reason = netem_unavailable()
    assert reason is None or "netem" in reason
    if subprocess.run(["which", "ip"], capture_output=True).returncode == 0:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"probatorium-netem-probe-{os.getpid()}-" not in names  # ours, deleted
