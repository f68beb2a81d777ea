"""The adversarial HTTP/1.1 catalogue: one entry per case, as data.

Template markers are documented in catalogue.py. Every case names the clause
of RFC 9110 / 9112 (or 6455 / 7540) it exercises, the requirement level, and
the outcome the RFC requires. Smuggling-shaped cases carry a complete second
request ($S) either inside the primary's body (by the RFC's framing: `inner`)
or right after it; a server that frames the message differently than the RFC
executes $S, and the verdict sees it through the echo route or the response
count.
"""

from __future__ import annotations

from .catalogue import Case

H = "Host: $H\r\n"
SMUG = "GET $S HTTP/1.1\r\nHost: $H\r\n\r\n"  # a complete, valid second request
FOLLOW = SMUG
SMUG_U = "GET $U HTTP/1.1\r\nHost: $H\r\n\r\n"
# wt-smuggle (issue 12): upgrade heads whose body is a request
UPG = "Connection: Upgrade\r\nUpgrade: probatorium/1\r\n"
H2C = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
# Size limits: the MUST is conditional on the server not wishing to process the element; no
# limit is predefined, so accepting a large one is the server's choice.
LIMIT_REASON = "conditional MUST: only a server unwilling to process the element must answer 4xx"


def get(extra: str = "", target: str = "$T", version: str = "HTTP/1.1", host: str = H) -> str:
    """A GET head with extra header lines (each ending in CRLF)."""
    return f"GET {target} {version}\r\n{host}{extra}\r\n"


def post(extra: str, body: str, target: str = "$T", version: str = "HTTP/1.1") -> str:
    """A POST head with the extra header lines, then the body verbatim."""
    return f"POST {target} {version}\r\n{H}{extra}\r\n{body}"


def bad_cl(name: str, value: str, note: str) -> Case:
    """An invalid Content-Length (RFC 9112 §6.3 rule 5: MUST 400 and close)."""
    return Case(
        name=name, group="content-length", clause="RFC 9112 §6.3 (5), RFC 9110 §8.6", level="MUST",
        expect="reject", close=True, methods=("POST", "GET"),
        template=post(f"Content-Length: {value}\r\n", "hello") + FOLLOW, note=note,
    )


def bad_chunk(name: str, chunked_body: str, note: str) -> Case:
    """An invalid chunk-size or chunk-data followed by a pipelined request: the chunk length
    cannot be decoded, so the framing is unknowable (RFC 9112 §7.1 MUST: close)."""
    return Case(
        name=name, group="chunked", clause="RFC 9112 §7.1", level="MUST",
        expect="reject", close=True, keep_open_ok=True, methods=("POST", "GET"),
        template=post("Transfer-Encoding: chunked\r\n", chunked_body) + FOLLOW, note=note,
    )


def bad_chunk_line(name: str, chunked_body: str, note: str) -> Case:
    """A chunk line that breaks the grammar while size and data stay unambiguous (the body is
    "hello", the next request well framed): invalid grammar, RFC 9112 §2.2 SHOULD 400 + close.
    A server that accepts it and misframes the body is still caught (wrong_accepted)."""
    return Case(
        name=name, group="chunked", clause="RFC 9112 §2.2 (invalid grammar), §7.1", level="SHOULD",
        expect="reject", body="hello", followups=1, methods=("POST", "GET"),
        template=post("Transfer-Encoding: chunked\r\n", chunked_body) + FOLLOW, note=note,
    )


def bad_te(name: str, value: str, note: str, clause: str = "RFC 9112 §6.3 (4)") -> Case:
    """A Transfer-Encoding whose final coding is not chunked, with a Content-Length fallback
    that hides a smuggled request: MUST 400 and close."""
    return Case(
        name=name, group="transfer-encoding", clause=clause, level="MUST", expect="reject", close=True,
        methods=("POST", "GET"),
        template=post(f"Transfer-Encoding: {value}\r\nContent-Length: $CL1\r\n", "0\r\n\r\n" + SMUG),
        note=note,
    )


