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
    assert judges.lost_write(tl, durable=False) == {"evaluations": 0, "violations": [], "excused": 1}  # not covered
    tl["faults"] = [fault("target-stop", 1.0, 1.5)]
    assert judges.lost_write(tl, durable=False)["violations"]  # always covered
    tl["faults"] = [fault("service-kill", 1.0, 1.5, subject="memcached")]
    assert not judges.lost_write(tl, durable=True, durable_services=("memcached",))["violations"]


# Recorded on auth_session_ratelimit/uvicorn (seed 0x1daab1d237622d65, target not durable): the
# SIGTERM window, a create whose 201 arrived during it (key 13), and the false alarm of the last
# session: a create sent 4 ms after SIGTERM that uvicorn still answered while shutting down (key 30).
RECORDED = {
    "faults": [fault("target-term", 1.25625, 2.567241), fault("net-slice", 2.885957, 3.651383)],
    "requests": [req("create", 13, 1, 0.944063, 1.476936, 201), req("create", 7, 1, 1.03312, 1.035547, 201),
                 req("create", 30, 1, 1.260251, 1.262904, 201), req("create", 14, 1, 2.71, 2.712, 201),
                 req("verify", 13, sent=5.773289, done=5.774217, status=404, got="absent"),
                 req("verify", 7, sent=5.769092, done=5.770192, status=404, got="absent"),
                 req("verify", 30, sent=5.780001, done=5.781, status=404, got="absent"),
                 req("verify", 14, sent=5.774568, done=5.775358, status=200, got="14:1")],
}


def test_lost_write_excuses_every_write_whose_interval_meets_an_uncovered_window():
    v = judges.lost_write(RECORDED, durable=False)
    # 7 (before), 13 (acked during) and 30 (sent after SIGTERM began) are excused; 14 (after the
    # window) is judged and holds its value
    assert v == {"evaluations": 1, "violations": [], "excused": 3}
    v = judges.lost_write(RECORDED, durable=True)  # declared durable: all three are real lost writes
    assert v["excused"] == 0 and v["evaluations"] == 4
    assert sorted(line.split(":")[0] for line in v["violations"]) == ["key 13", "key 30", "key 7"]
    assert all("target-term" in line for line in v["violations"])
    # a write sent after the uncovered window ended is judged: gone after a net-slice is lost
    tl = {"faults": RECORDED["faults"], "requests": [req("create", 40, 1, 2.6, 2.61, 201),
                                                     req("verify", 40, sent=5.8, got="absent")]}
    assert judges.lost_write(tl, durable=False)["violations"] == [
        "key 40: acknowledged 40:1 (status 201 at 2.610s), read back absent at 5.800s across net-slice"]
    # the edges: a window ending exactly when the write is sent still meets it; an unended one lasts
    assert judges.overlaps(fault("target-kill", 1.0, 2.6), 2.6, 5.8)
    assert not judges.overlaps(fault("target-kill", 1.0, 2.599), 2.6, 5.8)
    assert judges.overlaps(fault("target-kill", 1.0, None), 7.0, 8.0)
    assert not judges.overlaps(fault("target-kill", 5.81, 6.0), 2.6, 5.8)


def test_lost_write_allows_later_unacknowledged_writes_and_deletes():
    reqs = [req("put", 1, 1, 0.0, 0.1, 201), req("put", 1, 2, 0.2, 0.3, None, error="reset"),
            req("verify", 1, sent=5.0, got="1:2")]
    assert judges.lost_write({"requests": reqs, "faults": []}, durable=True) == \
        {"evaluations": 1, "violations": [], "excused": 0}
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


def test_a_producer_key_is_excused_from_its_create_on():
    # Replayed auth_session_ratelimit seed 0x1daab1d237622d65: user 2 created before SIGTERM; after the
    # restart (ids numbered from 1 again) its DELETE answered 404 and its id read another user: garbled
    tl = {"faults": [fault("target-term", 1.25625, 2.567241), fault("net-slice", 2.885957, 3.651383)],
          "requests": [req("create", 2, 1, 0.50, 0.51, 201), req("delete", 2, sent=2.570, done=2.573, status=404),
                       req("verify", 2, sent=5.661, done=5.662, got="garbled")]}
    assert judges.lost_write(tl, durable=False) == {"evaluations": 0, "violations": [], "excused": 1}
    kv = {**tl, "requests": [{**r, "op": "put"} if r["op"] == "create" else r for r in tl["requests"]]}
    assert judges.lost_write(kv, durable=False)["violations"]  # a key/value key names itself: judged


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
