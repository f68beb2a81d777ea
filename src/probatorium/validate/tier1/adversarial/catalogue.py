"""The adversarial case model and the template renderer.

A case is DATA (see cases.py): the exact bytes to send as a template, how
they are split into TCP segments and paced, the RFC clause, the requirement
level, and the outcome the RFC requires. Templates are latin-1 strings so any
byte (NUL, CR, 0xFF) can be written literally, with these markers:

  $T   the probed request-target (the echo route plus a unique `adv=` nonce)
  $S   a second request-target (nonce + "-s"): the smuggled / follow-up request
  $U   a third request-target (nonce + "-u")
  $H   the Host value (HOST:PORT)
  $A   its address part (HOST), for a Host that differs from $H in the port only
  $|   a segment boundary (each segment is one send, `pause` seconds apart)
  $CLn decimal length of the bytes from the end of the head that follows the
       marker (the next CRLF CRLF) up to the marker $En (or the end)
  $Xn  hexadecimal length of the bytes from the end of the line of the marker
       (the next CRLF) up to $En (or the end)
Length markers are resolved right-to-left, so an inner chunk size is final
before an outer Content-Length counts it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Literal

Level = Literal["MUST", "SHOULD", "MAY"]
Expect = Literal["reject", "serve", "either"]

SEG = "$|"


@dataclass(frozen=True)
class Case:
    """One adversarial HTTP/1.1 case and the outcome the RFC requires.

    expect: `reject` = the primary request is invalid and must not reach the
    application (at `level`: MUST → acceptance is `wrong_accepted`, SHOULD/MAY →
    `lenient_accepted`); `serve` = the request is valid and must reach the
    application exactly (rejecting it is `refused_valid`, informational);
    `either` = the RFC allows rejecting or serving, but what is served must be
    right (body, sanitised field values).
    """

    name: str
    group: str
    clause: str
    level: Level
    expect: Expect
    template: str
    pause: float = 0.0
    body: str | None = None  # body the application must receive if it serves the primary
    close: bool = False  # MUST close after responding; nothing after the primary may be processed
    keep_open_ok: bool = False  # after a REJECTION the RFC does not require closing (only not continuing)
    inner: bool = False  # $S lies INSIDE the primary's body by RFC framing: executing it is smuggling
    followups: int = 0  # further requests a keep-alive server may legitimately serve
    methods: tuple[str, ...] = ("GET",)  # request methods by RFC framing, for response framing (HEAD)
    sanitize: bool = False  # served field values must carry no CR/LF/NUL (RFC 9110 §5.5)
    forbid_headers: tuple[str, ...] = ()  # field names the application must not see
    no_interim: bool = False  # a 100 Continue is forbidden (HTTP/1.0 expectation)
    no_upgrade: bool = False  # a 101 is forbidden (invalid upgrade handshake)
    wait_ok: bool = False  # the server may legitimately keep waiting for more bytes
    note: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    level_reason: str = ""  # why `level` deliberately differs from CLAUSE_LEVELS[governing clause]
    # ---- wt-smuggle (issue 12) ----
    # The authority the application sees (an absolute-form target's, else Host) must be the
    # target's authority ($H): RFC 9112 §3.2.2. A non-echo answer to $T is "not routed".
    authority: bool = False
    # The bytes are the HTTP/2 connection preface: a server that answers with HTTP/2 frames speaks
    # HTTP/2 with prior knowledge on this port (RFC 9113 §3.3), which is not accepting a request.
    h2_preface: bool = False


# The requirement level each governing clause states, from the RFC sentence quoted beside it.
# A case's governing clause is the first one its `clause` cites; the rest are context. A
# qualifier in parentheses names one rule of a section that states several. "definition":
# the clause defines the grammar or framing without a BCP 14 keyword; a definition binds
# like a MUST (RFC 9110 §2.2: a recipient MUST be able to parse what matches the grammar).
CLAUSE_LEVELS: dict[str, Level] = {
    # "a server ... receives a sequence of octets that does not match the HTTP-message grammar
    #  ... the server SHOULD respond with a 400 (Bad Request) response and close the connection"
    "RFC 9112 §2.2 (invalid grammar)": "SHOULD",
    # "a recipient MAY recognize a single LF as a line terminator and ignore any preceding CR"
    "RFC 9112 §2.2 (bare LF)": "MAY",
    # "A recipient of such a bare CR MUST consider that element to be invalid or replace each
    #  bare CR with SP before processing the element or forwarding the message"
    "RFC 9112 §2.2 (bare CR)": "MUST",
    # "A recipient that receives whitespace between the start-line and the first header field
    #  MUST either reject the message as invalid or consume each whitespace-preceded line"
    "RFC 9112 §2.2 (whitespace after start-line)": "MUST",
    # "a server that is expecting to receive and parse a request-line SHOULD ignore at least
    #  one empty line (CRLF) received prior to the request-line"
    "RFC 9112 §2.2 (empty line)": "SHOULD",
    # "A server can send a 505 (HTTP Version Not Supported) response if it wishes, for any
    #  reason, to refuse service of the client's major protocol version" (a permission)
    "RFC 9112 §2.3 (505)": "MAY",
    # "Recipients of an invalid request-line SHOULD respond with either a 400 (Bad Request)
    #  error or a 301 (Moved Permanently) redirect with the request-target properly encoded"
    "RFC 9112 §3 (invalid request-line)": "SHOULD",
    # "recipients MAY instead parse on whitespace-delimited word boundaries and ... treat any
    #  form of whitespace as the SP separator while ignoring preceding or trailing whitespace"
    "RFC 9112 §3 (whitespace)": "MAY",
    # "A server that receives a request-target longer than any URI it wishes to parse MUST
    #  respond with a 414 (URI Too Long) status code"
    "RFC 9112 §3 (long target)": "MUST",
    # "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
    #  message that lacks a Host header field and to any request message that contains more
    #  than one Host header field line or a Host header field with an invalid field value"
    "RFC 9112 §3.2": "MUST",
    # "When an origin server receives a request with an absolute-form of request-target, the
    #  origin server MUST ignore the received Host header field (if any)"
    "RFC 9112 §3.2.2": "MUST",
    # "A server MUST reject, with a response status code of 400 (Bad Request), any received
    #  request message that contains whitespace between a header field name and colon"
    "RFC 9112 §5.1": "MUST",
    # "A server that receives an obs-fold in a request message ... MUST either reject the
    #  message by sending a 400 (Bad Request) ... or replace each received obs-fold with one
    #  or more SP octets prior to interpreting the field value"
    "RFC 9112 §5.2": "MUST",
    # "A server MAY reject a request that contains both Content-Length and Transfer-Encoding
    #  or process such a request in accordance with the Transfer-Encoding alone. Regardless,
    #  the server MUST close the connection after responding to such a request"
    "RFC 9112 §6.1 (TE and CL)": "MUST",
    # "A server or client that receives an HTTP/1.0 message containing a Transfer-Encoding
    #  header field MUST treat the message as if the framing is faulty ... and close the connection"
    "RFC 9112 §6.1 (HTTP/1.0)": "MUST",
    # "A server that receives a request message with a transfer coding it does not understand
    #  SHOULD respond with 501 (Not Implemented)"
    "RFC 9112 §6.1 (unknown coding)": "SHOULD",
    # "If a Transfer-Encoding header field is present in a request and the chunked transfer
    #  coding is not the final encoding ... the server MUST respond with the 400 (Bad Request)
    #  status code and then close the connection"
    "RFC 9112 §6.3 (4)": "MUST",
    # "If a message is received without Transfer-Encoding and with an invalid Content-Length
    #  header field ... the server MUST respond with a 400 (Bad Request) status code and then
    #  close the connection"
    "RFC 9112 §6.3 (5)": "MUST",
    # definition: "If a valid Content-Length header field is present without Transfer-Encoding,
    #  its decimal value defines the expected message body length in octets"
    "RFC 9112 §6.3 (6)": "MUST",
    # definition: "Transfer coding names are case-insensitive"
    "RFC 9112 §7": "MUST",
    # "A recipient MUST be able to parse and decode the chunked transfer coding"; a chunk-size
    # or chunk-data outside the chunk grammar leaves the chunk length undecodable, so parsers
    # disagree on where the message ends (the framing ambiguity behind request smuggling).
    "RFC 9112 §7.1": "MUST",
    # "A recipient MUST ignore unrecognized chunk extensions"
    "RFC 9112 §7.1.1": "MUST",
    # "A server ... MUST send the corresponding responses in the same order that the requests
    #  were received"
    "RFC 9112 §9.3.2": "MUST",
    # definition: "otherwise, the connection will close after the current response"
    "RFC 9112 §9.3": "MUST",
    # "A server that receives a "close" connection option MUST initiate closure of the
    #  connection after it sends the final response ... The server MUST NOT process any
    #  further requests received on that connection"
    "RFC 9112 §9.6": "MUST",
    # "Servers will usually have some timeout value beyond which they will no longer maintain
    #  an inactive connection" (no keyword for the timeout itself: a permission)
    "RFC 9112 §9.5": "MAY",
    # "A sender MUST NOT generate protocol elements that do not match the grammar defined by
    #  the corresponding ABNF rules"
    "RFC 9110 §2.2 (sender)": "MUST",
    # "A server that receives a request header field line, field value, or set of fields larger
    #  than it wishes to process MUST respond with an appropriate 4xx (Client Error) status code"
    "RFC 9110 §5.4": "MUST",
    # "a recipient of CR, LF, or NUL within a field value MUST either reject the message or
    #  replace each of those characters with SP before further processing"
    "RFC 9110 §5.5 (CR LF NUL)": "MUST",
    # "Field values containing other CTL characters are also invalid; however, recipients MAY
    #  retain such characters for the sake of robustness"
    "RFC 9110 §5.5 (other CTL)": "MAY",
    # "a recipient MUST parse and ignore a reasonable number of empty list elements"
    "RFC 9110 §5.6.1.2": "MUST",
    # "A recipient MUST NOT merge a received trailer field into the header section unless its
    #  corresponding header field definition explicitly permits"
    "RFC 9110 §6.5.1": "MUST",
    # "A server MUST NOT switch to a protocol that was not indicated by the client in the
    #  corresponding request's Upgrade header field"
    "RFC 9110 §7.8": "MUST",
    # "a recipient MAY either reject the message as invalid or replace the duplicated field
    #  values with a single valid Content-Length field" (identical values)
    "RFC 9110 §8.6 (identical)": "MAY",
    # "a recipient MUST anticipate potentially large decimal numerals and prevent parsing errors
    #  due to integer conversion overflows or precision loss"
    "RFC 9110 §8.6 (large numerals)": "MUST",
    # "All general-purpose servers MUST support the methods GET and HEAD"
    "RFC 9110 §9.1 (GET and HEAD)": "MUST",
    # "An origin server that receives a request method that is unrecognized or not implemented
    #  SHOULD respond with the 501 (Not Implemented) status code"
    "RFC 9110 §9.1 (unknown method)": "SHOULD",
    # "the server MUST NOT send content in the response" (HEAD)
    "RFC 9110 §9.3.2": "MUST",
    # "A server MUST generate a Content-Length field with a value of "0" if no content is to be
    #  sent in the response" (OPTIONS)
    "RFC 9110 §9.3.7": "MUST",
    # "An origin server MUST, upon receiving an HTTP/1.1 (or later) request that has ... a
    #  100-continue expectation ..., either send an immediate response with a final status
    #  code ... or send an immediate 100 (Continue)"; "A server MUST ignore a 100-continue
    #  expectation received in an HTTP/1.0 request"
    "RFC 9110 §10.1.1": "MUST",
    # "A server that receives an Expect field value containing a member other than 100-continue
    #  MAY respond with a 417 (Expectation Failed) status code"
    "RFC 9110 §10.1.1 (other expectation)": "MAY",
    # "Requests that contain a payload body MUST be sent in their entirety before the client
    #  can send HTTP/2 frames" (the body belongs to the HTTP/1.1 request)
    "RFC 7540 §3.2": "MUST",
    # "the server MUST stop processing the client's handshake and return an HTTP response with
    #  an appropriate error code (such as 400 Bad Request)"
    "RFC 6455 §4.2.1": "MUST",
    # ---- wt-slow (issue 12, items 5 and 6) ----
    # "A server ought to limit the total length of chunk extensions received in a request to an
    #  amount reasonable for the services provided ... and generate an appropriate 4xx (Client
    #  Error) response if that amount is exceeded" ("ought to": no keyword, a permission)
    "RFC 9112 §7.1.1 (extension length)": "MAY",
    # ---- wt-smuggle (issue 12) ----
    # "A recipient that receives a message with a major version number that it implements and a
    #  minor version number higher than what it implements SHOULD process the message as if it
    #  were in the highest minor version within that major version to which the recipient is
    #  conformant"
    "RFC 9110 §2.5 (higher minor)": "SHOULD",
}


def governing_clause(case: Case) -> str:
    """The clause whose keyword sets the case's level: the first one it cites."""
    return case.clause.split(", ")[0]


