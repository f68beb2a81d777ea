"""The I-CONN-2 reproducer stands alone: it holds streams, drops them and judges the sse_open series."""

from __future__ import annotations

import pytest
from repro_helpers import assert_outcome, free_port, run_repro, server

from probatorium.validate.tier1.sse.runner import sse_repro


def _source(addr: str) -> str:
    return sse_repro(addr=addr, sse_path="/events", debug_path="/debug/vars", settle_window=2.0, streams=8)


@pytest.mark.parametrize("bug", ["sse-leak", "sse-leak-fin"])
def test_leaking_slots_reproduce(tmp_path, bug):
    with server("t1server", bug) as addr:
        assert_outcome(run_repro(tmp_path, _source(addr), addr), 1)


def test_strict_server_does_not_reproduce(tmp_path):
    with server("t1server") as addr:
        assert_outcome(run_repro(tmp_path, _source(addr), addr), 0)


def test_unreachable_target_exits_2(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    assert_outcome(run_repro(tmp_path, _source(addr), addr), 2)
