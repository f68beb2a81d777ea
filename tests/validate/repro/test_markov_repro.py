"""The Markov reproducer stands alone: it replays the minimal sequence, or the recorded requests,
through the embedded Markov client and judges each response itself (shrink.findings)."""

from __future__ import annotations

import pytest
from repro_helpers import assert_outcome, free_port, run_repro, server

from probatorium.validate.tier1.markov.repro import markov_repro
from probatorium.validate.tier1.markov.shrink import Step

REQUESTS = [b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n", b"GET /nocontent HTTP/1.1\r\nHost: %s\r\n\r\n"]
SEQUENCE = [Step(op="GET /", method="GET", path="/").to_json(),
            Step(op="GET /nocontent", method="GET", path="/nocontent").to_json()]


def _source(addr: str, sequence: list | None) -> str:
    return markov_repro(predicate="I-RFC-1", detail="a 204 with a body", slice_seed=1, walker_id=0, steps=2,
                        requests=[r % addr.encode() for r in REQUESTS], addr=addr, version="test",
                        sequence=sequence, operation="GET /nocontent" if sequence else None,
                        templates=["/", "/nocontent"], shrink="complete (test)")


@pytest.mark.parametrize("sequence", [SEQUENCE, None], ids=["minimal-sequence", "recorded-requests"])
def test_planted_framing_bug_reproduces_and_strict_server_does_not(tmp_path, sequence):
    with server("h1server", "body-on-204") as addr:
        res = run_repro(tmp_path, _source(addr, sequence), addr)
        assert_outcome(res, 1)
        assert "GET /nocontent" in res.stdout
    with server("h1server") as addr:
        assert_outcome(run_repro(tmp_path, _source(addr, sequence), addr), 0)


def test_recorded_requests_are_rehosted_for_another_address(tmp_path):
    with server("h1server", "body-on-204") as addr:
        source = _source("127.0.0.1:1", None)  # recorded against another port: the Host is re-rendered
        assert_outcome(run_repro(tmp_path, source, addr), 1)


def test_unreachable_target_exits_2(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    assert_outcome(run_repro(tmp_path, _source(addr, SEQUENCE), addr), 2)