def level_problem(case: Case) -> str | None:
    """Why the case's level is not the level of its governing clause, if it is not and no
    `level_reason` says why."""
    clause = governing_clause(case)
    stated = CLAUSE_LEVELS.get(clause)
    if stated is None:
        return f"case {case.name!r}: governing clause {clause!r} is not in CLAUSE_LEVELS"
    if stated != case.level and not case.level_reason:
        return f"case {case.name!r}: level {case.level} but {clause} says {stated} (no level_reason)"
    return None


@dataclass(frozen=True)
class Rendered:
    """A case made concrete for one probe."""

    segments: tuple[bytes, ...]
    nonce: str
    body: bytes | None
    host: str = ""  # the Host value ($H) the case was rendered for

    @property
    def data(self) -> bytes:
        return b"".join(self.segments)

    @property
    def body_sha256(self) -> str | None:
        return None if self.body is None else hashlib.sha256(self.body).hexdigest()


_MARK_RE = re.compile(rb"\$(CL|X)(\d)")


def _resolve_lengths(raw: bytes) -> bytes:
    """Replace $CLn / $Xn markers by the lengths of their regions (right to left)."""
    while True:
        marks = list(_MARK_RE.finditer(raw))
        if not marks:
            break
        m = marks[-1]
        kind, n = m.group(1), m.group(2)
        end_marker = b"$E" + n
        sep = b"\r\n\r\n" if kind == b"CL" else b"\r\n"
        start = raw.find(sep, m.end())
        if start < 0:
            raise ValueError(f"length marker ${kind.decode()}{n.decode()} has no following {sep!r}")
        start += len(sep)
        end = raw.find(end_marker, start)
        region = raw[start:] if end < 0 else raw[start:end]
        length = len(re.sub(rb"\$E\d|\$\|", b"", region))
        value = str(length).encode() if kind == b"CL" else format(length, "x").encode()
        raw = raw[: m.start()] + value + raw[m.end() :]
    return re.sub(rb"\$E\d", b"", raw)