CASES: list[Case] = [
    # ---- valid baselines: also exercise response framing (I-RFC-1) ----------------
    Case("valid_get", "baseline", "RFC 9110 §9.1 (GET and HEAD), RFC 9112 §3", "MUST", "serve", get(), body=""),
    Case("valid_head", "baseline", "RFC 9110 §9.3.2", "MUST", "serve", get().replace("GET", "HEAD", 1),
         methods=("HEAD",), note="a HEAD response carries no body whatever its headers say"),
    Case("valid_head_then_get", "baseline", "RFC 9110 §9.3.2, RFC 9112 §6.3 (1)", "MUST", "serve",
         get().replace("GET", "HEAD", 1) + FOLLOW, methods=("HEAD", "GET"), followups=1),
    Case("valid_post_cl", "baseline", "RFC 9112 §6.3 (6), §6.2", "MUST", "serve",
         post("Content-Length: $CL1\r\n", "hello world"), body="hello world", methods=("POST",)),
    Case("valid_post_chunked", "baseline", "RFC 9112 §7.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
         body="hello world", methods=("POST",)),
    Case("valid_pipeline_three", "pipelining", "RFC 9112 §9.3.2", "MUST", "serve",
         get() + FOLLOW + SMUG_U, followups=2, methods=("GET", "GET", "GET")),
    Case("valid_pipeline_post_get", "pipelining", "RFC 9112 §9.3.2", "MUST", "serve",
         post("Content-Length: $CL1\r\n", "abc$E1") + FOLLOW, body="abc", followups=1, methods=("POST", "GET")),
    Case("valid_options", "baseline", "RFC 9110 §9.3.7", "MUST", "either", get().replace("GET", "OPTIONS", 1),
         methods=("OPTIONS",)),
    Case("valid_unknown_method", "request-line", "RFC 9110 §9.1 (unknown method)", "SHOULD", "either",
         get().replace("GET", "PROBE", 1), methods=("PROBE",), note="an unknown method SHOULD get 501; serving it is not graded"),
    Case("get_with_body_cl", "content-length", "RFC 9112 §6.3 (6), RFC 9110 §9.3.1", "MUST", "either",
         f"GET $T HTTP/1.1\r\n{H}Content-Length: $CL1\r\n\r\n{SMUG}", inner=True, body=SMUG,
         note="a body on GET is framed by Content-Length like any other; ignoring it runs the bytes as a request"),

    # ---- line endings --------------------------------------------------------------
    Case("bare_lf_line_endings", "line-endings", "RFC 9112 §2.2 (bare LF)", "MAY", "reject",
         "GET $T HTTP/1.1\nHost: $H\n\n", note="a recipient MAY recognise a single LF"),
    Case("bare_lf_one_field", "line-endings", "RFC 9112 §2.2 (bare LF)", "MAY", "reject",
         "GET $T HTTP/1.1\r\nHost: $H\nX-Adv: a\r\n\r\n"),
    Case("bare_cr_request_line", "line-endings", "RFC 9112 §2.2 (bare CR)", "MUST", "reject",
         "GET $T HTTP/1.1\rX-Adv: b\r\n" + H + "\r\n",
         note="a bare CR is invalid or replaced by SP; either way the request-line is invalid"),
    Case("bare_cr_in_value", "line-endings", "RFC 9112 §2.2 (bare CR), RFC 9110 §5.5", "MUST", "either",
         get("X-Adv: a\rb\r\nX-Request-Id: a\rX-Probatorium-Injected: cr\r\n"), sanitize=True, body="",
         note="X-Request-Id is often reflected: a bare CR kept in it reaches the response head"),
    Case("bare_cr_before_crlf", "line-endings", "RFC 9112 §2.2 (bare CR)", "MUST", "either",
         get("X-Adv: ab\r\r\n"), sanitize=True, body=""),

    # ---- field-line grammar ---------------------------------------------------------
    Case("space_before_colon", "fields", "RFC 9112 §5.1", "MUST", "reject", get("X-Adv : b\r\n")),
    Case("space_before_colon_cl", "fields", "RFC 9112 §5.1", "MUST", "reject",
         post("Content-Length : $CL1\r\n", SMUG), inner=True, methods=("POST",),
         note="a parser that ignores the malformed Content-Length runs the body as a request"),
    Case("tab_before_colon_cl", "fields", "RFC 9112 §5.1", "MUST", "reject",
         post("Content-Length\t: $CL1\r\n", SMUG), inner=True, methods=("POST",)),
    Case("obs_fold_value", "fields", "RFC 9112 §5.2", "MUST", "either",
         get("X-Adv: a\r\n b\r\nX-Request-Id: a\r\n X-Probatorium-Injected: fold\r\n"),
         sanitize=True, body="", note="reject with 400 or replace the fold with SP"),
    Case("obs_fold_first_field", "fields", "RFC 9112 §2.2 (whitespace after start-line)", "MUST", "either",
         "GET $T HTTP/1.1\r\n X-Adv-Ws: b\r\n" + H + "\r\n", forbid_headers=("x-adv-ws",), body="",
         note="whitespace after the start-line: reject, or consume the line without processing it"),
    Case("obs_fold_transfer_encoding", "fields", "RFC 9112 §5.2, §6.1", "MUST", "either",
         post("Transfer-Encoding: \r\n chunked\r\nContent-Length: $CL1\r\n", "0\r\n\r\n" + SMUG),
         close=True, keep_open_ok=True, body="", methods=("POST", "GET")),
    Case("nul_in_value", "fields", "RFC 9110 §5.5 (CR LF NUL)", "MUST", "either",
         get("X-Adv: a\x00b\r\nX-Request-Id: a\x00b\r\n"), sanitize=True, body=""),
    Case("ctl_in_value", "fields", "RFC 9110 §5.5 (other CTL)", "MAY", "reject", get("X-Adv: a\x01b\r\n"),
         note="recipients MAY retain CTLs other than CR/LF/NUL"),
    Case("del_in_value", "fields", "RFC 9110 §5.5 (other CTL)", "MAY", "reject", get("X-Adv: a\x7fb\r\n")),
    Case("empty_field_name", "fields", "RFC 9112 §2.2 (invalid grammar), §5, RFC 9110 §5.1", "SHOULD", "reject", get(": b\r\n"),
         note="field-name = token: an empty name makes the line unparseable"),
    Case("space_in_field_name", "fields", "RFC 9112 §2.2 (invalid grammar), §5, RFC 9110 §5.1", "SHOULD", "reject", get("X Adv: b\r\n")),
    Case("separator_in_field_name", "fields", "RFC 9112 §2.2 (invalid grammar), §5, RFC 9110 §5.1", "SHOULD", "reject",
         get("X(Adv): b\r\n")),
    Case("nul_in_field_name", "fields", "RFC 9112 §2.2 (invalid grammar), §5, RFC 9110 §5.1", "SHOULD", "reject", get("X-\x00Adv: b\r\n")),
    Case("nonascii_field_name", "fields", "RFC 9112 §2.2 (invalid grammar), §5, RFC 9110 §5.1", "SHOULD", "reject", get("X-\xe9: b\r\n")),
    Case("field_line_without_colon", "fields", "RFC 9112 §2.2 (invalid grammar), §5, RFC 9110 §5.1", "SHOULD", "reject", get("X-Adv b\r\n")),
    Case("field_line_without_colon_then_cl", "fields", "RFC 9112 §2.2 (invalid grammar), §5, RFC 9110 §5.1", "SHOULD", "reject",
         post("X-Adv b\r\nContent-Length: $CL1\r\n", SMUG), inner=True, methods=("POST",)),

    # ---- Content-Length -------------------------------------------------------------
    bad_cl("cl_plus_sign", "+5", "Content-Length = 1*DIGIT"),
    bad_cl("cl_negative", "-5", "Content-Length = 1*DIGIT"),
    bad_cl("cl_hex", "0x5", "Content-Length = 1*DIGIT"),
    bad_cl("cl_decimal_point", "5.0", "Content-Length = 1*DIGIT"),
    bad_cl("cl_trailing_junk", "5abc", "Content-Length = 1*DIGIT"),
    bad_cl("cl_inner_space", "0 5", "Content-Length = 1*DIGIT"),
    bad_cl("cl_empty", "", "an empty Content-Length is invalid"),
    bad_cl("cl_underscore", "0_5", "int() parsers accept underscores"),
    Case("cl_list_conflict", "content-length", "RFC 9112 §6.3 (5), RFC 9110 §8.6", "MUST", "reject",
         post("Content-Length: 5, 0\r\n", "hello") + FOLLOW, close=True, methods=("POST", "GET")),
    Case("cl_duplicate_conflict", "content-length", "RFC 9112 §6.3 (5), RFC 9110 §8.6", "MUST", "reject",
         post("Content-Length: 0\r\nContent-Length: $CL1\r\n", SMUG), close=True, inner=True,
         methods=("POST",), note="first-wins parsers run the body as a request"),
    Case("cl_duplicate_conflict_last", "content-length", "RFC 9112 §6.3 (5), RFC 9110 §8.6", "MUST", "reject",
         post("Content-Length: $CL1\r\nContent-Length: 0\r\n", SMUG), close=True, inner=True,
         methods=("POST",), note="last-wins parsers run the body as a request"),
    Case("cl_list_identical", "content-length", "RFC 9110 §8.6 (identical)", "MAY", "reject",
         post("Content-Length: 5, 5\r\n", "hello"), body="hello", methods=("POST",),
         note="a recipient MAY accept identical values as one"),
    Case("cl_duplicate_identical", "content-length", "RFC 9110 §8.6 (identical)", "MAY", "reject",
         post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), body="hello", methods=("POST",)),
    Case("cl_overflow_2_64", "content-length", "RFC 9110 §8.6 (large numerals), RFC 9112 §6.3 (5)", "MUST", "reject",
         post("Content-Length: 18446744073709551621\r\n", "hello") + FOLLOW, close=True, wait_ok=True,
         methods=("POST", "GET"), note="2**64 + 5 wraps to 5 in a 64-bit parser"),
    Case("cl_leading_zeros", "content-length", "RFC 9112 §6.3 (6), RFC 9110 §8.6", "MUST", "serve",
         post("Content-Length: 0005\r\n", "hello"), body="hello", methods=("POST",)),
    Case("cl_with_ows", "content-length", "RFC 9112 §6.3 (6), §5", "MUST", "serve",
         post("Content-Length: \t5 \r\n", "hello"), body="hello", methods=("POST",)),

    # ---- Transfer-Encoding ----------------------------------------------------------
    Case("cl_te_smuggle", "transfer-encoding", "RFC 9112 §6.1 (TE and CL), §6.3 (3)", "MUST", "either",
         post("Content-Length: $CL1\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + SMUG),
         close=True, body="", methods=("POST", "GET"),
         note="reject, or frame by Transfer-Encoding alone; either way close the connection"),
    Case("te_cl_smuggle", "transfer-encoding", "RFC 9112 §6.1 (TE and CL), §6.3 (3)", "MUST", "either",
         post("Transfer-Encoding: chunked\r\nContent-Length: $CL1\r\n", "$X2\r\n$E1" + SMUG + "$E2\r\n0\r\n\r\n"),
         close=True, inner=True, body=SMUG, methods=("POST",),
         note="a Content-Length-framing parser stops after the chunk-size line and runs the chunk as a request"),
    Case("te_chunked_http10", "transfer-encoding", "RFC 9112 §6.1 (HTTP/1.0)", "MUST", "either",
         post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", version="HTTP/1.0") + FOLLOW,
         close=True, body="hello", methods=("POST", "GET"),
         note="HTTP/1.0 with Transfer-Encoding: framing is faulty, close after processing"),
    bad_te("te_chunked_not_final", "chunked, gzip", "chunked must be the final coding"),
    bad_te("te_unknown_only", "gzip", "an unknown final coding: the length cannot be determined"),
    bad_te("te_identity", "identity", "'identity' is no longer a transfer coding"),
    bad_te("te_xchunked", "xchunked", "a coding that merely contains 'chunked'"),
    bad_te("te_chunked_vtab", "\x0bchunked", "VT is not OWS: the coding is not 'chunked'"),
    bad_te("te_chunked_quoted", '"chunked"', "a quoted string is not the token chunked"),
    Case("te_chunked_not_final_alone", "transfer-encoding", "RFC 9112 §6.3 (4)", "MUST", "reject",
         post("Transfer-Encoding: chunked, gzip\r\n", "5\r\nhello\r\n0\r\n\r\n") + FOLLOW, close=True,
         methods=("POST", "GET"), note="no Content-Length to hide behind: chunked not final is still a 400"),
    Case("te_xchunked_alone", "transfer-encoding", "RFC 9112 §6.3 (4)", "MUST", "reject",
         post("Transfer-Encoding: xchunked\r\n", "5\r\nhello\r\n0\r\n\r\n") + FOLLOW, close=True,
         methods=("POST", "GET"), note="substring matching of 'chunked'"),
    Case("te_space_before_colon_with_cl", "transfer-encoding", "RFC 9112 §5.1, §6.1", "MUST", "reject",
         post("Transfer-Encoding : chunked\r\nContent-Length: $CL1\r\n", "0\r\n\r\n" + SMUG), close=True,
         methods=("POST", "GET"), note="a parser that trims the space frames by chunked, one that ignores the line by CL"),
    Case("te_chunked_then_identity", "transfer-encoding", "RFC 9112 §6.3 (4)", "MUST", "reject",
         post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "5\r\nhello\r\n0\r\n\r\n") + FOLLOW,
         close=True, methods=("POST", "GET"), note="two fields combine to 'chunked, identity': chunked is not final"),
    Case("te_underscore_name", "transfer-encoding", "RFC 9112 §6.3 (6), RFC 9110 §5.1", "MUST", "either",
         post("Transfer_Encoding: chunked\r\nContent-Length: $CL1\r\n", "0\r\n\r\n" + SMUG), inner=True,
         body="0\r\n\r\n" + SMUG, methods=("POST",),
         note="Transfer_Encoding is another field: framing is by Content-Length (CGI-style '_'→'-' folding smuggles)"),
    Case("cl_obs_fold", "content-length", "RFC 9112 §5.2, §6.3 (5)", "MUST", "either",
         post("Content-Length:\r\n $CL1\r\n", "hello"), body="hello", methods=("POST",),
         note="reject the fold, or replace it with SP and frame by the value"),
    Case("te_duplicate_chunked", "transfer-encoding", "RFC 9112 §2.2 (invalid grammar), §6.1", "SHOULD", "reject",
         post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
         body="hello", methods=("POST",), note="chunked applied twice: a sender MUST NOT, the recipient has an invalid message"),
    Case("te_gzip_chunked", "transfer-encoding", "RFC 9112 §6.1 (unknown coding)", "SHOULD", "reject",
         post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
         methods=("POST",), note="an unsupported coding SHOULD get 501"),
    Case("te_chunked_uppercase", "transfer-encoding", "RFC 9112 §7", "MUST", "serve",
         post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"), body="hello", methods=("POST",),
         note="coding names are case-insensitive"),
    Case("te_chunked_empty_list_element", "transfer-encoding", "RFC 9110 §5.6.1.2", "MUST", "either",
         post("Transfer-Encoding: ,chunked\r\n", "5\r\nhello\r\n0\r\n\r\n") + FOLLOW, body="hello",
         followups=1, methods=("POST", "GET"), note="empty list elements are ignored"),

    # ---- chunked grammar ------------------------------------------------------------
    Case("chunk_ext_token", "chunked", "RFC 9112 §7.1.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "5;foo=bar\r\nhello\r\n0\r\n\r\n"), body="hello", methods=("POST",)),
    Case("chunk_ext_quoted", "chunked", "RFC 9112 §7.1.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", '5;foo="b a;r"\r\nhello\r\n0\r\n\r\n'), body="hello",
         methods=("POST",)),
    Case("chunk_ext_bws", "chunked", "RFC 9112 §7.1.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "5 ; foo = bar\r\nhello\r\n0\r\n\r\n"), body="hello",
         methods=("POST",)),
    Case("chunk_size_uppercase_hex", "chunked", "RFC 9112 §7.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "A\r\n0123456789\r\n0\r\n\r\n"), body="0123456789",
         methods=("POST",)),
    Case("chunk_size_leading_zeros", "chunked", "RFC 9112 §7.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "0005\r\nhello\r\n0\r\n\r\n"), body="hello",
         methods=("POST",)),
    bad_chunk("chunk_size_0x_prefix", "0x5\r\nhello\r\n0\r\n\r\n", "chunk-size = 1*HEXDIG"),
    bad_chunk("chunk_size_plus", "+5\r\nhello\r\n0\r\n\r\n", "chunk-size = 1*HEXDIG"),
    bad_chunk("chunk_size_negative", "-5\r\nhello\r\n0\r\n\r\n", "chunk-size = 1*HEXDIG"),
    bad_chunk("chunk_size_underscore", "0_5\r\nhello\r\n0\r\n\r\n", "int(x, 16) accepts underscores"),
    bad_chunk("chunk_size_leading_space", " 5\r\nhello\r\n0\r\n\r\n", "no whitespace before chunk-size"),
    Case("chunk_size_overflow", "chunked", "RFC 9112 §7.1", "MUST", "reject",
         post("Transfer-Encoding: chunked\r\n", "10000000000000005\r\nhello\r\n0\r\n\r\n") + FOLLOW,
         close=True, keep_open_ok=True, wait_ok=True, methods=("POST", "GET"),
         note="17 hex digits wrap to 5 in a 64-bit parser; waiting for 2**68 bytes is legitimate"),
    bad_chunk("chunk_size_empty", "\r\nhello\r\n0\r\n\r\n", "an empty chunk-size line"),
    bad_chunk("chunk_data_missing_crlf", "5\r\nhelloXX0\r\n\r\n", "chunk-data must be followed by CRLF"),
    bad_chunk("chunk_data_too_long", "3\r\nhello\r\n0\r\n\r\n", "more data than the chunk-size"),
    bad_chunk_line("chunk_size_bare_lf", "5\nhello\r\n0\r\n\r\n", "the chunk-size line ends in CRLF"),
    bad_chunk_line("chunk_data_bare_lf", "5\r\nhello\n0\r\n\r\n", "chunk-data is followed by CRLF"),
    bad_chunk_line("chunk_ext_bare_lf", "5;a\nb\r\nhello\r\n0\r\n\r\n", "an LF inside a chunk extension"),
    bad_chunk_line("chunk_ext_nul", "5;a\x00\r\nhello\r\n0\r\n\r\n", "NUL inside a chunk extension"),
    bad_chunk("chunk_last_missing", "5\r\nhello\r\n\r\n", "no last-chunk: the next line is not a chunk-size"),
    Case("chunk_trailer_valid", "trailers", "RFC 9112 §7.1, §7.1.2", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n") + FOLLOW,
         body="hello", followups=1, methods=("POST", "GET")),
    Case("chunk_trailer_content_length", "trailers", "RFC 9110 §6.5.1, RFC 9112 §7.1.2", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n") + FOLLOW,
         body="hello", followups=1, methods=("POST", "GET"),
         note="a trailer must not change the framing"),
    Case("chunk_trailer_without_colon", "trailers", "RFC 9112 §2.2 (invalid grammar), §7.1.2, §5", "SHOULD", "reject",
         post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\nX-Trailer 1\r\n\r\n"),
         body="hello", methods=("POST",)),

    # ---- Host -----------------------------------------------------------------------
    Case("host_missing_http11", "host", "RFC 9112 §3.2", "MUST", "reject", get(host="")),
    Case("host_duplicate", "host", "RFC 9112 §3.2", "MUST", "reject", get("Host: example.com\r\n")),
    Case("host_invalid_space", "host", "RFC 9112 §3.2, RFC 3986 §3.2.2", "MUST", "reject",
         get(host="Host: exa mple.com\r\n")),
    Case("host_invalid_userinfo", "host", "RFC 9112 §3.2, RFC 9110 §7.2", "MUST", "reject",
         get(host="Host: user@$H\r\n")),
    Case("host_invalid_port", "host", "RFC 9112 §3.2, RFC 3986 §3.2.3", "MUST", "reject",
         get(host="Host: 127.0.0.1:8x\r\n")),
    Case("host_empty_value", "host", "RFC 9112 §3.2", "MUST", "serve", get(host="Host:\r\n"), body="",
         note="an empty Host is valid when the target has no authority"),
    Case("host_missing_http10", "host", "RFC 9112 §3.2", "MUST", "serve",
         get(host="", version="HTTP/1.0"), body=""),
    Case("absolute_form_other_host", "host", "RFC 9112 §3.2.2", "MUST", "serve",
         get(target="http://$H$T", host="Host: other.invalid\r\n"), body="", authority=True,
         note="the origin server ignores Host for an absolute-form target"),
    Case("absolute_form_no_host", "host", "RFC 9112 §3.2", "MUST", "reject",
         get(target="http://$H$T", host="")),

    # ---- request-line and version ---------------------------------------------------
    Case("http09_request_line", "request-line", "RFC 9112 §3 (invalid request-line)", "SHOULD", "reject", "GET $T\r\n\r\n",
         note="no HTTP-version: not an HTTP/1.x request-line"),
    Case("http2_version_on_h1", "request-line", "RFC 9112 §2.3 (505), RFC 9110 §2.5", "MAY", "reject",
         get(version="HTTP/2.0"), note="a server can send 505 to refuse a major version"),
    Case("http_version_lowercase", "request-line", "RFC 9112 §3 (invalid request-line), §2.3", "SHOULD", "reject",
         get(version="http/1.1"), note="HTTP-name is case-sensitive"),
    Case("http_version_two_digit_minor", "request-line", "RFC 9112 §3 (invalid request-line), §2.3", "SHOULD", "reject",
         get(version="HTTP/1.10")),
    Case("http_version_missing_dot", "request-line", "RFC 9112 §3 (invalid request-line), §2.3", "SHOULD", "reject",
         get(version="HTTP/11")),
    Case("method_not_token", "request-line", "RFC 9112 §3 (invalid request-line), §3.1", "SHOULD", "reject",
         get().replace("GET", "G(ET", 1)),
    Case("request_line_double_space", "request-line", "RFC 9112 §3 (whitespace)", "MAY", "reject",
         "GET  $T HTTP/1.1\r\n" + H + "\r\n", note="recipients MAY split on whitespace runs"),
    Case("request_line_tabs", "request-line", "RFC 9112 §3 (whitespace)", "MAY", "reject", "GET\t$T\tHTTP/1.1\r\n" + H + "\r\n"),
    Case("request_line_trailing_space", "request-line", "RFC 9112 §3 (whitespace)", "MAY", "reject",
         "GET $T HTTP/1.1 \r\n" + H + "\r\n", note="recipients MAY ignore trailing whitespace"),
    Case("leading_empty_line", "request-line", "RFC 9112 §2.2 (empty line)", "SHOULD", "either", "\r\n" + get(), body="",
         note="a server SHOULD ignore at least one empty line before the request-line"),

    # ---- request-target -------------------------------------------------------------
    Case("target_with_space", "request-target", "RFC 9112 §3 (invalid request-line), §3.2", "SHOULD", "reject", get(target="$T&x y")),
    Case("target_with_ctl", "request-target", "RFC 9112 §3 (invalid request-line), §3.2, RFC 3986", "SHOULD", "reject", get(target="$T&x\x01")),
    Case("target_with_nul", "request-target", "RFC 9112 §3 (invalid request-line), §3.2, RFC 3986", "SHOULD", "reject", get(target="$T&x\x00")),
    Case("target_non_ascii", "request-target", "RFC 9112 §3 (invalid request-line), §3.2, RFC 3986", "SHOULD", "reject", get(target="$T&x\xff")),
    Case("target_fragment", "request-target", "RFC 9112 §3 (invalid request-line), §3.2.1", "SHOULD", "reject", get(target="$T#frag")),
    Case("target_asterisk_get", "request-target", "RFC 9112 §3 (invalid request-line), §3.2.4", "SHOULD", "reject", get(target="*"),
         note="asterisk-form is only for OPTIONS"),
    Case("target_authority_get", "request-target", "RFC 9112 §3 (invalid request-line), §3.2.3", "SHOULD", "reject", get(target="$H"),
         note="authority-form is only for CONNECT"),

    # ---- Expect ---------------------------------------------------------------------
    Case("expect_100_continue", "expect", "RFC 9110 §10.1.1", "MUST", "serve",
         post("Expect: 100-continue\r\nContent-Length: 5\r\n", "$|hello"), pause=0.5, body="hello",
         methods=("POST",)),
    Case("expect_100_continue_http10", "expect", "RFC 9110 §10.1.1", "MUST", "either",
         post("Expect: 100-continue\r\nContent-Length: 5\r\n", "$|hello", version="HTTP/1.0"), pause=0.5,
         body="hello", no_interim=True, methods=("POST",),
         note="a server MUST ignore a 100-continue expectation in an HTTP/1.0 request"),
    Case("expect_unknown", "expect", "RFC 9110 §10.1.1 (other expectation)", "MAY", "either",
         post("Expect: probatorium\r\nContent-Length: 5\r\n", "hello"), body="hello", methods=("POST",),
         note="417 is allowed"),

    # ---- Upgrade with a body --------------------------------------------------------
    Case("upgrade_unknown_with_body", "upgrade", "RFC 9110 §7.8", "MUST", "either",
         post("Connection: Upgrade\r\nUpgrade: probatorium/1\r\nContent-Length: 12\r\n", "hello$| wor$|ld!"),
         pause=0.1, body="hello world!", no_upgrade=True, methods=("POST",),
         note="an upgrade the server does not speak is ignored; the body still belongs to the request"),
    Case("upgrade_h2c_with_body", "upgrade", "RFC 7540 §3.2", "MUST", "either",
         post("Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
              "Content-Length: 12\r\n", "hello$| wor$|ld!"),
         pause=0.1, body="hello world!", methods=("POST",),
         note="a server that ignores the upgrade must still deliver the body"),
    Case("upgrade_websocket_on_post", "upgrade", "RFC 6455 §4.2.1", "MUST", "either",
         post("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n", "he$|llo"),
         pause=0.1, body="hello", no_upgrade=True, methods=("POST",),
         note="a WebSocket handshake must be a GET: no 101"),

    # ---- connection management ------------------------------------------------------
    Case("connection_close_then_pipelined", "connection", "RFC 9112 §9.6", "MUST", "serve",
         get("Connection: close\r\n") + FOLLOW, close=True, body="", methods=("GET", "GET"),
         note="a server MUST NOT process further requests after Connection: close"),
    Case("connection_close_uppercase", "connection", "RFC 9112 §9.6, RFC 9110 §7.6.1", "MUST", "serve",
         get("Connection: CLOSE\r\n") + FOLLOW, close=True, body="", methods=("GET", "GET")),
    Case("connection_close_in_list", "connection", "RFC 9112 §9.6, RFC 9110 §7.6.1", "MUST", "serve",
         get("Connection: keep-alive, close\r\n") + FOLLOW, close=True, body="", methods=("GET", "GET")),
    Case("http10_then_pipelined", "connection", "RFC 9112 §9.3", "MUST", "serve",
         get(version="HTTP/1.0") + FOLLOW, close=True, body="", methods=("GET", "GET"),
         note="HTTP/1.0 without keep-alive: the connection closes after the response"),
    Case("http10_keepalive_pipelined", "connection", "RFC 9112 §9.3", "MUST", "serve",
         get("Connection: keep-alive\r\n", version="HTTP/1.0") + get(target="$S", version="HTTP/1.0"),
         body="", followups=1, methods=("GET", "GET")),
    Case("pipelined_after_bad_header", "pipelining", "RFC 9112 §5.1", "MUST", "reject",
         get("X-Adv : b\r\n") + FOLLOW, methods=("GET", "GET"),
         note="after rejecting a request the rest of the stream is untrustworthy"),

    # ---- response header injection canaries (I-RFC-2) ---------------------------------
    Case("crlf_pct_encoded_in_query", "response-injection", "RFC 9110 §2.2 (sender), §5.5", "MUST", "either",
         get(target="$T&next=%0d%0aX-Probatorium-Injected:%20query"),
         note="a server that decodes the query into a response header (redirects) injects a field"),
    Case("crlf_pct_encoded_in_path", "response-injection", "RFC 9110 §2.2 (sender), §5.5", "MUST", "either",
         get(target="/%0d%0aX-Probatorium-Injected:%20path/"),
         note="path-based redirects (trailing slash, canonicalisation) copy the path into Location"),
    Case("crlf_pct_encoded_in_request_id", "response-injection", "RFC 9110 §2.2 (sender), §5.5", "MUST", "either",
         get("X-Request-Id: a%0d%0aX-Probatorium-Injected:%20rid\r\n"), body=""),

    # ---- size limits ----------------------------------------------------------------
    Case("huge_header_value_64k", "limits", "RFC 9110 §5.4, RFC 6585 §5", "MAY", "reject",
         get("X-Adv: " + "a" * 65536 + "\r\n"), note="431 is the expected answer",
         level_reason=LIMIT_REASON),
    Case("many_header_fields_2000", "limits", "RFC 9110 §5.4", "MAY", "reject",
         get("".join(f"X-Adv-{i}: v\r\n" for i in range(2000))), level_reason=LIMIT_REASON),
    Case("huge_request_target_64k", "limits", "RFC 9112 §3 (long target), RFC 9110 §4.1", "MAY", "reject",
         get(target="$T&" + "a" * 65536), note="414 is the expected answer",
         level_reason=LIMIT_REASON),

    # ---- slow senders ---------------------------------------------------------------
    Case("slowloris_head", "slowloris", "RFC 9112 §9.5", "MAY", "either",
         "$|".join(["GET ", "$T", " HTTP/1.1\r\n", "Ho", "st: ", "$H", "\r\n", "X-Sl", "ow: a", "bcd",
                    "efg", "hij\r", "\n", "\r", "\n"]), pause=0.12, body="",
         note="the server may time the client out; if it serves, the request must be intact"),
    Case("slowloris_body", "slowloris", "RFC 9112 §9.5", "MAY", "either",
         post("Content-Length: 10\r\n", "$|".join("0123456789")), pause=0.15, body="0123456789",
         methods=("POST",)),

    # ---- wt-smuggle (issue 12: items 1, 3, 7) ----------------------------------------
    # Item 1: the body of an upgrade request is itself a complete request. Whether the upgrade is
    # ignored (unknown protocol) or taken (h2c), the Content-Length bytes are the request's body
    # (RFC 9112 §6.3 (6)); running them as a request is smuggling (I-ADV-ACCEPTED).
    Case("upgrade_unknown_body_is_request", "upgrade", "RFC 9112 §6.3 (6), RFC 9110 §7.8", "MUST", "either",
         post(UPG + "Content-Length: $CL1\r\n", SMUG), inner=True, body=SMUG, no_upgrade=True,
         methods=("POST",), note="an ignored upgrade still frames the body by Content-Length"),
    Case("upgrade_unknown_body_is_request_paused", "upgrade", "RFC 9112 §6.3 (6), RFC 9110 §7.8", "MUST",
         "either", post(UPG + "Content-Length: $CL1\r\n", "$|" + SMUG), pause=0.3, inner=True, body=SMUG,
         no_upgrade=True, methods=("POST",), note="head and body in separate segments after a pause"),
    Case("upgrade_unknown_get_body_is_request", "upgrade", "RFC 9112 §6.3 (6), RFC 9110 §7.8", "MUST", "either",
         f"GET $T HTTP/1.1\r\n{H}{UPG}Content-Length: $CL1\r\n\r\n$|{SMUG}", pause=0.3, inner=True,
         body=SMUG, no_upgrade=True, note="a GET upgrade with a body: handlers that wait for the switch drop it"),
    Case("upgrade_h2c_body_is_request", "upgrade", "RFC 9112 §6.3 (6), RFC 7540 §3.2", "MUST", "either",
         post(H2C + "Content-Length: $CL1\r\n", SMUG), inner=True, body=SMUG, methods=("POST",),
         note="the body belongs to the HTTP/1.1 request whether or not h2c is taken"),
    Case("upgrade_h2c_body_is_request_paused", "upgrade", "RFC 9112 §6.3 (6), RFC 7540 §3.2", "MUST", "either",
         post(H2C + "Content-Length: $CL1\r\n", "$|" + SMUG), pause=0.3, inner=True, body=SMUG,
         methods=("POST",), note="head and body in separate segments after a pause"),
    # Item 3: absolute-form, judged from what path and authority the application received.
    Case("absolute_form_other_port", "host", "RFC 9112 §3.2.2", "MUST", "serve",
         get(target="http://$H$T", host="Host: $A:1\r\n"), body="", authority=True,
         note="only the port differs: the target's authority still wins"),
    Case("absolute_form_post_body", "host", "RFC 9112 §3.2.2, §6.3 (6)", "MUST", "serve",
         post("Content-Length: $CL1\r\n", "hello", target="http://$H$T").replace(H, "Host: other.invalid\r\n", 1),
         body="hello", authority=True, methods=("POST",)),
    # Item 7: versions and methods.
    Case("http_version_1_2", "request-line", "RFC 9110 §2.5 (higher minor)", "SHOULD", "serve",
         get(version="HTTP/1.2"), body="", note="a higher minor version is processed as HTTP/1.1"),
    Case("http2_version_with_body_request", "request-line", "RFC 9112 §2.3 (505), §6.3 (6)", "MAY", "either",
         f"POST $T HTTP/2.0\r\n{H}Content-Length: $CL1\r\n\r\n{SMUG}", inner=True, body=SMUG,
         methods=("POST",), note="505 is allowed; what is served must frame the body by Content-Length"),
    Case("http09_request_line_with_headers", "request-line", "RFC 9112 §3 (invalid request-line)", "SHOULD",
         "reject", "GET $T\r\n" + H + "X-Adv: a\r\n\r\n",
         note="an HTTP/0.9-style request-line followed by header lines"),
    Case("h2_preface_on_h1", "request-line", "RFC 9112 §3 (invalid request-line), §3.2.4, RFC 9113 §3.4",
         "SHOULD", "reject", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
         methods=("PRI",), h2_preface=True, note="the HTTP/2 prior-knowledge preface on an HTTP/1-only port must not reach the "
         "application as a request (asterisk-form is only for OPTIONS)"),
]

