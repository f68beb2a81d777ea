"""Unit tests for the adversarial verdict rules: hand-written response bytes in, verdict out.

Echo records follow the SPEC.md §3 contract: 200 JSON {"method", "target", "http_version",
"headers": [[name, value], ...], "body_length", "body_sha256"}, the target carrying `adv=<nonce>`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from probatorium.validate.tier1.adversarial.cases import CASES
from probatorium.validate.tier1.adversarial.catalogue import Case, render
from probatorium.validate.tier1.adversarial.verdict import (
    PARSER_REJECT_STATUSES,
    VERDICTS,
    Outcome,
    echo_nonce,
    echo_record,
    judge,
    outcome_violations,
)
from probatorium.validate.tier1.http1 import RFC1, parse_response_stream

BY_NAME = {c.name: c for c in CASES}
ECHO_PATH, HOST, NONCE = "/echo", "127.0.0.1:8080", "w1-5"


def case(name: str) -> Case:
    return BY_NAME[name]


def response(status: int, body: bytes = b"", *fields: str, reason: str = "X") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *fields, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def echo(suffix: str = "", *, status: int = 200, method: str = "GET", headers=(("Host", HOST),),
         body: bytes | None = b"", body_length: int | None = None, sha: str | None = None,
         target: str | None = None, fields: tuple[str, ...] = ()) -> bytes:
    """A response whose body is the echo route's record of the request carrying nonce+suffix."""
    body = body or b""
    record = {
        "method": method,
        "target": target if target is not None else f"{ECHO_PATH}?adv={NONCE}{suffix}",
        "http_version": "1.1",
        "headers": [list(h) for h in headers],
        "body_length": len(body) if body_length is None else body_length,
        "body_sha256": hashlib.sha256(body).hexdigest() if sha is None else sha,
    }
    return response(status, json.dumps(record).encode(), "Content-Type: application/json", *fields)


def run(c: Case | str, received: bytes, *, closed: bool = True, echo_mode: bool = True, timed_out: bool = False,
        connect_error: str | None = None, target_alive: bool = True, target: str | None = None):
    c = case(c) if isinstance(c, str) else c
    rendered = render(c, target=target or (ECHO_PATH if echo_mode else "/"), host=HOST, nonce=NONCE, echo=echo_mode)
    outcome = Outcome(received, closed=closed, timed_out=timed_out, connect_error=connect_error,
                      target_alive=target_alive)
    return judge(c, rendered, outcome, echo=echo_mode)


BAD = response(400, b"bad request", "Connection: close")
BAD_OPEN = response(400, b"bad request")


def synthetic(**kw) -> Case:
    base = dict(name="synthetic", group="test", clause="RFC 9112 §0", level="MUST", expect="reject",
                template="GET $T HTTP/1.1\r\nHost: $H\r\n\r\n")
    base.update(kw)
    return Case(**base)


# =====================================================================================
# Basic expectations
# =====================================================================================


def test_accepted_must_reject_is_wrong_accepted():
    v = run("space_before_colon", echo())
    assert v.verdict == "wrong_accepted" and "MUST be rejected" in v.reason
    assert v.echo_seen == [NONCE]


@pytest.mark.parametrize("name", ["empty_field_name", "http_version_lowercase"])  # SHOULD
def test_accepted_should_reject_is_lenient(name):
    assert case(name).level == "SHOULD"
    v = run(name, echo())
    assert v.verdict == "lenient_accepted" and "SHOULD" in v.reason


@pytest.mark.parametrize("name", ["chunk_ext_nul", "chunk_ext_bare_lf", "chunk_size_bare_lf", "chunk_data_bare_lf"])
def test_unambiguous_bad_chunk_line_accepted_intact_is_lenient(name):
    """RFC 9112 §2.2 SHOULD: body intact and the next request well framed is no MUST violation."""
    got = echo(method="POST", body=b"hello") + echo("-s")
    v = run(name, got, closed=False)
    assert v.verdict == "lenient_accepted" and "SHOULD" in v.reason


@pytest.mark.parametrize("name", ["chunk_ext_nul", "chunk_size_bare_lf"])
def test_unambiguous_bad_chunk_line_misframed_is_still_wrong(name):
    v = run(name, echo(method="POST", body=b"hel"))
    assert v.verdict == "wrong_accepted" and "misframed" in v.reason


@pytest.mark.parametrize("name", ["ctl_in_value", "del_in_value"])  # RFC 9110 §5.5: MAY retain other CTLs
def test_accepted_other_ctl_is_lenient(name):
    assert case(name).level == "MAY"
    v = run(name, echo())
    assert v.verdict == "lenient_accepted" and "MAY" in v.reason


