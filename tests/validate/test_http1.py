"""Unit tests for the sans-IO response-stream parser (I-RFC-1 framing, I-RFC-2 header injection).

Plain bytes in, StreamParse out: no sockets. Every rule of parse_response_stream has
a test here; the hypothesis property at the end checks that well-formed streams parse
back exactly and that no prefix of one (eof=False) is ever reported as a violation.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probatorium.validate.tier1.http1 import RFC1, RFC2, StreamParse, parse_response_stream

CRLF = b"\r\n"


def parse(data: bytes, methods: list[str] | None = None, eof: bool = True) -> StreamParse:
    return parse_response_stream(data, methods, eof=eof)


def preds(out: StreamParse) -> list[str]:
    return [v.predicate for v in out.violations]


def details(out: StreamParse) -> str:
    return " | ".join(v.detail for v in out.violations)


def head(status: str = "200 OK", *fields: str, version: str = "HTTP/1.1") -> bytes:
    """A response head: status line, field lines, blank line."""
    return (f"{version} {status}\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n").encode("latin-1")


def cl_response(body: bytes = b"hello", status: str = "200 OK", *fields: str) -> bytes:
    return head(status, f"Content-Length: {len(body)}", *fields) + body


# =====================================================================================
# Valid streams
# =====================================================================================


def test_content_length_response():
    out = parse(cl_response(b"hello", "200 OK", "X-A: 1"), ["GET"])
    assert out.violations == []
    [r] = out.responses
    assert (r.version, r.status, r.reason, r.body, r.framing, r.complete) == ("1.1", 200, b"OK", b"hello", "content-length", True)
    assert r.header(b"x-a") == b"1" and r.header(b"X-Missing") is None
    assert out.incomplete == b"" and out.trailing_garbage == b"" and not out.upgraded


def test_content_length_zero_and_ows_around_value():
    out = parse(head("200 OK", "Content-Length: \t0 \t") + cl_response(b"ab"), ["GET", "GET"])
    assert out.violations == []
    assert [r.body for r in out.responses] == [b"", b"ab"]


def test_status_line_without_reason_phrase_is_accepted():
    # RFC 9112 §4: a recipient SHOULD accept a status-line without the SP before an empty reason.
    out = parse(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 \r\n\r\n", ["GET", "GET"])
    assert out.violations == []
    assert [(r.status, r.reason) for r in out.responses] == [(200, b""), (204, b"")]


def test_reason_phrase_with_htab_and_obs_text():
    out = parse(b"HTTP/1.1 200 O\tK \xe9\r\nContent-Length: 0\r\n\r\n")
    assert out.violations == []
    assert out.responses[0].reason == b"O\tK \xe9"


def test_chunked_with_extensions_and_trailers():
    body = (
        b"5;name=value\r\nhello\r\n"
        b"1 ; a ; b = \"q;\\\"x\"\r\n \r\n"
        b"5\t;flag\r\nworld\r\n"
        b"0;last=1\r\nX-Trailer: t1\r\nX-Other:  t2 \r\n\r\n"
    )
    out = parse(head("200 OK", "Transfer-Encoding: chunked") + body + cl_response(b"next"), ["GET", "GET"])
    assert out.violations == [], details(out)
    first, second = out.responses
    assert (first.framing, first.body, first.complete) == ("chunked", b"hello world", True)
    assert (second.framing, second.body) == ("content-length", b"next")


def test_chunked_uppercase_hex_and_transfer_coding_list():
    out = parse(head("200 OK", "Transfer-Encoding: gzip", "Transfer-Encoding: CHUNKED") + b"A\r\n0123456789\r\n0\r\n\r\n")
    assert out.violations == []
    assert out.responses[0].framing == "chunked" and out.responses[0].body == b"0123456789"


def test_close_delimited_response():
    out = parse(head("200 OK", "Connection: close") + b"everything until FIN", ["GET"], eof=True)
    assert out.violations == []
    [r] = out.responses
    assert (r.framing, r.body, r.complete) == ("close", b"everything until FIN", True)


def test_close_delimited_without_eof_is_not_complete_and_not_a_violation():
    out = parse(head("200 OK") + b"partial", ["GET"], eof=False)
    assert out.violations == []
    assert out.responses[0].framing == "close" and out.responses[0].complete is False


def test_te_not_ending_in_chunked_is_close_delimited():
    # RFC 9112 §6.3 (4): in a response, read until the server closes.
    out = parse(head("200 OK", "Transfer-Encoding: gzip") + b"\x1f\x8b...", eof=True)
    assert out.violations == []
    assert out.responses[0].framing == "close" and out.responses[0].body == b"\x1f\x8b..."


def test_head_response_with_content_length_but_no_body_then_next_response():
    # RFC 9110 §9.3.2 / RFC 9112 §6.3 (1): a HEAD response never has content.
    data = head("200 OK", "Content-Length: 1234") + cl_response(b"abc")
    out = parse(data, ["HEAD", "GET"])
    assert out.violations == []
    first, second = out.responses
    assert (first.status, first.framing, first.body) == (200, "none", b"")
    assert (second.framing, second.body) == ("content-length", b"abc")


def test_head_response_with_transfer_encoding_has_no_body():
    out = parse(head("200 OK", "Transfer-Encoding: chunked") + cl_response(b"x"), ["HEAD", "GET"])
    assert out.violations == []
    assert [r.body for r in out.responses] == [b"", b"x"]


def test_interim_then_final_response():
    data = head("100 Continue") + head("102 Processing") + cl_response(b"done")
    out = parse(data, ["POST"])
    assert out.violations == []
    assert [r.status for r in out.responses] == [100, 102, 200]
    assert [r.status for r in out.final_responses] == [200]
    assert out.responses[0].interim and not out.responses[2].interim


def test_interim_responses_do_not_consume_a_request_method():
    # The HEAD is the SECOND request: its final response comes after an interim one.
    data = cl_response(b"a") + head("100 Continue") + head("200 OK", "Content-Length: 9") + cl_response(b"c")
    out = parse(data, ["GET", "HEAD", "GET"])
    assert out.violations == []
    assert [r.body for r in out.final_responses] == [b"a", b"", b"c"]


def test_204_and_304_without_body():
    data = head("204 No Content") + head("304 Not Modified", "Content-Length: 99", "ETag: \"x\"") + cl_response(b"z")
    out = parse(data, ["GET", "GET", "GET"])
    assert out.violations == []
    assert [(r.status, r.framing, r.body) for r in out.responses] == [
        (204, "none", b""), (304, "none", b""), (200, "content-length", b"z")]


def test_101_marks_the_stream_upgraded_and_stops():
    out = parse(head("101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade") + b"\x81\x05hello")
    assert out.violations == []
    assert out.upgraded and [r.status for r in out.responses] == [101]
    assert out.final_responses == []


def test_connection_close_on_the_last_response_is_fine():
    out = parse(cl_response(b"a") + cl_response(b"b", "200 OK", "Connection: keep-alive, Close"), ["GET", "GET"])
    assert out.violations == []
    assert out.responses[1].connection_tokens() == {b"keep-alive", b"close"}


def test_interim_response_with_connection_close_does_not_end_the_stream():
    out = parse(head("100 Continue", "Connection: close") + cl_response(b"x"))
    assert out.violations == []


def test_empty_stream():
    for eof in (True, False):
        out = parse(b"", eof=eof)
        assert out.responses == [] and out.violations == [] and out.incomplete == b""


def test_offsets_point_at_each_response():
    a, b = cl_response(b"12"), cl_response(b"345")
    out = parse(a + b, ["GET", "GET"])
    assert [r.offset for r in out.responses] == [0, len(a)]


# =====================================================================================
# I-RFC-1 violations
# =====================================================================================

RFC1_CASES = [
    # (id, data, methods, eof, detail fragment)
    ("status_line_lowercase_http", b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", None, True, "status line"),
    ("status_line_two_digit_code", b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", None, True, "malformed status line"),
    ("status_line_four_digit_code", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", None, True, "malformed status line"),
    ("status_line_no_version", b"HTTP/ 200 OK\r\nContent-Length: 0\r\n\r\n", None, True, "malformed status line"),
    ("status_line_two_digit_minor", b"HTTP/1.10 200 OK\r\nContent-Length: 0\r\n\r\n", None, True, "malformed status line"),
    ("status_line_tab_separator", b"HTTP/1.1\t200 OK\r\nContent-Length: 0\r\n\r\n", None, True, "malformed status line"),
    ("status_line_nul_in_reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n", None, True, "malformed status line"),
    ("status_line_del_in_reason", b"HTTP/1.1 200 O\x7fK\r\nContent-Length: 0\r\n\r\n", None, True, "malformed status line"),
    ("cl_plus_sign", head("200 OK", "Content-Length: +5") + b"hello", None, True, "invalid Content-Length"),
    ("cl_hex", head("200 OK", "Content-Length: 0x5") + b"hello", None, True, "invalid Content-Length"),
    ("cl_negative", head("200 OK", "Content-Length: -5") + b"hello", None, True, "invalid Content-Length"),
    ("cl_empty", head("200 OK", "Content-Length:") + b"hello", None, True, "invalid Content-Length"),
    ("cl_inner_space", head("200 OK", "Content-Length: 0 5") + b"hello", None, True, "invalid Content-Length"),
    ("cl_underscore", head("200 OK", "Content-Length: 0_5") + b"hello", None, True, "invalid Content-Length"),
    ("cl_list_conflict", head("200 OK", "Content-Length: 5, 0") + b"hello", None, True, "conflicting Content-Length"),
    ("cl_fields_conflict", head("200 OK", "Content-Length: 5", "Content-Length: 0") + b"hello", None, True,
     "conflicting Content-Length"),
    ("cl_list_identical", head("200 OK", "Content-Length: 5, 5") + b"hello", None, True, "repeated Content-Length"),
    ("cl_fields_identical", head("200 OK", "Content-Length: 5", "Content-Length: 5") + b"hello", None, True,
     "repeated Content-Length"),
    ("cl_on_204", head("204 No Content", "Content-Length: 0"), None, True, "Content-Length on a 204"),
    ("te_on_204", head("204 No Content", "Transfer-Encoding: chunked"), None, True, "Transfer-Encoding on a 204"),
    ("cl_on_100", head("100 Continue", "Content-Length: 0") + cl_response(b""), None, True, "Content-Length on a 100"),
    ("te_on_101", head("101 Switching Protocols", "Transfer-Encoding: chunked", "Upgrade: x"), None, True,
     "Transfer-Encoding on a 101"),
    ("cl_and_te", head("200 OK", "Content-Length: 10", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n",
     None, True, "both Content-Length and Transfer-Encoding"),
    ("body_after_head_response", head("200 OK", "Content-Length: 5") + b"hello", ["HEAD"], True,
     "body bytes after a bodiless 200"),
    ("body_after_204", head("204 No Content") + b"hello", None, True, "body bytes after a bodiless 204"),
    ("body_after_304", head("304 Not Modified") + b"hello", None, True, "body bytes after a bodiless 304"),
    ("chunked_body_after_304", head("304 Not Modified", "Transfer-Encoding: chunked") + b"0\r\n\r\n", None, True,
     "body bytes after a bodiless 304"),
    ("cl_shorter_than_body", cl_response(b"hello") + b"EXTRA", None, True, "bytes beyond the framed body of a 200"),
    ("cl_shorter_than_body_no_eof", cl_response(b"hello") + b"EXTRA", None, False, "bytes beyond the framed body"),
    ("cl_longer_than_body_eof", head("200 OK", "Content-Length: 10") + b"hello", None, True, "body truncated"),
    ("chunk_size_not_hex", head("200 OK", "Transfer-Encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n", None, True,
     "invalid chunk-size line"),
    ("chunk_size_0x", head("200 OK", "Transfer-Encoding: chunked") + b"0x5\r\nhello\r\n0\r\n\r\n", None, True,
     "invalid chunk-size line"),
    ("chunk_size_empty", head("200 OK", "Transfer-Encoding: chunked") + b"\r\nhello\r\n0\r\n\r\n", None, True,
     "invalid chunk-size line"),
    ("chunk_size_leading_space", head("200 OK", "Transfer-Encoding: chunked") + b" 5\r\nhello\r\n0\r\n\r\n", None, True,
     "invalid chunk-size line"),
    ("chunk_ext_without_name", head("200 OK", "Transfer-Encoding: chunked") + b"5;\r\nhello\r\n0\r\n\r\n", None, True,
     "invalid chunk-size line"),
    ("chunk_ext_unterminated_quote", head("200 OK", "Transfer-Encoding: chunked") + b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
     None, True, "invalid chunk-size line"),
    ("chunk_size_bare_lf", head("200 OK", "Transfer-Encoding: chunked") + b"5\nhello\r\n0\r\n\r\n", None, True,
     "invalid chunk-size line"),
    ("chunk_size_bare_lf_only", head("200 OK", "Transfer-Encoding: chunked") + b"5\nhello", None, True,
     "not terminated by CRLF"),
    ("chunk_size_line_too_long", head("200 OK", "Transfer-Encoding: chunked") + b"5" + b";a" * 33000, None, False,
     "chunk-size line too long"),
    ("chunk_data_missing_crlf", head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhelloXX0\r\n\r\n", None, True,
     "chunk data not followed by CRLF"),
    ("chunk_data_missing_crlf_no_eof", head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhelloXX0\r\n\r\n", None,
     False, "chunk data not followed by CRLF"),
    ("chunk_data_longer_than_size", head("200 OK", "Transfer-Encoding: chunked") + b"3\r\nhello\r\n0\r\n\r\n", None,
     True, "chunk data not followed by CRLF"),
    ("eof_in_chunk_size_line", head("200 OK", "Transfer-Encoding: chunked") + b"5", None, True,
     "closed inside a chunked body"),
    ("eof_in_chunk_data", head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhel", None, True,
     "closed inside a chunk of 5 bytes"),
    ("eof_before_last_chunk", head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n", None, True,
     "closed inside a chunked body"),
    ("eof_in_trailer_section", head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\nX-T: 1\r\n", None,
     True, "closed inside the trailer section"),
    ("trailer_without_colon", head("200 OK", "Transfer-Encoding: chunked") + b"0\r\nX-Trailer 1\r\n\r\n", None, True,
     "malformed trailer line"),
    ("trailer_name_not_token", head("200 OK", "Transfer-Encoding: chunked") + b"0\r\nX T: 1\r\n\r\n", None, True,
     "malformed trailer line"),
    ("trailer_obs_fold", head("200 OK", "Transfer-Encoding: chunked") + b"0\r\nX-T: 1\r\n 2\r\n\r\n", None, True,
     "malformed trailer line"),
    ("bytes_after_connection_close", cl_response(b"a", "200 OK", "Connection: close") + cl_response(b"b"),
     ["GET", "GET"], True, "announced Connection: close"),
    ("garbage_instead_of_first_response", b"hello world\r\n\r\n", None, True, "bytes where a status line must start"),
    ("eof_inside_head", b"HTTP/1.1 200 OK\r\nContent-Le", None, True, "closed inside a response head"),
    ("eof_inside_status_line_prefix", b"HTT", None, True, "closed inside a response head"),
]


@pytest.mark.parametrize(("data", "methods", "eof", "fragment"), [c[1:] for c in RFC1_CASES],
                         ids=[c[0] for c in RFC1_CASES])
def test_rfc1_violation(data, methods, eof, fragment):
    out = parse(data, methods, eof=eof)
    assert RFC1 in preds(out), f"no I-RFC-1 for {data!r}: {out.violations}"
    assert fragment in details(out)
    assert RFC2 not in preds(out)


def test_malformed_status_line_stops_parsing_and_keeps_the_bytes():
    data = b"HTTP/1.1 OK\r\n\r\n" + cl_response(b"x")
    out = parse(data)
    assert out.responses == [] and out.trailing_garbage == data
    assert out.violations[0].offset == 0


def test_status_line_error_on_second_response_has_its_offset():
    first = cl_response(b"x")
    out = parse(first + b"HTTP/1.1 2x0 OK\r\n\r\n", ["GET", "GET"])
    assert [r.status for r in out.responses] == [200]
    assert [v.offset for v in out.violations] == [len(first)]


def test_invalid_content_length_stops_framing():
    data = head("200 OK", "Content-Length: 0x5") + b"hello"
    out = parse(data)
    assert len(out.responses) == 1 and out.trailing_garbage == b"hello"


def test_list_conflict_and_repeat_are_distinct_findings():
    conflict = parse(head("200 OK", "Content-Length: 5, 0") + b"hello")
    assert "conflicting" in details(conflict) and "repeated" not in details(conflict)
    repeat = parse(head("200 OK", "Content-Length: 5, 5") + b"hello")
    assert "repeated" in details(repeat)
    # the identical values still frame the body
    assert repeat.responses[0].body == b"hello" and repeat.trailing_garbage == b""


def test_cl_and_te_frames_by_transfer_encoding():
    # RFC 9112 §6.3 (3): Transfer-Encoding overrides Content-Length.
    out = parse(head("200 OK", "Content-Length: 3", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n")
    assert out.responses[0].framing == "chunked" and out.responses[0].body == b"hello"
    assert out.trailing_garbage == b""


def test_truncated_versus_incomplete_content_length_body():
    data = head("200 OK", "Content-Length: 10") + b"hello"
    truncated = parse(data, eof=True)
    assert "body truncated: Content-Length 10, 5 bytes" in details(truncated)
    assert truncated.responses[0].complete is False and truncated.incomplete == b""
    waiting = parse(data, eof=False)
    assert waiting.violations == []
    assert waiting.responses[0].complete is False and waiting.incomplete == data


def test_bare_cr_before_crlf_in_chunk_data_is_not_a_terminator():
    out = parse(head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhello\r\r\n0\r\n\r\n")
    assert "chunk data not followed by CRLF" in details(out)


# =====================================================================================
# I-RFC-2 violations
# =====================================================================================

RFC2_CASES = [
    ("nul_in_value", b"X-A: a\x00b"),
    ("bare_cr_in_value", b"X-A: a\rb"),
    ("bare_lf_in_value", b"X-A: a\nb"),
    ("bare_lf_injects_a_field", b"X-A: a\nSet-Cookie: evil=1"),
    ("bare_cr_at_end_of_line", b"X-A: ab\r"),
    ("nul_in_name", b"X-\x00A: b"),
    ("obs_fold_space", b"X-A: a\r\n b"),
    ("obs_fold_tab", b"X-A: a\r\n\tb"),
    ("obs_fold_first_field", b" X-A: a"),
    ("line_without_colon", b"X-A b"),
    ("empty_name", b": b"),
    ("space_before_colon", b"X-A : b"),
    ("space_in_name", b"X A: b"),
    ("separator_in_name", b"X(A): b"),
    ("non_ascii_name", b"X-\xe9: b"),
]


@pytest.mark.parametrize("line", [c[1] for c in RFC2_CASES], ids=[c[0] for c in RFC2_CASES])
def test_rfc2_violation_in_header_line(line):
    data = b"HTTP/1.1 200 OK\r\n" + line + b"\r\nContent-Length: 2\r\n\r\nok"
    out = parse(data)
    assert RFC2 in preds(out), f"no I-RFC-2 for {line!r}"
    # the stream is still framed: the response and its body come through
    assert [r.body for r in out.responses] == [b"ok"]


def test_obs_fold_is_unfolded_into_the_previous_value():
    out = parse(b"HTTP/1.1 200 OK\r\nX-A: a\r\n  b\r\nContent-Length: 0\r\n\r\n")
    assert "obs-fold" in details(out)
    assert out.responses[0].header(b"x-a") == b"a b"


def test_malformed_header_line_is_dropped_from_headers():
    out = parse(b"HTTP/1.1 200 OK\r\nX-A b\r\nContent-Length: 0\r\n\r\n")
    assert "malformed response header line" in details(out)
    assert out.responses[0].headers == [(b"Content-Length", b"0")]


def test_all_bare_lf_response_head_at_eof():
    out = parse(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", eof=True)
    assert preds(out) == [RFC2] and "bare LF" in details(out)
    assert out.responses == []


def test_all_bare_lf_response_head_without_eof():
    # the "\n\n" end of head is already visible: no need to wait for more bytes
    out = parse(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", eof=False)
    assert preds(out) == [RFC2]


def test_bare_lf_head_at_eof_without_blank_line():
    out = parse(b"HTTP/1.1 200 OK\nContent-Length: 0\n", eof=True)
    assert preds(out) == [RFC2]


def test_rfc2_offset_points_at_the_line():
    data = b"HTTP/1.1 200 OK\r\nX-Good: 1\r\nX-Bad: a\x00\r\nContent-Length: 0\r\n\r\n"
    out = parse(data)
    [v] = out.violations
    assert data[v.offset:].startswith(b"X-Bad")


# =====================================================================================
# Incomplete: reading stopped mid-response without eof is never a violation
# =====================================================================================

INCOMPLETE = [
    ("mid_status_line", b"HTTP/1.1 20"),
    ("just_H", b"H"),
    ("mid_headers", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"),
    ("mid_final_crlf", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r"),
    ("mid_cl_body", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"),
    ("chunked_no_data", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("mid_chunk_size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x"),
    ("mid_chunk_data", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
    ("chunk_data_then_cr", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r"),
    ("before_last_chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
    ("after_last_chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"),
    ("mid_trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n"),
    ("second_response_partial", cl_response(b"ok") + b"HTTP/1.1 200 OK\r\nContent-"),
    ("after_interim", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"),
]


@pytest.mark.parametrize("data", [c[1] for c in INCOMPLETE], ids=[c[0] for c in INCOMPLETE])
def test_stream_stopping_mid_response_without_eof_is_incomplete(data):
    out = parse(data, ["GET", "GET"], eof=False)
    assert out.violations == []
    assert out.trailing_garbage == b""
    pending = [r for r in out.responses if not r.complete]
    assert out.incomplete or pending


@pytest.mark.parametrize("data", [c[1] for c in INCOMPLETE if c[0] != "after_interim"],
                         ids=[c[0] for c in INCOMPLETE if c[0] != "after_interim"])
def test_same_stream_with_eof_is_a_violation(data):
    out = parse(data, ["GET", "GET"], eof=True)
    assert RFC1 in preds(out)


def test_every_prefix_of_a_rich_stream_is_clean_without_eof():
    stream = (
        head("100 Continue")
        + cl_response(b"first")
        + head("200 OK", "Content-Length: 77")  # HEAD
        + head("200 OK", "Transfer-Encoding: chunked")
        + b"3;x=\"a b\"\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: v\r\n\r\n"
        + head("204 No Content")
        + head("304 Not Modified", "Content-Length: 5")
        + cl_response(b"", "404 Not Found")
        + cl_response(b"last", "200 OK", "Connection: close")
    )
    methods = ["POST", "HEAD", "GET", "GET", "GET", "GET", "GET"]
    full = parse(stream, methods, eof=True)
    assert full.violations == []
    assert [r.status for r in full.final_responses] == [200, 200, 200, 204, 304, 404, 200]
    for cut in range(len(stream)):
        out = parse(stream[:cut], methods, eof=False)
        assert out.violations == [], (cut, stream[:cut][-30:], out.violations)


# =====================================================================================
# Bugs found while writing these tests (fixed; kept as regression tests)
# =====================================================================================


def test_huge_content_length_does_not_raise():
    data = b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\nhello"
    # No exception; a length beyond any real body (> 18 significant digits) is a framing violation.
    assert [v.predicate for v in parse(data, eof=False).violations] == ["I-RFC-1"]
    assert RFC1 in preds(parse(data, eof=True))


def test_chunk_size_with_many_leading_zeros_is_valid():
    out = parse(head("200 OK", "Transfer-Encoding: chunked") + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n")
    assert out.violations == []
    assert out.responses[0].body == b"hello"


def test_nul_in_trailer_value_is_reported():
    out = parse(head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n")
    assert out.violations != []


def test_bare_lf_in_trailer_line_is_reported():
    out = parse(head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\nX-T: a\nY: b\r\n\r\n")
    assert out.violations != []


@pytest.mark.parametrize(("status", "method"), [("304 Not Modified", "GET"), ("200 OK", "HEAD")])
def test_cl_with_te_on_bodiless_response_is_reported(status, method):
    out = parse(head(status, "Content-Length: 5", "Transfer-Encoding: chunked"), [method])
    assert "both Content-Length and Transfer-Encoding" in details(out)


def test_chunked_applied_twice_is_reported():
    out = parse(head("200 OK", "Transfer-Encoding: chunked, chunked") + b"5\r\nhello\r\n0\r\n\r\n")
    assert RFC1 in preds(out)


def test_bare_lf_head_is_rfc2_even_if_body_contains_crlfcrlf():
    out = parse(b"HTTP/1.1 200 OK\nContent-Length: 4\n\n\r\n\r\n", eof=True)
    assert RFC2 in preds(out)


# =====================================================================================
# Property: well-formed streams round-trip, and no prefix is a violation
# =====================================================================================

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
OBS_TEXT = "".join(chr(c) for c in range(0x80, 0x100))

tokens = st.text(alphabet=TCHARS, min_size=1, max_size=10)
words = st.text(alphabet=VCHAR + OBS_TEXT, min_size=1, max_size=8)
field_values = st.lists(words, max_size=3).map(" ".join)
reasons = st.lists(st.text(alphabet=VCHAR + OBS_TEXT + "\t", min_size=1, max_size=8), max_size=3).map(" ".join)
quoted = st.text(alphabet=VCHAR.replace('"', "").replace("\\", "") + " \t", max_size=6).map(lambda s: f'"{s}"') | \
    st.text(alphabet=VCHAR + " ", min_size=1, max_size=3).map(lambda s: '"' + "".join("\\" + ch for ch in s) + '"')
chunk_exts = st.lists(
    st.tuples(st.sampled_from(["", " ", "\t "]), tokens, st.none() | tokens | quoted),
    max_size=2,
).map(lambda exts: "".join(f"{ws};{ws}{n}" + ("" if v is None else f"{ws}={ws}{v}") for ws, n, v in exts))
extra_fields = st.lists(st.tuples(tokens.map(lambda t: "X-" + t), field_values), max_size=3)


@st.composite
def responses(draw):
    """One well-formed response to a GET: (bytes, status, body, framing)."""
    status = draw(st.sampled_from([200, 201, 204, 206, 301, 304, 400, 404, 418, 500, 503]) |
                  st.integers(200, 599))
    reason = draw(reasons)
    fields = [f"{n}: {v}" for n, v in draw(extra_fields)]
    if status in (204, 304):
        if status == 304 and draw(st.booleans()):
            fields.append(f"Content-Length: {draw(st.integers(0, 10**6))}")
        return head(f"{status} {reason}", *fields), status, b"", "none"
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return head(f"{status} {reason}", *fields, f"Content-Length: {len(body)}") + body, status, body, "content-length"
    # chunked: split the body at drawn points, each chunk with optional extensions
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body))), max_size=4)))) if body else []
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if body[a:b]]
    encoded = b""
    for piece in pieces:
        hexsize = format(len(piece), draw(st.sampled_from(["x", "X", "04x"])))
        encoded += f"{hexsize}{draw(chunk_exts)}\r\n".encode("latin-1") + piece + CRLF
    encoded += f"0{draw(chunk_exts)}\r\n".encode("latin-1")
    for n, v in draw(extra_fields):
        encoded += f"{n}: {v}\r\n".encode("latin-1")
    encoded += CRLF
    return head(f"{status} {reason}", *fields, "Transfer-Encoding: chunked") + encoded, status, body, "chunked"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(responses(), min_size=1, max_size=5), st.data())
def test_property_well_formed_streams_round_trip_and_prefixes_are_clean(resps, data):
    stream = b"".join(r[0] for r in resps)
    methods = ["GET"] * len(resps)
    out = parse(stream, methods, eof=True)
    assert out.violations == [], out.violations
    assert out.incomplete == b"" and out.trailing_garbage == b""
    assert [(r.status, r.body, r.framing, r.complete) for r in out.responses] == \
        [(s, b, f, True) for _, s, b, f in resps]

    # Response boundaries and a handful of arbitrary cuts: reading stopped there, no eof.
    bounds, acc = [], 0
    for r in resps:
        bounds += [acc, acc + 1, acc + len(r[0]) - 1]
        acc += len(r[0])
    cuts = set(bounds) | set(data.draw(st.lists(st.integers(0, len(stream)), max_size=25)))
    for cut in sorted(c for c in cuts if 0 <= c <= len(stream)):
        part = parse(stream[:cut], methods, eof=False)
        assert part.violations == [], (cut, stream[:cut][-40:], part.violations)
        assert part.trailing_garbage == b""
        done = [(r.status, r.body) for r in part.responses if r.complete]
        assert done == [(s, b) for _, s, b, _ in resps[: len(done)]]