# ---- wt-slow (issue 12): size limits and chunked framing corners --------------------------
KIB, MIB = 1024, 1 << 20
CHUNKED_HELLO = "5\r\nhello\r\n0\r\n\r\n"


def big_header(name: str, size: int, note: str, *, segment: int = 0, tags: tuple[str, ...] = ()) -> Case:
    """One header field of `size` value bytes; with `segment`, sent in segments of that many bytes
    (0.01 s apart) so the server reads it in small pieces. Accepting is the server's choice (LOW)."""
    value = "a" * size
    if segment:  # only the value is split, so no template marker is cut
        value = "$|" + "$|".join(value[i:i + segment] for i in range(0, size, segment)) + "$|"
    head = get("X-Adv: " + value + "\r\n")
    return Case(name, "limits", "RFC 9110 §5.4, RFC 6585 §5", "MAY", "reject", head, pause=0.01 if segment else 0.0,
                note=note, tags=tags, level_reason=LIMIT_REASON)


def bad_trailer(name: str, trailer: str, note: str, *, inner: bool = False) -> Case:
    """A trailer section that breaks the field-line grammar after a well-framed chunked body, then a
    pipelined request: invalid grammar, RFC 9112 §2.2 SHOULD 400 + close. `inner`: $S lies inside
    the trailer section (by RFC framing), so executing it is smuggling."""
    follow = "" if inner else FOLLOW
    return Case(name, "trailers", "RFC 9112 §2.2 (invalid grammar), §7.1.2, §5", "SHOULD", "reject",
                post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n" + trailer + "\r\n") + follow,
                body="hello", inner=inner, followups=0 if inner else 1,
                methods=("POST",) if inner else ("POST", "GET"), note=note)