def test_accepted_may_reject_is_lenient():
    assert case("bare_lf_line_endings").level == "MAY"
    v = run("bare_lf_line_endings", echo())
    assert v.verdict == "lenient_accepted" and "MAY" in v.reason


@pytest.mark.parametrize("status", [400, 431, 505])
def test_rejection_status_is_well_rejected(status):
    v = run("space_before_colon", response(status, b"no"))
    assert v.verdict == "well_rejected" and str(status) in v.reason
    assert v.continued_after_reject is False


def test_closed_without_response_is_well_rejected():
    v = run("space_before_colon", b"", closed=True)
    assert (v.verdict, v.reason) == ("well_rejected", "closed without a response")


def test_no_response_and_not_closed_is_a_hang():
    v = run("space_before_colon", b"", closed=False, timed_out=True)
    assert v.verdict == "hang_until_timeout"


def test_interim_only_and_not_closed_is_a_hang():
    v = run("expect_100_continue", b"HTTP/1.1 100 Continue\r\n\r\n", closed=False, timed_out=True)
    assert v.verdict == "hang_until_timeout"


def test_wait_ok_case_waiting_is_awaited():
    for name in ("cl_overflow_2_64", "chunk_size_overflow"):
        assert case(name).wait_ok
        v = run(name, b"", closed=False, timed_out=True)
        assert v.verdict == "awaited", name


def test_wait_ok_case_that_accepts_is_still_wrong():
    # 2**64+5 wrapped to 5: the body "hello" framed, the follow-up run -> MUST violations
    v = run("cl_overflow_2_64", echo(method="POST", body=b"hello") + echo("-s"), closed=True)
    assert v.verdict == "wrong_accepted"


def test_dead_target_is_a_crash():
    v = run("valid_get", b"", closed=True, target_alive=False)
    assert v.verdict == "crash"


def test_connect_error_is_conn_error():
    v = run("valid_get", b"", connect_error="ECONNREFUSED")
    assert (v.verdict, v.reason) == ("conn_error", "ECONNREFUSED")


def test_connect_error_wins_over_dead_target():
    assert run("valid_get", b"", connect_error="refused", target_alive=False).verdict == "conn_error"


def test_valid_request_served():
    v = run("valid_get", echo())
    assert (v.verdict, v.violations) == ("served_ok", [])


def test_valid_request_refused_is_refused_valid():
    v = run("valid_get", response(400))
    assert v.verdict == "refused_valid" and "400" in v.reason


def test_valid_request_closed_without_response_is_refused_valid():
    assert run("valid_get", b"", closed=True).verdict == "refused_valid"


def test_either_refused_is_well_rejected():
    v = run("cl_te_smuggle", BAD, closed=True)
    assert v.verdict == "well_rejected"


def test_either_served_right_is_served_ok():
    # framed by Transfer-Encoding alone (empty body), connection closed, follow-up not run
    v = run("cl_te_smuggle", echo(method="POST", body=b"", fields=("Connection: close",)), closed=True)
    assert v.verdict == "served_ok"


# =====================================================================================
# Echo record evidence
# =====================================================================================


def test_4xx_with_echo_record_of_primary_is_accepted():
    # the handler ran and answered 404/422: the request reached the application
    v = run("space_before_colon", echo(status=404))
    assert v.verdict == "wrong_accepted"
    assert run("valid_get", echo(status=422)).verdict == "served_ok"


def test_400_with_echo_record_of_primary_is_accepted():
    assert run("space_before_colon", echo(status=400)).verdict == "wrong_accepted"


def test_5xx_without_echo_record_is_not_accepted():
    # not accepted, and not a rejection either: a 5xx for a client's error is server_error (issue 12 item 8)
    assert run("space_before_colon", response(500, b"Internal Server Error")).verdict == "server_error"
    assert run("valid_get", response(503, b"busy")).verdict == "refused_valid"


def test_non_rejection_status_without_echo_record_is_accepted():
    # no record but a status no parser rejects with: the request was routed
    assert run("space_before_colon", response(404, b"not found")).verdict == "wrong_accepted"
    assert run("ctl_in_value", response(200, b"plain")).verdict == "lenient_accepted"


def test_echo_record_of_another_nonce_is_not_the_primary():
    v = run("valid_get", echo("-u"))
    assert v.verdict == "refused_valid"
    assert v.echo_seen == [f"{NONCE}-u"]


