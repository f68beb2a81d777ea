"""The Tier 3 judges are pure functions over a timeline."""

from __future__ import annotations

from probatorium.validate.tier3 import judges


def req(op, key, write=0, sent=0.0, done=0.1, status=200, got=None, error=None):
    return {"step": 0, "phase": 0, "conn": 0, "op": op, "key": key, "write": write, "sent": sent, "done": done,
            "status": status, "error": error, "got": got}


def fault(kind, start, end, subject="target", applied=True, **observed):
    return {"phase": 1, "kind": kind, "subject": subject, "start": start, "end": end, "applied": applied,
            "not_applicable": "", "observed": observed}


def test_lost_write_across_covered_and_uncovered_faults():
    tl = {"requests": [req("put", 1, 1, 0.0, 0.1, 201), req("verify", 1, sent=5.0, done=5.1, got="absent")],
          "faults": [fault("target-kill", 1.0, 1.5)]}
    assert judges.lost_write(tl, durable=True)["violations"]
    assert judges.lost_write(tl, durable=False) == {"evaluations": 0, "violations": []}  # not covered
    tl["faults"] = [fault("target-stop", 1.0, 1.5)]
    assert judges.lost_write(tl, durable=False)["violations"]  # always covered
    tl["faults"] = [fault("service-kill", 1.0, 1.5, subject="memcached")]
    assert not judges.lost_write(tl, durable=True, durable_services=("memcached",))["violations"]


def test_lost_write_allows_later_unacknowledged_writes_and_deletes():
    reqs = [req("put", 1, 1, 0.0, 0.1, 201), req("put", 1, 2, 0.2, 0.3, None, error="reset"),
            req("verify", 1, sent=5.0, got="1:2")]
    assert judges.lost_write({"requests": reqs, "faults": []}, durable=True) == {"evaluations": 1, "violations": []}
    reqs = [req("put", 1, 1, 0.0, 0.1, 201), req("delete", 1, sent=0.2, status=204),
            req("verify", 1, sent=5.0, got="1:1")]
    assert judges.lost_write({"requests": reqs, "faults": []}, durable=True)["violations"]  # resurrected
    reqs = [req("put", 1, 1, 0.0, 0.1, None, error="reset"), req("verify", 1, sent=5.0, got="absent")]
    assert judges.lost_write({"requests": reqs, "faults": []}, durable=True)["evaluations"] == 0


def test_no_recovery():
    tl = {"recoveries": [{"phase": 1, "kind": "target-stop", "after": 2.0, "ok": False, "elapsed": 10.0,
                          "detail": "GET /healthz: timeout"}, {"phase": 2, "kind": "net-reset", "after": 3.0,
                                                                "ok": True, "elapsed": 0.01, "detail": ""}]}
    v = judges.no_recovery(tl)
    assert v["evaluations"] == 2 and len(v["violations"]) == 1


def test_5xx_inside_a_window_or_its_grace_is_excused():
    tl = {"requests": [req("get", 1, sent=1.2, done=1.3, status=503), req("get", 1, sent=3.4, done=3.45, status=500),
                       req("get", 1, sent=6.0, done=6.1, status=500)],
          "faults": [fault("target-kill", 1.0, 1.5)]}
    v = judges.server_errors(tl, grace_s=2.0)
    assert v["evaluations"] == 3 and len(v["violations"]) == 1 and "6.100" in v["violations"][0]


def test_drain():
    term = fault("target-term", 2.0, 3.0, killed_after_grace=False)
    ok = {"requests": [req("put", 1, 1, sent=1.7, done=2.3, status=201)], "faults": [term]}
    assert judges.drain(ok) == {"evaluations": 2, "violations": []}
    cut = {"requests": [req("put", 1, 1, sent=1.7, done=2.01, status=None, error="closed")], "faults": [term]}
    assert judges.drain(cut)["violations"]
    young = {"requests": [req("put", 1, 1, sent=1.95, done=2.01, status=None, error="closed")], "faults": [term]}
    assert not judges.drain(young)["violations"]  # sent < 100 ms before SIGTERM
    slow = {"requests": [], "faults": [fault("target-term", 2.0, 9.0, killed_after_grace=True, grace_s=5.0)]}
    assert "outlived" in judges.drain(slow)["violations"][0]


def test_judge_timeline_names_every_predicate():
    v = judges.judge_timeline({}, durable=False)
    assert set(v) == {"I-T3-LOST-WRITE", "I-T3-NO-RECOVERY", "I-T3-5XX", "I-T3-DRAIN"}
    assert judges.failed(v) == []


def test_reads_without_a_usable_answer_inside_the_grace_are_read_again_after_it():
    from probatorium.validate.tier3.runner import to_reread

    def read(step, sent, status, got):
        return {"step": step, "phase": 2, "conn": 9, "op": "verify", "key": step, "write": 0, "sent": sent,
                "done": sent + 0.001, "status": status, "error": None, "got": got}

    faults = [{"kind": "net-latency", "start": 0.5, "end": 1.0, "applied": True},
              {"kind": "target-kill", "start": 1.2, "end": 1.6, "applied": False}]  # not applied: no grace
    reqs = [read(1, 1.7, 500, None), read(2, 1.7, 200, "2:1"), read(3, 1.8, None, None),
            read(4, 1.8, 404, "absent"), {**read(5, 1.9, 500, None), "skipped": True}, read(6, 3.5, 500, None),
            {**read(1, 3.1, 200, "1:1"), "reread": True}]
    until, again = to_reread(reqs, faults, 2.0)
    assert abs(until - 3.05) < 1e-9
    assert [r["step"] for r in again] == [1, 3]  # the 500 and the reset inside the grace; not read 6 after it
    assert to_reread(reqs, [faults[1]], 2.0) == (0.0, [])
    # the read again outside the grace is judged: a 5xx there is I-T3-5XX
    assert judges.server_errors({"requests": [{**read(1, 3.1, 500, None), "reread": True}], "faults": faults[:1]},
                         2.0)["violations"]