# A limit that holds for bytes sent at once but not for the same bytes sent in small TCP segments
# depends on segmentation: the pair is compared by verdict.segmentation_divergences.
SEG_PAIR = "segmentation-pair:header-100k"

CASES += [
    # ---- size limits (RFC 9110 §5.4, RFC 6585 §5; 431 / 414 are the expected answers) ----
    big_header("huge_header_value_1m", MIB, "a 1 MiB field value sent at once"),
    big_header("huge_header_value_8m", 8 * MIB, "an 8 MiB field value sent at once"),
    big_header("huge_header_100k_at_once", 100 * KIB, "100 KiB value in one send", tags=(SEG_PAIR,)),
    big_header("huge_header_100k_segmented", 100 * KIB, "the same 100 KiB in 1 KiB segments",
               segment=KIB, tags=(SEG_PAIR,)),
    Case("many_header_fields_10000", "limits", "RFC 9110 §5.4, RFC 6585 §5", "MAY", "reject",
         get("".join(f"X-Adv-{i}: v\r\n" for i in range(10000))), level_reason=LIMIT_REASON),
    Case("huge_request_target_1m", "limits", "RFC 9112 §3 (long target), RFC 9110 §4.1", "MAY", "reject",
         get(target="$T&" + "a" * MIB), note="414 is the expected answer", level_reason=LIMIT_REASON),

    # ---- chunked framing corners (RFC 9112 §7.1) ----
    bad_chunk_line("chunk_size_trailing_space", "5 \r\nhello\r\n0\r\n\r\n",
                   "BWS is allowed only before ';' of a chunk-ext: '5 ' is not a chunk-size line"),
    bad_chunk_line("chunk_size_trailing_tab", "5\t\r\nhello\r\n0\r\n\r\n", "HTAB after the chunk-size"),
    Case("te_identity_chunked", "transfer-encoding", "RFC 9112 §6.1 (unknown coding), §7", "SHOULD", "reject",
         post("Transfer-Encoding: identity, chunked\r\n", CHUNKED_HELLO) + FOLLOW, body="hello", followups=1,
         methods=("POST", "GET"), note="'identity' is no transfer coding (RFC 9112 §7): unknown, SHOULD 501"),
    Case("te_chunked_chunked_list", "transfer-encoding", "RFC 9112 §2.2 (invalid grammar), §6.1", "SHOULD", "reject",
         post("Transfer-Encoding: chunked, chunked\r\n", CHUNKED_HELLO) + FOLLOW, body="hello", followups=1,
         methods=("POST", "GET"), note="chunked applied twice in one field: a sender MUST NOT; decoding twice misframes"),
    Case("chunk_ext_1m", "chunked", "RFC 9112 §7.1.1 (extension length), §7.1.1", "MAY", "reject",
         post("Transfer-Encoding: chunked\r\n", "5;" + "a" * MIB + "\r\nhello\r\n0\r\n\r\n") + FOLLOW,
         body="hello", followups=1, methods=("POST", "GET"),
         note="a server ought to limit chunk extensions (4xx); accepting is allowed but must frame right"),
    Case("chunk_size_1000_leading_zeros", "chunked", "RFC 9112 §7.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "0" * 1000 + "5\r\nhello\r\n0\r\n\r\n") + FOLLOW,
         body="hello", followups=1, methods=("POST", "GET"),
         note="chunk-size = 1*HEXDIG: valid; a parser that caps the digit count may refuse (informational), "
              "one that truncates them misframes"),
    bad_trailer("chunk_trailer_space_before_colon", "X-Trailer : 1\r\n", "whitespace before the colon of a trailer"),
    bad_trailer("chunk_trailer_obs_fold", "X-Trailer: 1\r\n 2\r\n", "obs-fold in the trailer section"),
    bad_trailer("chunk_trailer_request_line", "GET $S HTTP/1.1\r\nHost: $H\r\n",
                "a request-line inside the trailer section: a parser that ends the body at the last-chunk runs it",
                inner=True),
    Case("chunk_ext_bws_tabs", "chunked", "RFC 9112 §7.1.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", "5\t;\tfoo\t=\tbar\r\nhello\r\n0\r\n\r\n"), body="hello",
         methods=("POST",), note="BWS (SP / HTAB) around ';' and '=' is valid"),
    Case("chunk_ext_bws_quoted", "chunked", "RFC 9112 §7.1.1", "MUST", "serve",
         post("Transfer-Encoding: chunked\r\n", '5 ; foo = "b a;r" ; baz\r\nhello\r\n0\r\n\r\n'), body="hello",
         methods=("POST",), note="BWS around a quoted value and a second name-only extension"),
]
