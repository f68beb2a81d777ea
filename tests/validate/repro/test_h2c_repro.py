"""The h2c reproducer stands alone: recorded bytes re-sent, graded by the embedded h2c grading."""

from __future__ import annotations

import pytest
from repro_helpers import assert_outcome, free_port, run_repro, server

from probatorium.validate.tier1.h2c.cases import CASES, PREFACE, client_settings_frame
from probatorium.validate.tier1.h2c.runner import h2c_repro

CASE = {c.name: c for c in CASES}


def _source(name: str, addr: str) -> str:
    case = CASE[name]
    segments = [case.render(host=addr, path="/echo", nonce="n0")]
    if case.body is not None:
        segments.append(PREFACE + client_settings_frame())
    return h2c_repro(case=case, predicate="I-H2C-CRASHED", detail="test finding", segments=segments, addr=addr,
                     timeout=1.0)


@pytest.mark.parametrize("name,bug", [
    ("valid upgrade, read answer", "h2c-crash"),
    ("HTTP2-Settings not base64url", "h2c-crash-settings"),
    ("valid upgrade with a request body", "h2c-crash-body"),
])
def test_planted_crash_reproduces_and_strict_server_does_not(tmp_path, name, bug):
    with server("t1server", bug) as addr:
        assert_outcome(run_repro(tmp_path, _source(name, addr), addr), 1)
    with server("t1server") as addr:
        assert_outcome(run_repro(tmp_path, _source(name, addr), addr), 0)


def test_unreachable_target_exits_2(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    assert_outcome(run_repro(tmp_path, _source("valid upgrade, read answer", addr), addr), 2)
