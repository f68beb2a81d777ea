"""The WebSocket reproducer stands alone: the connection rebuilt from its seed, graded by frames.py."""

from __future__ import annotations

import pytest
from repro_helpers import assert_outcome, free_port, run_repro, server

from probatorium.validate.tier1.ws import frames as F
from probatorium.validate.tier1.ws.repro import ws_repro


def _source(case: str, predicate: str, addr: str) -> str:
    return ws_repro(case=F.CASES_BY_NAME[case], predicate=predicate, detail="test finding", conn_seed=7,
                    ws_path="/ws", addr=addr, close_timeout=1.0)


@pytest.mark.parametrize("case,predicate,bug", [
    ("invalid UTF-8 text (0xFF)", "I-WS-ACCEPTED", "ws-accept-bad-frame"),
    ("valid close handshake", "I-WS-HANG", "ws-hang-on-close"),
    ("valid close handshake", "I-WS-HANG", "ws-hang-close"),
])
def test_planted_bug_reproduces_and_strict_server_does_not(tmp_path, case, predicate, bug):
    with server("t1server", bug) as addr:
        assert_outcome(run_repro(tmp_path, _source(case, predicate, addr), addr), 1)
    with server("t1server") as addr:
        assert_outcome(run_repro(tmp_path, _source(case, predicate, addr), addr), 0)


def test_unreachable_target_exits_2(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    assert_outcome(run_repro(tmp_path, _source("valid close handshake", "I-WS-HANG", addr), addr), 2)