def render(case: Case, *, target: str, host: str, nonce: str, echo: bool) -> Rendered:
    """Make a case concrete: substitute targets and host, resolve lengths, split segments.

    In echo mode each target carries the nonce as an `adv=` query so the echo
    route reports which request reached the application; otherwise all three
    targets are the probe path itself.
    """
    if echo:
        joiner = "&" if "?" in target else "?"
        t, s, u = (f"{target}{joiner}adv={nonce}{suffix}" for suffix in ("", "-s", "-u"))
    else:
        t = s = u = target

    def subst(text: str) -> bytes:
        text = text.replace("$T", t).replace("$S", s).replace("$U", u).replace("$H", host)
        text = text.replace("$A", host.rpartition(":")[0] or host)
        return text.encode("latin-1")

    raw = _resolve_lengths(subst(case.template))
    segments = tuple(p for p in raw.split(SEG.encode()) if p)
    body = None if case.body is None else _resolve_lengths(subst(case.body))
    return Rendered(segments=segments, nonce=nonce, body=body, host=host)


def validate_catalogue(cases: list[Case]) -> None:
    """Check the catalogue's own consistency (unique names, levels of the cited clauses, renderable templates)."""
    seen: set[str] = set()
    for c in cases:
        if c.name in seen:
            raise ValueError(f"duplicate adversarial case name {c.name!r}")
        seen.add(c.name)
        if c.level not in ("MUST", "SHOULD", "MAY") or c.expect not in ("reject", "serve", "either"):
            raise ValueError(f"case {c.name!r}: bad level/expect")
        if not c.clause:
            raise ValueError(f"case {c.name!r}: no RFC clause")
        if (problem := level_problem(c)) is not None:
            raise ValueError(problem)
        render(c, target="/echo", host="127.0.0.1:1", nonce="n", echo=True)
