"""Unit tests for the adversarial case model, the template renderer and the catalogue data."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

import pytest

from probatorium.validate.tier1.adversarial.cases import CASES
from probatorium.validate.tier1.adversarial.catalogue import (
    CLAUSE_LEVELS, Case, governing_clause, level_problem, render, validate_catalogue,
)

BY_NAME = {c.name: c for c in CASES}
TARGET, HOST, NONCE = "/echo", "127.0.0.1:8080", "w3-17"
REQUIRED_GROUPS = {
    "line-endings", "fields", "content-length", "transfer-encoding", "chunked", "trailers", "host",
    "request-line", "request-target", "expect", "upgrade", "pipelining", "connection", "limits", "slowloris",
}
LEFTOVER_MARKERS = (b"$T", b"$S", b"$U", b"$H", b"$|", b"$CL", b"$X", b"$E")


def rend(name_or_case, echo: bool = True, target: str = TARGET):
    case = BY_NAME[name_or_case] if isinstance(name_or_case, str) else name_or_case
    return render(case, target=target, host=HOST, nonce=NONCE, echo=echo)


# --- a small request parser of our own, to re-read what the renderer produced ----------


def split_head(data: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    """(request-line, {lower name: [values]}, rest after the blank line)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no end of head in {data[:80]!r}"
    line, *fields = head.split(b"\r\n")
    out: dict[bytes, list[bytes]] = {}
    for f in fields:
        name, _, value = f.partition(b":")
        out.setdefault(name.strip().lower(), []).append(value.strip())
    return line, out, rest


def dechunk(data: bytes) -> tuple[bytes, bytes]:
    """Decode a chunked body; (body, bytes after the final CRLF)."""
    body = b""
    while True:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while True:
                trailer, _, data = data.partition(b"\r\n")
                if trailer == b"":
                    return body, data
        body += data[:size]
        assert data[size:size + 2] == b"\r\n"
        data = data[size + 2:]


# =====================================================================================
# Every case renders, in both modes
# =====================================================================================


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("echo", [True, False], ids=["echo", "status"])
def test_every_case_renders(case, echo):
    r = rend(case, echo=echo)
    assert r.nonce == NONCE
    assert r.segments and all(r.segments), "no empty segments"
    assert r.data == b"".join(r.segments)
    for marker in LEFTOVER_MARKERS:
        assert marker not in r.data, f"unresolved {marker!r}"
    if r.body is not None:
        for marker in LEFTOVER_MARKERS:
            assert marker not in r.body
        assert r.body_sha256 == hashlib.sha256(r.body).hexdigest()
    else:
        assert r.body_sha256 is None
    if echo:
        if "$T" in case.template:
            assert f"adv={NONCE}".encode() in r.data
        for suffix, marker in (("-s", "$S"), ("-u", "$U")):
            assert (f"adv={NONCE}{suffix}".encode() in r.data) == (marker in case.template)
    else:
        assert b"adv=" not in r.data
    # everything sent starts like a request (or a deliberately leading empty line)
    assert r.data[:1].isalpha() or r.data.startswith(b"\r\n")


def test_validate_catalogue_accepts_the_shipped_catalogue():
    validate_catalogue(CASES)


def test_echo_targets_carry_nonce_and_suffixes():
    r = rend("valid_pipeline_three")
    assert r.data.count(b"GET /echo?adv=w3-17 HTTP/1.1") == 1
    assert r.data.count(b"GET /echo?adv=w3-17-s HTTP/1.1") == 1
    assert r.data.count(b"GET /echo?adv=w3-17-u HTTP/1.1") == 1
    assert r.data.count(f"Host: {HOST}\r\n".encode()) == 3


def test_echo_target_with_a_query_uses_ampersand():
    r = rend("valid_get", target="/echo?x=1")
    assert r.data.startswith(b"GET /echo?x=1&adv=w3-17 HTTP/1.1\r\n")


def test_status_only_mode_uses_the_probe_path_for_every_target():
    r = rend("valid_pipeline_three", echo=False, target="/healthz")
    assert r.data.count(b"GET /healthz HTTP/1.1\r\n") == 3


def test_templates_are_latin1_so_any_byte_is_literal():
    assert b"X-Adv: a\x00b\r\n" in rend("nul_in_value").data
    assert b"X-\xe9: b\r\n" in rend("nonascii_field_name").data
    assert b"&x\xff HTTP/1.1" in rend("target_non_ascii").data
    assert b"Transfer-Encoding: \x0bchunked\r\n" in rend("te_chunked_vtab").data