def test_echo_record_helpers():
    rec = echo_record(parse_response_stream(echo("-s"), ["GET"]).responses[0])
    assert rec is not None and echo_nonce(rec) == f"{NONCE}-s"
    assert echo_record(parse_response_stream(response(200, b'{"a": 1}')).responses[0]) is None
    assert echo_record(parse_response_stream(response(200, b"{not json")).responses[0]) is None
    assert echo_nonce({"target": f"http://{HOST}/echo?x=1&adv={NONCE}#f"}) == NONCE
    assert echo_nonce({"target": "/echo?adv=n1&x y"}) == "n1"
    assert echo_nonce({"target": "/echo"}) is None


def test_absolute_form_target_in_record_is_understood():
    v = run("absolute_form_other_host", echo(target=f"http://{HOST}{ECHO_PATH}?adv={NONCE}"))
    assert v.verdict == "served_ok"


# =====================================================================================
# MUST-level rules that apply whatever the expectation
# =====================================================================================


def test_inner_smuggled_request_executed_is_wrong_even_after_a_400():
    c = case("space_before_colon_cl")
    assert c.inner
    v = run(c, BAD_OPEN + echo("-s"), closed=True)
    assert v.verdict == "wrong_accepted" and "smuggled" in v.reason
    assert f"{NONCE}-s" in v.echo_seen


def test_inner_case_rejected_without_smuggling_is_well_rejected():
    assert run("space_before_colon_cl", BAD, closed=True).verdict == "well_rejected"


def test_get_with_body_ignored_runs_the_body_as_a_request():
    # the server ignored Content-Length on GET: empty body seen, then the body executed as a request
    v = run("get_with_body_cl", echo(body=b"") + echo("-s"), closed=False)
    assert v.verdict == "wrong_accepted" and "smuggled" in v.reason


def test_get_with_body_framed_right_is_served_ok():
    r = render(case("get_with_body_cl"), target=ECHO_PATH, host=HOST, nonce=NONCE, echo=True)
    assert run("get_with_body_cl", echo(body=r.body), closed=False).verdict == "served_ok"


def test_close_case_follow_up_executed_is_wrong():
    c = case("connection_close_then_pipelined")
    assert c.close and c.expect == "serve"
    v = run(c, echo() + echo("-s"), closed=True)
    assert v.verdict == "wrong_accepted" and "after one that requires closing" in v.reason


def test_close_case_served_but_left_open_is_wrong():
    v = run("connection_close_then_pipelined", echo(), closed=False, timed_out=True)
    assert v.verdict == "wrong_accepted" and "kept the connection open" in v.reason


def test_close_case_served_and_closed_is_served_ok():
    assert run("connection_close_then_pipelined", echo(fields=("Connection: close",)), closed=True).verdict == "served_ok"


def test_close_case_rejected_but_left_open_is_wrong():
    v = run("cl_plus_sign", BAD_OPEN, closed=False, timed_out=True)
    assert v.verdict == "wrong_accepted" and "kept the connection open" in v.reason


def test_close_case_rejected_and_closed_is_well_rejected():
    v = run("cl_plus_sign", BAD, closed=True)
    assert v.verdict == "well_rejected" and v.continued_after_reject is False


def test_close_case_rejected_then_follow_up_served_is_wrong():
    v = run("cl_plus_sign", BAD_OPEN + echo("-s"), closed=True)
    assert v.verdict == "wrong_accepted"


def test_te_cl_smuggle_framed_by_content_length_is_wrong():
    # A CL-framing server reads the chunk-size line as the body and runs the chunk as a request.
    r = render(case("te_cl_smuggle"), target=ECHO_PATH, host=HOST, nonce=NONCE, echo=True)
    size_line = r.data.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0] + b"\r\n"
    v = run("te_cl_smuggle", echo(method="POST", body=size_line) + echo("-s") + BAD, closed=True)
    assert v.verdict == "wrong_accepted"


def test_te_cl_smuggle_framed_by_transfer_encoding_is_served_ok():
    r = render(case("te_cl_smuggle"), target=ECHO_PATH, host=HOST, nonce=NONCE, echo=True)
    v = run("te_cl_smuggle", echo(method="POST", body=r.body, fields=("Connection: close",)), closed=True)
    assert v.verdict == "served_ok"


def test_no_interim_case_with_100_continue_is_wrong():
    c = case("expect_100_continue_http10")
    assert c.no_interim
    hundred = b"HTTP/1.1 100 Continue\r\n\r\n"
    v = run(c, hundred + echo(method="POST", body=b"hello"), closed=False)
    assert v.verdict == "wrong_accepted" and "100 Continue" in v.reason
    assert run(c, echo(method="POST", body=b"hello"), closed=False).verdict == "served_ok"


