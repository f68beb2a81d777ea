"""The adversarial reproducer stands alone: rendered, sent and judged without probatorium."""

from __future__ import annotations

import pytest
from repro_helpers import assert_outcome, free_port, run_repro, server

from probatorium.validate.tier1.adversarial.cases import CASES
from probatorium.validate.tier1.adversarial.repro import adversarial_repro

CASE = {c.name: c for c in CASES}


def _source(case: str, predicate: str, addr: str) -> str:
    return adversarial_repro(case=CASE[case], predicate=predicate, detail="test finding", echo=True,
                             target="/echo", nonce="n0", addr=addr, quiet=1.0, version="test")


@pytest.mark.parametrize("case,bug", [("space_before_colon_cl", "space-before-colon"), ("cl_plus_sign", "cl-plus")])
def test_planted_bug_reproduces_and_strict_server_does_not(tmp_path, case, bug):
    with server("h1server", bug) as addr:
        assert_outcome(run_repro(tmp_path, _source(case, "I-ADV-ACCEPTED", addr), addr), 1)
    with server("h1server") as addr:
        assert_outcome(run_repro(tmp_path, _source(case, "I-ADV-ACCEPTED", addr), addr), 0)


def test_unreachable_target_exits_2(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    assert_outcome(run_repro(tmp_path, _source("cl_plus_sign", "I-ADV-ACCEPTED", addr), addr), 2)