# =====================================================================================
# Length markers
# =====================================================================================


def test_te_cl_smuggle_lengths():
    r = rend("te_cl_smuggle")
    line, fields, rest = split_head(r.data)
    assert line == b"POST /echo?adv=w3-17 HTTP/1.1"
    assert fields[b"transfer-encoding"] == [b"chunked"]
    cl = int(fields[b"content-length"][0])
    smug = f"GET /echo?adv={NONCE}-s HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    # $X2: the chunk-size is the hex length of the smuggled request
    size_line, _, after = rest.partition(b"\r\n")
    assert int(size_line, 16) == len(smug)
    assert size_line == format(len(smug), "x").encode()
    # $CL1: Content-Length covers exactly the chunk-size line (up to $E1)
    assert cl == len(size_line) + 2
    # a Content-Length parser sees the smuggled request right after the body ...
    assert rest[cl:].startswith(smug)
    # ... a chunked parser sees it as the chunk data, and the stream ends with the message
    body, tail = dechunk(rest)
    assert body == smug == r.body and tail == b""


def test_cl_te_smuggle_lengths():
    r = rend("cl_te_smuggle")
    _, fields, rest = split_head(r.data)
    cl = int(fields[b"content-length"][0])
    smug = f"GET /echo?adv={NONCE}-s HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    assert cl == len(rest) == len(b"0\r\n\r\n" + smug)
    body, tail = dechunk(rest)
    assert body == b"" == r.body and tail == smug


def test_valid_pipeline_post_get_lengths():
    r = rend("valid_pipeline_post_get")
    line, fields, rest = split_head(r.data)
    assert line.startswith(b"POST ")
    cl = int(fields[b"content-length"][0])
    assert cl == 3 and rest[:cl] == b"abc" == r.body
    follow_line, follow_fields, follow_rest = split_head(rest[cl:])
    assert follow_line == f"GET /echo?adv={NONCE}-s HTTP/1.1".encode()
    assert follow_fields[b"host"] == [HOST.encode()] and follow_rest == b""


def test_get_with_body_cl_lengths():
    r = rend("get_with_body_cl")
    line, fields, rest = split_head(r.data)
    assert line.startswith(b"GET ")
    cl = int(fields[b"content-length"][0])
    assert cl == len(rest) and rest == r.body
    assert rest.startswith(f"GET /echo?adv={NONCE}-s HTTP/1.1\r\n".encode())


@pytest.mark.parametrize("name", [c.name for c in CASES if "$CL1" in c.template and "$E1" not in c.template
                                  and ":\r\n $CL1" not in c.template])  # obs-fold: split_head cannot read it
@pytest.mark.parametrize("echo", [True, False], ids=["echo", "status"])
def test_cl_marker_without_end_marker_counts_the_rest(name, echo):
    """Without $E1 the marker's Content-Length is the length of everything after the head,
    computed after target substitution (so it differs by mode, and is right in each)."""
    _, fields, rest = split_head(rend(name, echo=echo).data)
    values = [int(v) for k, vs in fields.items() if k.rstrip(b" \t") == b"content-length" for v in vs]
    assert len(rest) in values, (values, len(rest))


def test_cl_marker_counts_to_end_without_end_marker():
    case = Case("t", "g", "RFC x", "MUST", "serve", "POST / HTTP/1.1\r\nContent-Length: $CL1\r\n\r\nhello")
    assert rend(case).data.endswith(b"Content-Length: 5\r\n\r\nhello")