def test_100_continue_is_fine_where_allowed():
    hundred = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert run("expect_100_continue", hundred + echo(method="POST", body=b"hello"), closed=False).verdict == "served_ok"


def test_no_upgrade_case_with_101_is_wrong():
    c = case("upgrade_websocket_on_post")
    assert c.no_upgrade
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    v = run(c, switch, closed=False, timed_out=True)
    assert v.verdict == "wrong_accepted" and "switched protocols" in v.reason
    assert run(c, echo(method="POST", body=b"hello"), closed=False).verdict == "served_ok"


# =====================================================================================
# What the application received
# =====================================================================================


def test_served_with_wrong_body_length_is_misframed():
    v = run("valid_post_cl", echo(method="POST", body=b"hello"))
    assert v.verdict == "wrong_accepted" and "misframed" in v.reason


def test_served_with_wrong_body_sha_is_misframed():
    v = run("valid_post_cl", echo(method="POST", body=b"hello world", sha="0" * 64))
    assert v.verdict == "wrong_accepted" and "misframed" in v.reason


def test_served_with_right_body_is_served_ok():
    assert run("valid_post_cl", echo(method="POST", body=b"hello world")).verdict == "served_ok"
    assert run("valid_post_chunked", echo(method="POST", body=b"hello world")).verdict == "served_ok"


def test_record_without_sha_is_judged_on_length():
    def record(length: int) -> bytes:
        return response(200, json.dumps({"method": "POST", "target": f"{ECHO_PATH}?adv={NONCE}", "headers": [],
                                         "body_length": length}).encode())
    assert run("valid_post_cl", record(11)).verdict == "served_ok"
    assert run("valid_post_cl", record(10)).verdict == "wrong_accepted"


def test_head_record_is_not_judged_on_body():
    assert run("valid_post_cl", echo(method="HEAD", body=b"")).verdict == "served_ok"


def test_head_response_without_body_is_served_ok():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 321\r\nContent-Type: application/json\r\n\r\n"
    assert run("valid_head", head, closed=False).verdict == "served_ok"
    v = run("valid_head_then_get", head + echo("-s"), closed=False)
    assert (v.verdict, v.violations) == ("served_ok", [])


@pytest.mark.parametrize(("name", "value"), [("nul_in_value", "a\x00b"), ("bare_cr_in_value", "a\rb"),
                                             ("bare_cr_before_crlf", "ab\r"), ("obs_fold_value", "a\r\n b")])
def test_sanitize_case_with_ctl_in_app_value_is_wrong(name, value):
    assert case(name).sanitize
    v = run(name, echo(headers=(("Host", HOST), ("X-Adv", value))))
    assert v.verdict == "wrong_accepted" and "CR/LF/NUL" in v.reason


@pytest.mark.parametrize(("name", "value"), [("nul_in_value", "a b"), ("bare_cr_in_value", "a b"),
                                             ("obs_fold_value", "a b")])
def test_sanitize_case_with_clean_value_is_served_ok(name, value):
    assert run(name, echo(headers=(("Host", HOST), ("X-Adv", value)))).verdict == "served_ok"


def test_sanitize_case_rejected_is_well_rejected():
    assert run("nul_in_value", response(400)).verdict == "well_rejected"


def test_forbidden_header_seen_by_the_app_is_wrong():
    c = case("obs_fold_first_field")
    assert c.forbid_headers == ("x-adv-ws",)
    v = run(c, echo(headers=(("Host", HOST), ("X-Adv-Ws", "b"))))
    assert v.verdict == "wrong_accepted" and "x-adv-ws" in v.reason.lower()
    assert run(c, echo(headers=(("Host", HOST),))).verdict == "served_ok"


def test_ctl_in_value_without_sanitize_flag_is_not_checked():
    c = synthetic(expect="serve", body="")
    assert run(c, echo(headers=(("X-A", "a\x00b"),))).verdict == "served_ok"
    assert run(replace(c, sanitize=True), echo(headers=(("X-A", "a\x00b"),))).verdict == "wrong_accepted"


def test_malformed_header_items_in_record_are_ignored():
    c = synthetic(expect="serve", sanitize=True, body="")
    body = json.dumps({"method": "GET", "target": f"/echo?adv={NONCE}", "headers": [["only-one"], "str", ["X", "ok"]],
                       "body_length": 0}).encode()
    assert run(c, response(200, body)).verdict == "served_ok"


# =====================================================================================
# Status-only mode (no echo route)
# =====================================================================================


