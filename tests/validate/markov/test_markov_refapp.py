"""End to end: the Markov slice against the real auth_session_ratelimit refapp under uvicorn."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from probatorium.targets.launcher import TargetSpec, start_target
from probatorium.validate.tier1.markov.slice import MarkovSlice

ROOT = Path(__file__).resolve().parents[3]
REFAPP = ROOT / "refapps" / "auth_session_ratelimit"

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("markov", ["markov.yaml", None])
def test_markov_against_refapp(tmp_path: Path, markov: str | None) -> None:
    target = start_target(TargetSpec(kind="refapp", refapp="auth_session_ratelimit", engine="uvicorn"), tmp_path)
    try:
        evidence: list = []
        s = MarkovSlice(target.host, target.port, openapi=REFAPP / "openapi.yaml",
                        markov=REFAPP / markov if markov else None, seed=2026, report=evidence.append)

        async def main() -> None:
            deadline = time.monotonic() + (5.0 if markov else 3.0)
            await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(3)))

        asyncio.run(main())
        c = s.counters()
        assert target.alive()
    finally:
        target.stop()
    assert evidence == [], [(e.predicate, e.detail) for e in evidence[:3]]
    assert c["requests"] > 300 and c["2xx"] > 0.9 * c["requests"], c
    assert c["5xx"] == 0 and c["errors"] == 0 and c["internal_errors"] == 0, c
    assert c["logins"] >= 3 and c["captured"] > 20 and c["captured_used"] > 50, c
    assert s.rfc["responses_checked"] == c["requests"] and not s.rfc.get("rfc1_violations")
    ops = s.per_operation()
    for key in ("GET /api/users/{id}", "PUT /api/users/{id}", "GET /api/users/{id}/posts/{post_id}",
                "DELETE /api/users/{id}"):
        assert ops[key]["2xx"] > 0, (key, ops.get(key))
    assert sum(v.get("404", 0) for v in ops.values()) == 0, ops  # captured ids name real resources
    for wid in range(3):
        tr = s.trace(wid)
        assert tr and not any("{" in path or "}" in path for _, path, _ in tr)