def test_cl_marker_ignores_segment_and_end_markers_in_its_region():
    case = Case("t", "g", "RFC x", "MUST", "serve",
                "POST / HTTP/1.1\r\nContent-Length: $CL1\r\n\r\nab$|cd$E1$|GET / HTTP/1.1\r\n\r\n")
    r = rend(case)
    assert r.segments == (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", b"cd", b"GET / HTTP/1.1\r\n\r\n")


def test_x_marker_is_lowercase_hex_from_the_end_of_its_line():
    payload = "y" * 26
    case = Case("t", "g", "RFC x", "MUST", "serve",
                f"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n$X1;e=1\r\n{payload}$E1\r\n0\r\n\r\n")
    assert b"\r\n\r\n1a;e=1\r\n" + payload.encode() + b"\r\n0\r\n\r\n" in rend(case).data


def test_nested_markers_resolve_right_to_left():
    # the outer Content-Length counts the inner chunk-size after it became final (3 digits: 'fa0')
    payload = "z" * 4000
    case = Case("t", "g", "RFC x", "MUST", "serve",
                f"POST / HTTP/1.1\r\nContent-Length: $CL1\r\n\r\n$X2\r\n{payload}$E2\r\n$E1")
    _, fields, rest = split_head(rend(case).data)
    assert rest.startswith(b"fa0\r\n")
    assert int(fields[b"content-length"][0]) == len(rest) == 3 + 2 + 4000 + 2


def test_marker_lengths_see_substituted_targets():
    case = Case("t", "g", "RFC x", "MUST", "serve", "POST $T HTTP/1.1\r\nContent-Length: $CL1\r\n\r\n$S")
    echo = rend(case, echo=True)
    assert echo.data.endswith(f"Content-Length: {len('/echo?adv=w3-17-s')}\r\n\r\n/echo?adv=w3-17-s".encode())
    status = rend(case, echo=False)
    assert status.data.endswith(b"Content-Length: 5\r\n\r\n/echo")


def test_marker_without_following_separator_is_an_error():
    case = Case("t", "g", "RFC x", "MUST", "serve", "POST / HTTP/1.1\r\nContent-Length: $CL1\r\n")
    with pytest.raises(ValueError, match="no following"):
        rend(case)


def test_body_is_rendered_with_the_same_substitutions():
    r = rend("get_with_body_cl")
    assert r.body == f"GET /echo?adv={NONCE}-s HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


# =====================================================================================
# Segments
# =====================================================================================


def test_segments_split_on_pipe_marker():
    r = rend("expect_100_continue")
    assert len(r.segments) == 2
    assert r.segments[0].endswith(b"Content-Length: 5\r\n\r\n") and r.segments[1] == b"hello"


def test_upgrade_body_is_three_segments():
    assert rend("upgrade_unknown_with_body").segments[1:] == (b" wor", b"ld!")


def test_slowloris_head_segments_reassemble_into_one_request():
    r = rend("slowloris_head")
    assert len(r.segments) == 15
    assert r.data == f"GET /echo?adv={NONCE} HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: abcdefghij\r\n\r\n".encode()
    assert b"\r" == r.segments[-2] and b"\n" == r.segments[-1]


def test_slowloris_body_one_byte_per_segment():
    r = rend("slowloris_body")
    # the head travels with the first body byte, then one byte per send
    assert r.segments[0].endswith(b"Content-Length: 10\r\n\r\n0")
    assert r.segments[1:] == tuple(bytes([c]) for c in b"123456789")


def test_leading_segment_marker_makes_no_empty_segment():
    case = Case("t", "g", "RFC x", "MUST", "serve", "$|GET / HTTP/1.1\r\n$|$|\r\n$|")
    assert rend(case).segments == (b"GET / HTTP/1.1\r\n", b"\r\n")


def test_cases_with_pause_have_several_segments():
    for c in CASES:
        if c.pause:
            assert len(rend(c).segments) > 1, c.name


# =====================================================================================
# validate_catalogue
# =====================================================================================


def test_validate_catalogue_rejects_duplicate_names():
    with pytest.raises(ValueError, match="duplicate"):
        validate_catalogue([*CASES, replace(CASES[3])])


def test_validate_catalogue_rejects_bad_level_or_expect():
    with pytest.raises(ValueError, match="level/expect"):
        validate_catalogue([replace(CASES[0], level="MUSTNT")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level/expect"):
        validate_catalogue([replace(CASES[0], expect="ignore")])  # type: ignore[arg-type]


def test_validate_catalogue_rejects_missing_clause():
    with pytest.raises(ValueError, match="clause"):
        validate_catalogue([replace(CASES[0], clause="")])


def test_validate_catalogue_rejects_unrenderable_template():
    with pytest.raises(ValueError):
        validate_catalogue([Case("t", "g", "RFC x", "MUST", "serve", "GET / HTTP/1.1\r\nContent-Length: $CL1")])


# =====================================================================================
# Catalogue contents
# =====================================================================================


def test_catalogue_size():
    assert len(CASES) >= 60


def test_catalogue_covers_required_groups():
    groups = Counter(c.group for c in CASES)
    missing = REQUIRED_GROUPS - set(groups)
    assert not missing, f"groups without a case: {sorted(missing)}"


def test_every_case_names_an_rfc_clause():
    bad = [c.name for c in CASES if not c.clause.startswith("RFC")]
    assert bad == []


def test_names_are_unique_identifiers():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert all(n.isidentifier() and n == n.lower() for n in names)


def test_level_and_expect_values():
    assert {c.level for c in CASES} <= {"MUST", "SHOULD", "MAY"}
    assert {c.expect for c in CASES} <= {"reject", "serve", "either"}
    # each level/expectation is actually used
    assert {c.expect for c in CASES} == {"reject", "serve", "either"}
    assert {c.level for c in CASES} == {"MUST", "SHOULD", "MAY"}


def test_flags_are_consistent_with_templates():
    for c in CASES:
        if c.inner or c.followups:
            assert "$S" in c.template, c.name
        if c.followups >= 2:
            assert "$U" in c.template, c.name
        assert c.methods and all(m.isupper() for m in c.methods), c.name
        assert all(h == h.lower() for h in c.forbid_headers), c.name


def test_request_count_matches_methods_for_pipelined_cases():
    # every request-line in the rendered bytes that the RFC frames as a request has a method entry
    for c in CASES:
        if c.followups:
            assert len(c.methods) >= 1 + c.followups, c.name


def test_serving_cases_with_a_body_render_it():
    for c in CASES:
        if c.expect == "serve" and c.methods[0] == "POST":
            assert c.body is not None, c.name
            assert rend(c).body is not None, c.name


# =====================================================================================
# Levels are the levels of the clauses the cases cite
# =====================================================================================


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_level_is_the_keyword_of_its_governing_clause(case):
    clause = governing_clause(case)
    assert clause in CLAUSE_LEVELS, f"{case.name}: {clause!r} has no entry in CLAUSE_LEVELS"
    if case.level_reason:
        assert case.level != CLAUSE_LEVELS[clause], f"{case.name}: a level_reason without a deviation"
    else:
        assert case.level == CLAUSE_LEVELS[clause], f"{case.name}: {case.level} but {clause} says " \
            f"{CLAUSE_LEVELS[clause]}"


def test_clause_table_holds_only_keywords_and_every_entry_is_cited():
    assert set(CLAUSE_LEVELS.values()) <= {"MUST", "SHOULD", "MAY"}
    cited = {governing_clause(c) for c in CASES}
    assert set(CLAUSE_LEVELS) - cited == set(), "table entries no case cites"


def test_validate_catalogue_rejects_a_level_its_clause_does_not_state():
    wrong = replace(BY_NAME["chunk_ext_nul"], level="MUST")
    assert "says SHOULD" in (level_problem(wrong) or "")
    with pytest.raises(ValueError, match="says SHOULD"):
        validate_catalogue([wrong])
    validate_catalogue([replace(wrong, level_reason="a deliberate deviation")])


def test_validate_catalogue_rejects_a_clause_outside_the_table():
    with pytest.raises(ValueError, match="not in CLAUSE_LEVELS"):
        validate_catalogue([replace(CASES[0], clause="RFC 9999 §1")])


def test_unambiguous_chunk_line_errors_are_should_and_length_errors_must():
    """RFC 9112 §2.2: invalid grammar is a SHOULD; a chunk length that cannot be decoded is the
    framing ambiguity §7.1 covers."""
    for name in ("chunk_ext_nul", "chunk_ext_bare_lf", "chunk_size_bare_lf", "chunk_data_bare_lf"):
        c = BY_NAME[name]
        assert (c.level, c.close, c.body) == ("SHOULD", False, "hello"), name
    for name in ("chunk_size_0x_prefix", "chunk_size_plus", "chunk_data_missing_crlf", "chunk_data_too_long",
                 "chunk_last_missing", "chunk_size_overflow"):
        assert BY_NAME[name].level == "MUST" and BY_NAME[name].close, name


def test_other_port_host_keeps_the_targets_address_off_loopback():
    """$A is $H's address part: on a server host's address (multi-host drivers) the Host of
    absolute_form_other_port still differs from the target's authority in the port only."""
    case = next(c for c in CASES if c.name == "absolute_form_other_port")
    for addr, want in (("10.213.7.3:8123", b"Host: 10.213.7.3:1\r\n"), ("127.0.0.1:80", b"Host: 127.0.0.1:1\r\n"),
                       ("[::1]:8080", b"Host: [::1]:1\r\n")):
        raw = b"".join(render(case, target="/echo", host=addr, nonce="n", echo=True).segments)
        assert want in raw and f"http://{addr}/echo".encode() in raw