@pytest.mark.parametrize("status", [200, 204, 301, 404, 405])
def test_status_mode_non_rejection_is_accepted(status):
    assert status not in PARSER_REJECT_STATUSES
    body = b"" if status == 204 else b"x"
    v = run("space_before_colon", response(status, body), echo_mode=False)
    assert v.verdict == "wrong_accepted"
    assert run("valid_get", response(status, body), echo_mode=False).verdict == "served_ok"


@pytest.mark.parametrize("status", [400, 408, 413, 414, 431, 501, 505, 500, 502])
def test_status_mode_rejection_statuses(status):
    want = "server_error" if status in (500, 502) else "well_rejected"  # 501/505 name the client's request
    assert run("space_before_colon", response(status), echo_mode=False).verdict == want
    assert run("valid_get", response(status), echo_mode=False).verdict == "refused_valid"


def test_status_mode_inner_case_with_two_responses_is_wrong():
    v = run("space_before_colon_cl", response(400) + response(200, b"ok"), echo_mode=False, closed=True)
    assert v.verdict == "wrong_accepted" and "smuggled" in v.reason


def test_status_mode_inner_case_with_one_response_is_judged_by_status():
    assert run("space_before_colon_cl", BAD, echo_mode=False).verdict == "well_rejected"
    assert run("space_before_colon_cl", response(200, b"ok"), echo_mode=False).verdict == "wrong_accepted"


def test_status_mode_close_case_with_second_response_is_wrong():
    v = run("connection_close_then_pipelined", response(200, b"a") + response(200, b"b"), echo_mode=False)
    assert v.verdict == "wrong_accepted"


def test_status_mode_pipeline_served():
    three = response(200, b"a") * 3
    assert run("valid_pipeline_three", three, echo_mode=False, closed=False).verdict == "served_ok"


def test_status_mode_ignores_body_checks():
    # no record, so a wrong body cannot be seen: a 200 is served_ok
    assert run("valid_post_cl", response(200, b"whatever"), echo_mode=False).verdict == "served_ok"


# =====================================================================================
# continued_after_reject
# =====================================================================================


def test_continued_after_reject_echo():
    c = case("pipelined_after_bad_header")
    assert not c.close and c.expect == "reject"
    v = run(c, BAD_OPEN + echo("-s"), closed=False)
    assert v.verdict == "well_rejected" and v.continued_after_reject is True
    assert run(c, BAD, closed=True).continued_after_reject is False


def test_continued_after_reject_status_mode():
    c = case("pipelined_after_bad_header")
    v = run(c, BAD_OPEN + response(200, b"ok"), echo_mode=False, closed=False)
    assert v.verdict == "well_rejected" and v.continued_after_reject is True


def test_continued_after_reject_on_either_case():
    c = case("te_chunked_empty_list_element")
    assert not c.close and c.expect == "either"
    v = run(c, BAD_OPEN + echo("-s"), closed=False)
    assert v.verdict == "well_rejected" and v.continued_after_reject is True


def test_valid_follow_up_is_not_continued_after_reject():
    v = run("valid_pipeline_post_get", echo(method="POST", body=b"abc") + echo("-s"), closed=False)
    assert v.verdict == "served_ok" and v.continued_after_reject is False


# =====================================================================================
# Framing violations travel with the verdict
# =====================================================================================


def test_framing_violations_are_attached():
    bad_framing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"
    v = run("valid_get", bad_framing, echo_mode=False)
    assert v.verdict == "served_ok"
    assert [x.predicate for x in v.violations] == [RFC1]
    assert outcome_violations(bad_framing, ["GET"], True) == v.violations


def test_head_method_from_case_drives_response_framing():
    # the HEAD response announces a body it must not send; the next bytes are the GET's response
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + response(200, b"hello")
    assert run("valid_head_then_get", data, echo_mode=False, closed=False).violations == []


def test_verdict_names_are_the_published_ones():
    assert set(VERDICTS) >= {"crash", "wrong_accepted", "hang_until_timeout", "lenient_accepted", "well_rejected",
                             "served_ok", "refused_valid", "awaited", "conn_error"}


# =====================================================================================
# Bugs / questionable rules (fixed; kept as regression tests)
# =====================================================================================


def test_h2c_upgrade_101_is_accepted():
    switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    v = run("upgrade_h2c_with_body", switch + settings_frame, closed=False, timed_out=True)
    assert v.verdict == "served_ok"


def test_close_case_second_rejection_is_wrong_in_echo_mode_too():
    assert run("cl_plus_sign", BAD_OPEN + BAD_OPEN, closed=True, echo_mode=False).verdict == "wrong_accepted"
    assert run("cl_plus_sign", BAD_OPEN + BAD_OPEN, closed=True, echo_mode=True).verdict == "wrong_accepted"
