"""Markov 5xx feed I-API-5XX: which responses count (pure, over recorded exchanges), one finding per
(operation, status) bucket, shrunk with the x-invariant machinery; the judge names its evidence."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from fakes import result
from test_markov_shrinker import OPS, Archive, walk_planted

from probatorium.validate.invariants import CATALOGUE, Observed, judge_cell
from probatorium.validate.tier1.markov.shrink import Replayer, Step, findings, server_error
from probatorium.validate.tier1.markov.slice import MarkovSlice, Walker
from probatorium.validate.tier1.markov.values import Templates


def test_which_5xx_is_api_5xx_evidence() -> None:
    plain = result("GET", "/x", 500, {"error": "boom"})
    assert server_error(plain) and findings(plain) == ["I-API-5XX"]
    assert server_error(plain, {"500"})  # a declared 500 is still a finding
    tagged = result("GET", "/x", 500, {"x-invariant": "I-MW-SESSION"})
    assert not server_error(tagged) and findings(tagged) == ["I-MW-SESSION"]  # counted once, for its tag
    busy = result("GET", "/x", 503, {"error": "timeout"})
    assert server_error(busy) and not server_error(busy, {"200", "503"})  # declared by design
    assert server_error(result("GET", "/x", 502), {"503"})  # another status declared: still a finding
    assert not server_error(result("GET", "/x", 404)) and findings(result("GET", "/x", 200, {})) == []


def _slice(ops=OPS, **kw) -> tuple[MarkovSlice, Walker, list]:
    evidence: list = []
    s = MarkovSlice("127.0.0.1", 1, openapi=ops, markov=None, seed=5, report=evidence.append, **kw)
    return s, Walker(s, 0), evidence


def test_record_buckets_by_operation_and_status_and_excepts_by_design() -> None:
    ping = next(o for o in OPS if o.key == "GET /ping")
    ops = [dataclasses.replace(ping, responses=("200", "503")) if o is ping else o for o in OPS]
    s, w, _ = _slice(ops)
    seen = []
    for op_key, res in [("DELETE /items/{id}", result("DELETE", "/items/3", 500, {"error": "boom"})),
                        ("DELETE /items/{id}", result("DELETE", "/items/4", 500, {"error": "boom"})),
                        ("DELETE /items/{id}", result("DELETE", "/items/4", 502)),
                        ("GET /ping", result("GET", "/ping", 503, {"error": "busy"})),  # declared: by design
                        ("GET /items", result("GET", "/items", 503)),  # not declared there
                        ("PATCH /items/{id}", result("PATCH", "/items/4", 501)),  # undeclared method: RFC 9110
                        ("PUT /items/{id}", result("PUT", "/items/4", 500, {"x-invariant": "I-TEST-ARCHIVED"})),
                        ("GET /items", result("GET", "/items", 200, []))]:
        found = s._record(w, op_key, res)
        seen += [(p, case) for p, _, case, _ in found]
        for p, _, case, _ in found:  # as _report_findings does
            if p == "I-API-5XX":
                s.reported_5xx.add(case)
    assert seen == [("I-API-5XX", "markov DELETE /items/{id} 500"), ("I-API-5XX", "markov DELETE /items/{id} 502"),
                    ("I-API-5XX", "markov GET /items 503"), ("I-TEST-ARCHIVED", "markov PUT /items/{id}")]
    c = s.counters()
    assert (c["api5xx_checked"], c["api5xx_findings"], c["api5xx_excepted"]) == (7, 4, 2), c
    assert s.per_operation()["DELETE /items/{id}"]["api5xx"] == 3
    # The finding names the operation, the status and the walk's seed.
    _, detail, _, more = s._record(w, "GET /ping", result("GET", "/ping", 500))[0]
    assert more == {"operation": "GET /ping", "status": 500}
    assert detail == f"GET /ping answered 500 (markov walker 0, seed 0x{w.seed:016x})"
    _, detail, _, _ = s._record(w, "DELETE /items/{id}", result("DELETE", "/items/9", 504))[0]
    assert detail.startswith("DELETE /items/{id} answered 504 to DELETE /items/9 (markov walker 0, seed 0x")


class DeleteArchived(Archive):
    """Deleting an archived item answers a plain 500 (no x-invariant): I-API-5XX, three steps deep
    (updating one is fine here)."""

    def handle(self, method, target, headers, body):
        user = self.tokens.get(dict(headers).get("Authorization", "")[7:])
        m = self.ITEM.match(target)
        it = self.items.get(user, {}).get(int(m.group(1))) if user is not None and m else None
        if it is not None and it["archived"] and method in ("DELETE", "PUT"):
            self.requests += 1
            return result(method, target, 500, {"error": "internal"}) if method == "DELETE" else result(
                method, target, 200, it)
        return super().handle(method, target, headers, body)


def test_walker_5xx_is_shrunk_and_reproduced_as_its_bucket() -> None:
    s, evidence = walk_planted(3, DeleteArchived())
    assert [(e.predicate, e.case) for e in evidence] == [("I-API-5XX", "markov DELETE /items/{id} 500")]
    ev = evidence[0]
    assert ev.extra["operation"] == "DELETE /items/{id}" and ev.extra["status"] == 500 and ev.seed == s.walkers[0].seed
    rep = ev.extra["reproducer"]
    assert rep["reproduced"] and rep["shrink"].startswith("complete"), rep["shrink"]
    assert [x["op"] for x in rep["sequence"]] == ["POST /items", "POST /items/{id}/archive", "DELETE /items/{id}"]
    assert '"status": 500' in ev.repro and "answered 500" in ev.repro
    assert s.counters()["api5xx_findings"] == 1 and s.counters()["shrinks"] == 1
    json.dumps(ev.extra)
    # The replay matches the bucket's status: the same sequence on a target answering 503 does not count.
    seq = [Step.from_json(x) for x in rep["sequence"]]

    class Busy(DeleteArchived):
        def handle(self, method, target, headers, body):
            res = super().handle(method, target, headers, body)
            return result(method, target, 503, {"error": "busy"}) if res.status == 500 else res

    for app, want in ((DeleteArchived(first_id=900), 2), (Busy(first_id=900), None)):
        r = Replayer(app.connection, Templates(["/items/{id}", "/items/{id}/archive"]), ("POST", "/login"),
                     lambda n: ("u", "p"))
        out = asyncio.run(r.replay(seq, "I-API-5XX", "DELETE /items/{id}", 500))
        assert out.failed_at == want, out.lines


def test_judge_decides_from_tier_2_and_or_markov_and_names_the_evidence() -> None:
    judge = CATALOGUE["I-API-5XX"].decide
    assert judge(Observed()) is None  # neither tier ran: does not apply
    mk = {"api5xx_checked": 40, "api5xx_findings": 2}
    res = judge(Observed(tallies={"markov": mk}))
    assert res.status == "failed" and res.evaluations == 40 and res.reason.startswith("evidence: markov (40 response(s), 2 5xx)"), res
    clean = judge(Observed(tallies={"markov": {**mk, "api5xx_findings": 0}},
                           evidence={"tier_2": {"checked_I-API-5XX": 9, "findings_I-API-5XX": 0}}))
    assert clean.status == "passed" and clean.evaluations == 49
    assert clean.reason == ("evidence: tier 2 (9 exchange(s), 0 confirmed finding(s)), "
                            "markov (40 response(s), 0 5xx)")
    t2_only = judge(Observed(tallies={"markov": {}}, evidence={"tier_2": {"checked_I-API-5XX": 3,
                                                                          "findings_I-API-5XX": 1}}))
    assert t2_only.status == "failed" and "markov (none: no Markov request was answered)" in t2_only.reason
    empty = judge(Observed(tallies={"markov": {"api5xx_checked": 0}}, reasons={"markov": "target refused"},
                           evidence={"tier_2": {}}))
    assert empty.status == "not_judged" and empty.reason == (
        "tier 2: no Tier 2 request was answered; markov: target refused"), empty
    # An incident keeps the property failed whatever the counters say.
    props = judge_cell(Observed(tallies={"markov": {"api5xx_checked": 5}}), {"I-API-5XX": "GET /x answered 500"})
    assert props["I-API-5XX"].status == "failed"


def test_a_login_5xx_is_reported_unshrunk_and_its_raw_repro_matches_the_status(tmp_path) -> None:
    import subprocess
    import sys
    import time

    from servers import Server, response

    def app(status: int):
        def handler(method, target, headers, body):
            if target == "/login":
                return response(status, b'{"error": "db down"}', "application/json"), False
            return response(401, b"{}", "application/json"), False
        return handler

    async def walk() -> list:
        async with Server(app(500)) as srv:
            s, _, evidence = _slice(max_steps=2)
            s.host, s.port = "127.0.0.1", srv.port
            await s.walker(0, time.monotonic() + 10, lambda: False)
        assert s.counters()["api5xx_findings"] == 2 and s.counters()["login_failures"] == 2
        return evidence

    evidence = asyncio.run(walk())
    assert [(e.predicate, e.case) for e in evidence] == [("I-API-5XX", "markov POST /login 500")]
    assert evidence[0].extra["reproducer"]["shrink"].startswith("not shrunk: not a Markov step")
    script = tmp_path / "repro.py"
    script.write_text(evidence[0].repro)

    async def repro(status: int) -> tuple[int, str]:
        async with Server(app(status)) as srv:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(script), f"127.0.0.1:{srv.port}",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            return proc.returncode, out.decode()

    rc, out = asyncio.run(repro(500))
    assert rc == 1 and out.strip().endswith("REPRODUCED"), out
    rc, out = asyncio.run(repro(503))  # another 5xx is another bucket
    assert rc == 0 and out.strip().endswith("NOT REPRODUCED"), out
