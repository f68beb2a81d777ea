#!/usr/bin/env python3
"""A strict HTTP/1.1 origin server for tests, with optional PLANTED bugs.

Stdlib only, one file, one thread per connection::

    python tests/servers/h1server.py --port 0 [--bug NAME ...]
        [--header-timeout 10] [--idle-timeout 15] [--host 127.0.0.1]

Once listening it prints ``ready addr=127.0.0.1:PORT`` (flushed). SIGTERM or
SIGINT: stop accepting, let in-flight requests finish, close idle
connections, exit 0.

It is the "strictly correct server" the adversarial slice is judged against:
with no ``--bug`` every request is parsed from the RFC 9112 / RFC 9110
grammar and anything outside it is refused. Each ``--bug NAME`` plants
exactly one realistic parser or framing defect; everything else stays strict.

Strict behaviour (no bugs)
--------------------------
* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 §3):
  exactly one SP between the parts; method is a token; version exactly
  ``HTTP/1.0`` or ``HTTP/1.1`` (another ``HTTP/d.d`` → 505, garbage → 400).
  Empty lines (CRLF) before the request-line are ignored (§2.2 SHOULD).
* Every line of the head ends in CRLF; a bare LF terminator or a bare CR
  anywhere → 400 (§2.2 allows LF as a MAY; strict choice is to refuse).
* request-target (§3.2): origin-form (path and query checked against the
  RFC 3986 characters, ``%HH`` well formed, no fragment); absolute-form only
  ``http``/``https`` with a valid non-empty authority and no userinfo (routed
  by its path; Host still required on 1.1, §3.2.2); asterisk-form only for
  OPTIONS; authority-form only for CONNECT (CONNECT is then answered 405 and
  the connection closed). Anything else, or any byte outside 0x21-0x7E → 400.
* field-line = field-name ":" OWS field-value OWS (§5): name a non-empty
  token; whitespace before the colon → 400 (§5.1 MUST); obs-fold (a line
  starting with SP/HTAB, including right after the request-line) → 400
  (§5.2); CTLs other than HTAB (NUL, CR, DEL, ...) in a value → 400
  (RFC 9110 §5.5); obs-text (0x80-0xFF) accepted; a line without colon → 400.
* Limits: request-line 8 KiB → 414; header section 16 KiB or more than 100
  field lines → 431; body (either framing) 1 MiB → 413.
* Host (§3.2): an HTTP/1.1 request needs exactly one Host; more than one in
  any version → 400; value must be ``uri-host [ ":" port ]`` (RFC 3986 reg-
  name / IPv4 / [IPv6], port at most 65535, no ``@``, ``/`` or spaces) or
  empty (RFC 9110 §7.2).
* Content-Length (RFC 9110 §8.6, RFC 9112 §6.3): 1*DIGIT; several field
  lines or a list are accepted only if every member is the same string
  (``5, 5`` → 5), otherwise 400; empty members → 400.
* Transfer-Encoding (RFC 9112 §6.1, §6.3): ``chunked`` (case-insensitive,
  no parameters) must be present once and last, else 400; any other coding
  before it → 501; TE on HTTP/1.0 → 400; TE together with Content-Length →
  400. All of these close the connection.
* Chunked body (§7.1): chunk-size = 1*HEXDIG (at most 16 digits after any
  leading zeros), chunk-ext
  ``*( BWS ";" BWS name [ BWS "=" BWS token / quoted-string ] )``, CRLF after
  the size line and after the data exactly; trailer fields parsed with the
  field grammar and discarded; any violation → 400 and close.
* Expect (RFC 9110 §10.1.1): ``100-continue`` on HTTP/1.1 sends ``HTTP/1.1
  100 Continue`` before the body is read (only if one is expected); on
  HTTP/1.0 it is ignored; any other expectation → 417.
* Connection (§9.3, §9.6): after any 400/408/413/414/417/431/501/505 the
  response carries ``Connection: close`` and the connection is closed (write
  side shut, remaining input drained and discarded, never parsed). A request
  with ``Connection: close`` is answered and nothing after it is processed.
  HTTP/1.0 persists only with ``Connection: keep-alive``. Pipelined requests
  are answered in order.
* Timeouts: the head of a request must arrive within ``--header-timeout``
  (default 10 s, counted from its first byte; 408 + close if partial); an idle
  keep-alive connection is closed silently after ``--idle-timeout`` (15 s);
  body reads time out after ``--idle-timeout`` without progress (408 + close).
* Upgrade is ignored (answered as plain HTTP/1.1, body read by its framing).
* A higher HTTP/1 minor version (``HTTP/1.2``) is processed as HTTP/1.1
  (RFC 9110 §2.5 SHOULD); another major version gets 505.
* Responses: ``Content-Length`` on every response with a body (chunked only
  for ``/chunked`` / ``/echo?chunked=1`` and only to HTTP/1.1 requests); no
  body and no Content-Length on 204 and 304; HEAD gets the headers GET would
  get and no body; header values never contain CR, LF or NUL.

Routes: ``GET /healthz`` → ``ok``; ``GET /debug/vars`` → JSON ``sse_open``,
``ws_open``, ``tasks`` (live threads), ``requests`` (requests that reached the
routes, i.e. the application: parser rejections are not counted);
``/echo`` and ``/echo/...`` with ANY method → JSON ``method``, ``target``,
``http_version``, ``headers`` ([[name, value], ...] as received, values
OWS-trimmed, latin-1), ``body_length``, ``body_sha256`` (of the decoded body);
``GET /`` → ``hello``; ``GET /nocontent`` → 204; ``GET /notmodified`` → 304
with an ETag; ``GET /chunked`` → chunked body; ``OPTIONS *`` → 200 with
Allow; other methods on those fixed routes → 405; anything else → 404. Any
request carrying ``X-Request-Id`` gets it back as ``X-Request-Id`` (in strict
mode its value cannot hold CR/LF/NUL, and the response writer enforces it).
The refapps' raw-ASGI probe routes (docs/asgi-ws-corners.md): ``GET
/_probatorium/scope...`` → the scope a conformant ASGI server would build, and
``GET /_probatorium/orphan`` → 1 KiB chunks every 20 ms until a send fails
(counted in ``/debug/vars`` ``orphans_open``); ``--bug scope-port-str`` and
``--bug orphan-kept`` plant one defect each.

Planted bugs (``--bug NAME``, repeatable or comma-separated)
------------------------------------------------------------
lf-only
    Accepts a bare LF as the line terminator of the request-line and field
    lines. RFC 9112 §2.2 allows this (MAY), so it is the LENIENT control
    case, not a violation; chunked framing lines stay strict.
space-before-colon
    Accepts ``Name : value`` and trims the space from the name. Violates
    RFC 9112 §5.1 (server MUST reject whitespace between name and colon).
obs-fold
    Accepts obs-fold and keeps CRLF + the leading whitespace inside the value.
    Violates RFC 9112 §5.2 (MUST reject with 400 or replace each obs-fold with
    SP before interpreting the value).
nul-in-value
    Passes NUL and bare CR through into field values. Violates RFC 9110 §5.5
    (a recipient of CR, LF or NUL in a field value MUST reject the message or
    replace them with SP).
cl-plus
    Parses Content-Length with Python ``int()`` (falling back to base 0), so
    ``+10``, `` 10``, ``1_0`` and ``0x10`` are accepted. Violates RFC 9110 §8.6
    (Content-Length = 1*DIGIT) and RFC 9112 §6.3 item 5 (invalid
    Content-Length → 400 and close).
cl-dup-first
    With several Content-Length field lines that differ, uses the first.
    Violates RFC 9112 §6.3 item 5 / RFC 9110 §8.6 (MUST treat as an
    unrecoverable framing error: 400 and close).
te-cl-prefer-cl
    With both Transfer-Encoding: chunked and Content-Length, frames the body
    by Content-Length and keeps the connection (classic CL.TE smuggling).
    Violates RFC 9112 §6.3 item 3 (TE overrides CL) and §6.1 (the server MUST
    close the connection after responding to such a request).
te-not-last
    Treats ``chunked`` anywhere in the Transfer-Encoding list as chunked
    framing (``chunked, gzip``, ``gzip, chunked``, ``chunked, chunked``).
    Violates RFC 9112 §6.3 item 4 (chunked not final → MUST 400 and close) and
    §6.1 (chunked MUST NOT be applied twice; unknown coding SHOULD be 501).
te-http10
    Honours ``Transfer-Encoding: chunked`` on an HTTP/1.0 request and keeps
    the connection open. Violates RFC 9112 §6.1 (an HTTP/1.0 message with TE
    MUST be treated as faulty framing and the connection closed).
chunk-size-lenient
    Parses the chunk size with ``int(x, 16)`` on the stripped text before
    ``;`` (accepts ``0x``, ``+``, ``_``, surrounding spaces, any number of
    digits) and ignores the chunk extensions. Violates RFC 9112 §7.1
    (chunk-size = 1*HEXDIG; chunk-ext grammar).
chunk-no-crlf
    Skips the two bytes after chunk data without checking they are CRLF.
    Violates RFC 9112 §7.1 (chunk = chunk-size [ chunk-ext ] CRLF chunk-data
    CRLF).
keepalive-after-close
    Ignores ``Connection: close`` in a request and keeps processing pipelined
    requests. Violates RFC 9112 §9.6 (MUST close after the response and MUST
    NOT process any further requests on that connection).
keepalive-after-400
    After a 400 keeps the connection open and parses the next bytes as a new
    request (after a bad head it skips to the next empty line; a body is not
    consumed). Violates RFC 9112 §6.3 items 4-5 and §9.3/§9.6 (after invalid
    framing the server MUST respond 400 and close the connection).
no-host-ok
    Accepts HTTP/1.1 requests without Host and requests with several Host
    field lines. Violates RFC 9112 §3.2 (MUST respond 400).
http09
    Answers ``GET /<path>`` with no HTTP-version (HTTP/0.9 style) with the
    bare body, then closes. Violates RFC 9112 §3 (request-line requires
    HTTP-version; invalid request-line SHOULD get 400) — HTTP/0.9 is not part
    of HTTP/1.1.
expect-http10
    Sends ``100 Continue`` to HTTP/1.0 requests with ``Expect: 100-continue``.
    Violates RFC 9110 §10.1.1 (MUST ignore that expectation in HTTP/1.0) and
    §15.2 (MUST NOT send a 1xx response to an HTTP/1.0 client).
resp-cl-mismatch
    ``/echo`` responses announce a Content-Length one SMALLER than the body,
    so one extra byte follows the response (I-RFC-1). Violates RFC 9110 §8.6
    / RFC 9112 §6.2 (Content-Length is the exact length of the content).
head-body
    Sends the body on HEAD responses (I-RFC-1). Violates RFC 9110 §9.3.2 (the
    server MUST NOT send content in a response to HEAD), RFC 9112 §6.3 item 1.
body-on-204
    ``/nocontent`` sends ``Content-Length`` and a body with its 204 (I-RFC-1).
    Violates RFC 9110 §15.3.5 (a 204 cannot contain content) and §8.6 (MUST
    NOT send Content-Length in a 204).
bad-chunked-resp
    ``/chunked`` and ``/echo?chunked=1`` write chunk sizes in DECIMAL instead
    of hexadecimal (I-RFC-1). Violates RFC 9112 §7.1 (chunk-size = 1*HEXDIG).
upgrade-body-request
    (issue 12) On a request with ``Connection: Upgrade`` and an ``Upgrade``
    other than websocket, drops the Content-Length body unread, so a body that
    is itself a request is executed. Violates RFC 9112 §6.3 (6) (the body is
    Content-Length octets of THIS request) — request smuggling.
misreport
    (issue 12) Runs the route of a request with ``Connection: Upgrade`` (the
    ``requests`` counter rises) and then answers ``400`` instead of its
    response: the client is told it was rejected although it took effect.
absolute-host-wins
    (issue 12) For an absolute-form target, hands the route only the path and
    keeps ``Host``: the application sees Host's authority. Violates RFC 9112
    §3.2.2 (MUST ignore Host and use the target's authority).
h2-preface-app
    (issue 12) Routes ``PRI * HTTP/2.0`` (the HTTP/2 connection preface) as
    a request (answered like ``OPTIONS *``). RFC 9112 §3 / §3.2.4: an invalid
    request-line SHOULD get 400; the preface must not reach the application.
malformed-500
    (issue 12) Answers 500 instead of 400 to a malformed request. RFC 9110
    §15.6: a 5xx reports the client's error as the server's.
resp-header-crlf
    Also accepts NUL and bare CR in request field values (as nul-in-value)
    and reflects ``X-Request-Id`` raw into the response header ``X-Request-Id``,
    so a NUL / bare CR (or CRLF SP with obs-fold) reaches a response header
    (I-RFC-2, response splitting). Violates RFC 9110 §5.5 (field values with
    CR, LF or NUL are invalid; a sender MUST NOT generate them) and RFC 9112
    §5 (field-line grammar).

Planted bugs of issue 12 (wt-slow: slow clients, size limits, chunked corners)
hold-partial
    No header or body timeout: a partial request line, a head trickled one byte
    at a time, or a stalled body is waited for forever (I-ADV-SLOWLORIS). RFC
    9112 §9.5 leaves timeouts to the server; holding partial requests without
    bound is the slowloris exposure.
starve
    A fixed pool of 4 worker threads serves the connections (accepted ones wait
    in a queue), so a few held connections starve new legitimate requests
    (I-ADV-STARVE, availability).
unbounded-headers
    No limit on the request-line, a field line, the header section or the
    number of fields: the head is buffered whatever its size, so memory grows
    with what a client sends (I-ADV-MEMORY). RFC 9110 §5.4 lets a server refuse
    with a 4xx; buffering without bound is the defect.
header-limit-per-read
    The 16 KiB header-section limit is checked against each recv() instead of
    the section: 100 KiB sent at once gets 431, the same bytes in 1 KiB
    segments are accepted (a limit that depends on TCP segmentation).
chunk-ext-unbounded
    No limit on the length of a chunk-size line, so a 1 MiB chunk extension is
    read and ignored (RFC 9112 §7.1.1: a server ought to limit them; accepting
    is lenient, the CVE-2023-39326 class of resource use).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote

BUGS: dict[str, str] = {
    "lf-only": "accepts bare LF line terminators in the head (RFC 9112 §2.2 MAY: lenient, control case)",
    "space-before-colon": "accepts whitespace between field name and colon (RFC 9112 §5.1 MUST reject)",
    "obs-fold": "accepts obs-fold, keeps CRLF SP in the value (RFC 9112 §5.2)",
    "nul-in-value": "passes NUL / bare CR into field values (RFC 9110 §5.5)",
    "cl-plus": "Content-Length parsed with int(): +10, 0x10, 1_0 (RFC 9110 §8.6, RFC 9112 §6.3)",
    "cl-dup-first": "differing Content-Length lines: first wins (RFC 9112 §6.3 item 5)",
    "te-cl-prefer-cl": "TE chunked + CL: frames by CL, keeps connection (RFC 9112 §6.1, §6.3 item 3)",
    "te-not-last": "chunked anywhere in the TE list counts as chunked (RFC 9112 §6.3 item 4)",
    "te-http10": "honours TE chunked on HTTP/1.0, keeps connection (RFC 9112 §6.1)",
    "chunk-size-lenient": "chunk size via int(x, 16) on stripped text (RFC 9112 §7.1)",
    "chunk-no-crlf": "CRLF after chunk data not verified (RFC 9112 §7.1)",
    "keepalive-after-close": "ignores Connection: close (RFC 9112 §9.6)",
    "keepalive-after-400": "keeps parsing after a 400 (RFC 9112 §6.3, §9.6)",
    "no-host-ok": "accepts missing / duplicated Host (RFC 9112 §3.2)",
    "http09": "answers HTTP/0.9 'GET /path' with a bare body (RFC 9112 §3)",
    "expect-http10": "sends 100 Continue to HTTP/1.0 (RFC 9110 §10.1.1, §15.2)",
    "resp-cl-mismatch": "/echo Content-Length one smaller than the body (RFC 9110 §8.6)",
    "head-body": "sends a body on HEAD responses (RFC 9110 §9.3.2)",
    "body-on-204": "/nocontent 204 carries Content-Length and a body (RFC 9110 §15.3.5)",
    "bad-chunked-resp": "response chunk sizes written in decimal (RFC 9112 §7.1)",
    "resp-header-crlf": "accepts NUL/CR in values, reflects X-Request-Id raw into the response (RFC 9110 §5.5)",
    "leak-mem": "keeps 64 KiB per request forever (a strong RSS leak: I-MEM-1)",
    "crash-path": "the process exits on GET /chunked, a path its OpenAPI lists (I-LIVENESS)",
    "leak-fd": "opens a file per request and never closes it (a strong fd leak: I-FD-1)",
    # ---- wt-slow (issue 12) ----
    "hold-partial": "no header / body timeout: partial requests are held forever (I-ADV-SLOWLORIS)",
    "starve": "a fixed pool of 4 worker threads: held connections starve new requests (I-ADV-STARVE)",
    "unbounded-headers": "no request-line / header size or count limit: the head is buffered whatever its size (I-ADV-MEMORY)",
    "header-limit-per-read": "the header-section limit is checked per recv(), not per section (segmentation-dependent)",
    "chunk-ext-unbounded": "no limit on a chunk-size line: 1 MiB chunk extensions accepted (RFC 9112 §7.1.1)",
    # ---- wt-smuggle (issue 12) ----
    "upgrade-body-request": "drops the body of an unknown-Upgrade request unread: a body that is a request runs (RFC 9112 §6.3)",
    "misreport": "runs the route of an Upgrade request, then answers 400 (the app ran; the client is told rejected)",
    "absolute-host-wins": "absolute-form: the route sees the path and Host, not the target's authority (RFC 9112 §3.2.2)",
    "h2-preface-app": "routes the HTTP/2 preface 'PRI * HTTP/2.0' as a request (RFC 9112 §3, §3.2.4)",
    "malformed-500": "answers 500 instead of 400 to malformed requests (RFC 9110 §15.6)",
    # ---- wt-wsasgi (issue 12 items 10, 11): the refapps' raw-ASGI probe routes
    "scope-port-str": "/_probatorium/scope reports server and client ports as strings (ASGI scope: I-ASGI-SCOPE)",
    "orphan-kept": "/_probatorium/orphan keeps running (counted in orphans_open) after the client reset "
                   "(I-CONN-ORPHAN)",
}
HOLD_FOREVER = 3600.0  # hold-partial: "forever" for a test server
STARVE_WORKERS = 4  # starve: the fixed pool
UNBOUNDED = 1 << 40  # unbounded-headers / chunk-ext-unbounded: no limit

MAX_REQUEST_LINE = 8192  # bytes, without CRLF
MAX_HEADER_SECTION = 16384  # bytes of field lines incl. the final empty line
MAX_FIELDS = 100
MAX_BODY = 1 << 20
MAX_CHUNK_LINE = 4096
MAX_CHUNK_DIGITS = 16
RECV_SIZE = 65536
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 1 << 20

# RFC 9110 §5.6.2 token, §5.6.4 quoted-string.
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = rb"[" + _TCHAR + rb"]+"
_QSTRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
TOKEN_RE = re.compile(_TOKEN)
# RFC 9112 §2.3 HTTP-version = HTTP-name "/" DIGIT "." DIGIT (case-sensitive).
VERSION_RE = re.compile(rb"HTTP/([0-9])\.([0-9])")
TARGET_CHARS_RE = re.compile(rb"[\x21-\x7e]+")
# RFC 3986 §3.3 / §3.4: path and query characters, pct-encoded well formed.
_PCHAR = rb"A-Za-z0-9\-._~!$&'()*+,;=:@"
PATH_RE = re.compile(rb"(?:[" + _PCHAR + rb"/]|%[0-9A-Fa-f]{2})*")
QUERY_RE = re.compile(rb"(?:[" + _PCHAR + rb"/?]|%[0-9A-Fa-f]{2})*")
# RFC 3986 §3.1 scheme, §3.2.2 reg-name, IPvFuture.
ABSOLUTE_RE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?]*)(.*)")
REGNAME_RE = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
IPVFUTURE_RE = re.compile(rb"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")
DIGITS_RE = re.compile(rb"[0-9]+")
# RFC 9110 §5.5 field-value: HTAB, SP, VCHAR, obs-text. Everything else is refused.
BAD_VALUE_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
BAD_VALUE_LENIENT_RE = re.compile(rb"[\x01-\x08\x0a-\x0c\x0e-\x1f\x7f]")  # NUL and CR let through
# RFC 9112 §7.1 chunk-size [ chunk-ext ].
CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QSTRING + rb"))?)*)"
)
# RFC 9112 §7 transfer-coding = token *( OWS ";" OWS token BWS "=" BWS ( token / quoted-string ) ).
TCODING_RE = re.compile(
    rb"(" + _TOKEN + rb")((?:[ \t]*;[ \t]*" + _TOKEN + rb"[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QSTRING + rb"))*)"
)

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
CLOSING_STATUSES = frozenset({400, 408, 413, 414, 417, 431, 500, 501, 505})
ALLOW_ALL = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


_LEAKED: list = []  # what the leak-* bugs never give back


class HTTPError(Exception):
    """A request that gets an error response."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


class Timeout(Exception):
    """No progress before the deadline."""


class PeerClosed(Exception):
    """EOF in the middle of a message."""


class StreamEnded(Exception):
    """wt-wsasgi: a route wrote its own streamed response; the connection ends."""


SCOPE_PATH = "/_probatorium/scope"  # wt-wsasgi: refapp_common/probes.py
ORPHAN_PATH = "/_probatorium/orphan"
ORPHAN_MAX_S = 20.0


@dataclass
class Request:
    method: str
    target: str
    version: tuple[int, int]
    form: str = "origin"  # origin | absolute | asterisk | authority
    path: str = "/"
    query: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunked: bool = False
    length: int = 0
    expect_continue: bool = False
    keep_alive: bool = True
    body: bytes = b""

    def values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def version_str(self) -> str:
        return f"HTTP/{self.version[0]}.{self.version[1]}"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str | bytes]] = field(default_factory=list)
    body: bytes = b""
    chunks: list[bytes] | None = None  # chunked response (HTTP/1.1 clients only)
    cl_delta: int = 0  # resp-cl-mismatch
    force_body: bool = False  # body-on-204
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # written unchecked


def valid_authority(value: bytes, *, need_host: bool, need_port: bool) -> bool:
    """uri-host [ ":" port ] (RFC 3986 §3.2.2-3.2.3), no userinfo."""
    if value.startswith(b"["):
        end = value.find(b"]")
        if end < 0:
            return False
        literal, rest = value[1:end], value[end + 1 :]
        if not IPVFUTURE_RE.fullmatch(literal):
            if b"%" in literal:  # no zone identifiers
                return False
            try:
                ipaddress.IPv6Address(literal.decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return False
        host = literal
    else:
        colon = value.find(b":")
        host, rest = (value, b"") if colon < 0 else (value[:colon], value[colon:])
        if not REGNAME_RE.fullmatch(host):
            return False
    if rest:
        if rest[:1] != b":":
            return False
        port = rest[1:]
        if port:
            if not DIGITS_RE.fullmatch(port) or len(port) > 5 or int(port) > 65535:
                return False
        elif need_port:
            return False
        if not host:  # ":80" names no host at all
            return False
    elif need_port:
        return False
    if need_host and not host:
        return False
    return True


def split_list(values: list[bytes]) -> list[bytes]:
    """RFC 9110 §5.6.1 list members (OWS-trimmed, empty members dropped)."""
    out = []
    for v in values:
        for part in v.split(b","):
            part = part.strip(b" \t")
            if part:
                out.append(part)
    return out


class Server:
    def __init__(self, host: str, port: int, bugs: frozenset[str], header_timeout: float, idle_timeout: float):
        self.host = host
        self.port = port
        self.bugs = bugs
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.conns: set[Connection] = set()
        self.listener: socket.socket | None = None
        self.orphans_open = 0  # wt-wsasgi: /_probatorium/orphan streams running

    def count_request(self) -> None:
        with self.lock:
            self.requests += 1

    def listen(self) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(1024)
        s.settimeout(0.25)
        self.listener = s
        return s.getsockname()[1]

    def serve_forever(self) -> None:
        assert self.listener is not None
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                time.sleep(0.05)  # EMFILE and friends: back off, never die
                continue
            conn = Connection(self, sock)
            with self.lock:
                self.conns.add(conn)
            if "starve" in self.bugs:
                self._pool_put(conn)
                continue
            try:
                threading.Thread(target=conn.run, daemon=True).start()
            except RuntimeError:  # cannot start a thread: drop the connection
                with self.lock:
                    self.conns.discard(conn)
                sock.close()
        self._shutdown()

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def _pool_put(self, conn: Connection) -> None:
        """starve: hand the connection to the fixed pool (started on first use)."""
        import queue

        if not hasattr(self, "_pool"):
            self._pool: queue.Queue = queue.Queue()
            for _ in range(STARVE_WORKERS):
                threading.Thread(target=self._pool_worker, daemon=True).start()
        self._pool.put(conn)

    def _pool_worker(self) -> None:
        while True:
            self._pool.get().run()

    def _shutdown(self, grace: float = 10.0) -> None:
        try:
            self.listener.close()  # type: ignore[union-attr]
        except OSError:
            pass
        end = time.monotonic() + grace
        while time.monotonic() < end:
            with self.lock:
                conns = list(self.conns)
            if not conns:
                break
            for c in conns:
                if c.idle:
                    c.wake()
            time.sleep(0.05)


class Connection:
    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.bugs = server.bugs
        self.sock = sock
        self.buf = bytearray()
        self.last_recv = 0
        self.first = True
        self.idle = False
        self.lf_ok = "lf-only" in self.bugs
        self.crnul_ok = "nul-in-value" in self.bugs or "resp-header-crlf" in self.bugs
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # ------------------------------------------------------------------ I/O
    def wake(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fill(self, deadline: float | None) -> bool:
        """Receive more bytes; False on EOF. deadline None = idle timeout per recv."""
        idle = HOLD_FOREVER if "hold-partial" in self.bugs else self.server.idle_timeout
        remaining = (
            idle if deadline is None else deadline - time.monotonic()
        )
        if remaining <= 0:
            raise Timeout
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            raise Timeout from None
        if not data:
            return False
        self.last_recv = len(data)
        self.buf += data
        return True

    def _read_line(self, limit: int, deadline: float | None, status: int) -> bytes:
        """Consume and return one line including its LF; more than `limit` bytes → HTTPError(status)."""
        if status == 431 and "header-limit-per-read" in self.bugs:
            return self._read_line_per_read(deadline)
        scanned = 0
        while True:
            idx = self.buf.find(b"\n", scanned)
            if idx >= 0:
                if idx + 1 > limit:
                    raise HTTPError(status, "line too long")
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            if len(self.buf) >= limit:
                raise HTTPError(status, "line too long")
            scanned = len(self.buf)
            if not self._fill(deadline):
                raise PeerClosed

    def _read_line_per_read(self, deadline: float | None) -> bytes:
        """header-limit-per-read: the section limit compared with each recv(), never with the line."""
        scanned = 0
        while True:
            idx = self.buf.find(b"\n", scanned)
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            scanned = len(self.buf)
            if not self._fill(deadline):
                raise PeerClosed
            if self.last_recv >= MAX_HEADER_SECTION:
                raise HTTPError(431, "header section too large")

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill(None):
                raise PeerClosed
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _sendall(self, data: bytes) -> None:
        self.sock.settimeout(self.server.idle_timeout)
        self.sock.sendall(data)

    def _graceful_close(self) -> None:
        """Shut our write side, drain (and discard) what the peer still sends, close."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        end = time.monotonic() + DRAIN_SECONDS
        drained = 0
        try:
            while drained < DRAIN_BYTES:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self.sock.settimeout(remaining)
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass

    # ------------------------------------------------------------- main loop
    def run(self) -> None:
        try:
            self._loop()
        except (OSError, Timeout, PeerClosed):
            pass
        except Exception:  # a bug in this server: say so loudly, but keep serving others
            traceback.print_exc(file=sys.stderr)
            try:
                self._send_error(500, close=True)
            except Exception:
                pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            with self.server.lock:
                self.server.conns.discard(self)

    def _loop(self) -> None:
        while True:
            if self.server.stopping.is_set() and not self.buf:
                return
            try:
                req = self._read_head()
                if req is None:
                    return
                if req.version == (0, 9):  # http09 bug
                    resp = self._route(req)
                    self._sendall(resp.body if resp.chunks is None else b"".join(resp.chunks))
                    self._graceful_close()
                    return
                self._prepare(req)
                upgrade = self._unknown_upgrade(req)
                if upgrade and "upgrade-body-request" in self.bugs:
                    req.length, req.chunked = 0, False  # the body is left in the buffer: parsed as a request
                if req.expect_continue:
                    self._sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if req.chunked:
                    req.body = self._read_chunked()
                elif req.length:
                    req.body = self._read_exact(req.length)
                try:
                    resp = self._route(req)
                except StreamEnded:  # wt-wsasgi: the orphan route wrote its own response
                    return
                if upgrade and "misreport" in self.bugs:
                    raise HTTPError(400, "upgrade refused after the route ran")
                self._send(resp, req)
                if not req.keep_alive:
                    self._graceful_close()
                    return
            except HTTPError as e:
                keep = e.status == 400 and "keepalive-after-400" in self.bugs
                status = 500 if e.status == 400 and "malformed-500" in self.bugs else e.status
                self._send_error(status, close=not keep)
                if not keep:
                    self._graceful_close()
                    return
            except Timeout:
                self._send_error(408, close=True)
                self._graceful_close()
                return
            except PeerClosed:
                self._send_error(400, close=True)
                return

    # ---------------------------------------------------------------- parsing
    def _strip_eol(self, line: bytes, lf_ok: bool) -> bytes:
        if line.endswith(b"\r\n"):
            return line[:-2]
        if lf_ok:
            return line[:-1]
        raise HTTPError(400, "bare LF line terminator")

    def _read_head(self) -> Request | None:
        srv = self.server
        if not self.buf:
            self.idle = True
            try:
                wait = srv.header_timeout if self.first else srv.idle_timeout
                if not self._fill(time.monotonic() + wait):
                    return None
            except (Timeout, OSError):
                return None
            finally:
                self.idle = False
        self.first = False
        deadline = time.monotonic() + (HOLD_FOREVER if "hold-partial" in self.bugs else srv.header_timeout)
        unbounded = "unbounded-headers" in self.bugs
        skip_to_end = "keepalive-after-400" in self.bugs
        pending: HTTPError | None = None

        # RFC 9112 §2.2: ignore empty lines received before the request-line.
        budget = UNBOUNDED if unbounded else MAX_REQUEST_LINE + 2
        while True:
            line = self._read_line(budget, deadline, 414)
            if line == b"\r\n" or (self.lf_ok and line == b"\n"):
                budget -= len(line)
                continue
            break
        req: Request | None = None
        try:
            req = self._parse_request_line(line)
        except HTTPError as e:
            if not (skip_to_end and e.status == 400):
                raise
            pending = e
        if req is not None and req.version == (0, 9):
            return req

        used = 0
        fields: list[tuple[bytes, bytes]] = []
        while True:
            line = self._read_line(UNBOUNDED if unbounded else MAX_HEADER_SECTION - used, deadline, 431)
            used += len(line)
            if line == b"\r\n" or (line == b"\n" and (self.lf_ok or pending is not None)):
                break
            if pending is not None:
                continue  # keepalive-after-400: skipping the rest of a bad head
            try:
                self._parse_field(line, fields)
            except HTTPError as e:
                if not (skip_to_end and e.status == 400):
                    raise
                pending = e
            if len(fields) > MAX_FIELDS and not unbounded:
                raise HTTPError(431, "too many fields")
        if pending is not None:
            raise pending
        assert req is not None
        req.headers = fields
        return req

    def _parse_request_line(self, line: bytes) -> Request:
        body = self._strip_eol(line, self.lf_ok)
        if b"\r" in body:
            raise HTTPError(400, "bare CR in request-line")
        parts = body.split(b" ")
        if (
            len(parts) == 2
            and "http09" in self.bugs
            and parts[0] == b"GET"
            and parts[1].startswith(b"/")
            and TARGET_CHARS_RE.fullmatch(parts[1])
        ):
            req = Request("GET", parts[1].decode("ascii"), (0, 9))
            self._parse_target(req, parts[1])
            return req
        if len(parts) != 3:
            raise HTTPError(400, "request-line is not method SP target SP version")
        method, target, version = parts
        if not TOKEN_RE.fullmatch(method):
            raise HTTPError(400, "method is not a token")
        if not TARGET_CHARS_RE.fullmatch(target):
            raise HTTPError(400, "request-target has invalid bytes")
        m = VERSION_RE.fullmatch(version)
        if not m:
            raise HTTPError(400, "invalid HTTP-version")
        ver = (int(m.group(1)), int(m.group(2)))
        if ver[0] == 1 and ver[1] > 1:
            ver = (1, 1)  # RFC 9110 §2.5: a higher minor version is processed as the highest we implement
        if "h2-preface-app" in self.bugs and (method, target, ver) == (b"PRI", b"*", (2, 0)):
            req = Request("OPTIONS", "*", (1, 0))  # no Host needed; the connection closes after it
            req.form = "asterisk"
            return req
        if ver not in ((1, 0), (1, 1)):
            raise HTTPError(505, "unsupported HTTP-version")
        req = Request(method.decode("ascii"), target.decode("ascii"), ver)
        self._parse_target(req, target)
        return req

    def _parse_target(self, req: Request, target: bytes) -> None:
        """RFC 9112 §3.2 request-target forms."""
        if req.method == "CONNECT":
            if not valid_authority(target, need_host=True, need_port=True):
                raise HTTPError(400, "CONNECT needs authority-form")
            req.form = "authority"
            return
        if target == b"*":
            if req.method != "OPTIONS":
                raise HTTPError(400, "asterisk-form is only for OPTIONS")
            req.form = "asterisk"
            return
        if target.startswith(b"/"):
            path, _, query = target.partition(b"?")
            req.form = "origin"
        else:
            m = ABSOLUTE_RE.fullmatch(target)
            if not m or m.group(1).lower() not in (b"http", b"https"):
                raise HTTPError(400, "invalid request-target")
            authority, rest = m.group(2), m.group(3)
            if b"@" in authority or not valid_authority(authority, need_host=True, need_port=False):
                raise HTTPError(400, "invalid authority in absolute-form")
            path, _, query = rest.partition(b"?")
            if path and not path.startswith(b"/"):
                raise HTTPError(400, "invalid absolute-form path")
            req.form = "absolute"
            path = path or b"/"
            if "absolute-host-wins" in self.bugs:
                req.target = (path + (b"?" + query if query else b"")).decode("ascii")
        if not PATH_RE.fullmatch(path) or not QUERY_RE.fullmatch(query):
            raise HTTPError(400, "invalid characters in request-target")
        req.path = path.decode("ascii")
        req.query = query.decode("ascii")

    def _check_value(self, value: bytes) -> None:
        bad = BAD_VALUE_LENIENT_RE if self.crnul_ok else BAD_VALUE_RE
        if bad.search(value):
            raise HTTPError(400, "invalid character in field value")

    def _parse_field(self, line: bytes, fields: list[tuple[bytes, bytes]], lf_ok: bool | None = None) -> None:
        """RFC 9112 §5: field-line = field-name ":" OWS field-value OWS."""
        body = self._strip_eol(line, self.lf_ok if lf_ok is None else lf_ok)
        if body[:1] in (b" ", b"\t"):
            if "obs-fold" in self.bugs and fields:
                cont = body.rstrip(b" \t")
                self._check_value(cont.lstrip(b" \t"))
                name, value = fields[-1]
                fields[-1] = (name, value + line[len(body) :] + cont)
                return
            raise HTTPError(400, "obs-fold")
        if b"\r" in body and not self.crnul_ok:
            raise HTTPError(400, "bare CR in field line")
        colon = body.find(b":")
        if colon < 0:
            raise HTTPError(400, "field line without colon")
        name = body[:colon]
        if not TOKEN_RE.fullmatch(name):
            stripped = name.rstrip(b" \t")
            if "space-before-colon" in self.bugs and stripped != name and TOKEN_RE.fullmatch(stripped):
                name = stripped
            else:
                raise HTTPError(400, "invalid field name")
        value = body[colon + 1 :].strip(b" \t")
        self._check_value(value)
        fields.append((name, value))

    # ------------------------------------------------------------- semantics
    def _prepare(self, req: Request) -> None:
        bugs = self.bugs
        hosts = req.values(b"host")
        if "no-host-ok" not in bugs:
            if req.version == (1, 1) and len(hosts) != 1:
                raise HTTPError(400, "HTTP/1.1 needs exactly one Host")
            if len(hosts) > 1:
                raise HTTPError(400, "more than one Host")
        for h in hosts:
            if not valid_authority(h, need_host=False, need_port=False):
                raise HTTPError(400, "invalid Host")

        te = req.values(b"transfer-encoding")
        cl = req.values(b"content-length")
        te10 = False
        if te:
            if req.version == (1, 0):
                if "te-http10" not in bugs:
                    raise HTTPError(400, "Transfer-Encoding in HTTP/1.0")
                te10 = True
            if cl:
                if "te-cl-prefer-cl" not in bugs:
                    raise HTTPError(400, "both Transfer-Encoding and Content-Length")
                req.length = self._content_length(cl)
            else:
                req.chunked = self._transfer_coding(te)
        elif cl:
            req.length = self._content_length(cl)
        if req.length > MAX_BODY:
            raise HTTPError(413, "body too large")

        expectations = [e.lower() for e in split_list(req.values(b"expect"))]
        for e in expectations:
            if e != b"100-continue":
                raise HTTPError(417, "unsupported expectation")
        if expectations and (req.chunked or req.length > 0):
            if req.version == (1, 1) or "expect-http10" in bugs:
                req.expect_continue = True

        tokens = {t.lower() for t in split_list(req.values(b"connection"))}
        if "keepalive-after-close" in bugs:
            tokens.discard(b"close")
        if req.version == (1, 1):
            req.keep_alive = b"close" not in tokens
        else:
            req.keep_alive = b"keep-alive" in tokens and b"close" not in tokens
            if te10:
                req.keep_alive = b"close" not in tokens
        if req.form == "authority" or self.server.stopping.is_set():
            req.keep_alive = False

    @staticmethod
    def _unknown_upgrade(req: Request) -> bool:
        """Connection: upgrade with an Upgrade that is not websocket (wt-smuggle planted bugs)."""
        tokens = {t.lower() for t in split_list(req.values(b"connection"))}
        protocols = {t.lower() for t in split_list(req.values(b"upgrade"))}
        return b"upgrade" in tokens and bool(protocols) and b"websocket" not in protocols

    def _content_length(self, values: list[bytes]) -> int:
        if "cl-dup-first" in self.bugs and len(values) > 1:
            values = values[:1]
        members = [p.strip(b" \t") for v in values for p in v.split(b",")]
        if "cl-plus" in self.bugs:
            numbers = set()
            for p in members:
                try:
                    n = int(p)
                except ValueError:
                    try:
                        n = int(p, 0)
                    except ValueError:
                        raise HTTPError(400, "invalid Content-Length") from None
                if n < 0:
                    raise HTTPError(400, "negative Content-Length")
                numbers.add(n)
            if len(numbers) != 1:
                raise HTTPError(400, "conflicting Content-Length")
            return numbers.pop()
        for p in members:
            if not DIGITS_RE.fullmatch(p):
                raise HTTPError(400, "invalid Content-Length")
        if len(set(members)) != 1:
            raise HTTPError(400, "conflicting Content-Length")
        digits = members[0].lstrip(b"0") or b"0"
        if len(digits) > 12:
            raise HTTPError(413, "body too large")
        return int(digits)

    def _transfer_coding(self, values: list[bytes]) -> bool:
        codings: list[tuple[bytes, bool]] = []
        for member in split_list(values):
            m = TCODING_RE.fullmatch(member)
            if not m:
                raise HTTPError(400, "invalid Transfer-Encoding")
            codings.append((m.group(1).lower(), bool(m.group(2))))
        names = [c for c, _ in codings]
        if "te-not-last" in self.bugs and b"chunked" in names:
            return True
        if not names or names[-1] != b"chunked" or names.count(b"chunked") != 1:
            raise HTTPError(400, "chunked is not the final transfer coding")
        if codings[-1][1]:
            raise HTTPError(400, "chunked takes no parameters")
        if len(names) > 1:
            raise HTTPError(501, "transfer coding not implemented")
        return True

    def _read_chunked(self) -> bytes:
        """RFC 9112 §7.1 chunked-body = *chunk last-chunk trailer-section CRLF."""
        body = bytearray()
        lenient = "chunk-size-lenient" in self.bugs
        while True:
            line = self._read_line(UNBOUNDED if "chunk-ext-unbounded" in self.bugs else MAX_CHUNK_LINE, None, 400)
            if not line.endswith(b"\r\n"):
                raise HTTPError(400, "bare LF in chunk-size line")
            text = line[:-2]
            if lenient:
                try:
                    size = int(text.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HTTPError(400, "invalid chunk-size") from None
                if size < 0:
                    raise HTTPError(400, "invalid chunk-size")
            else:
                m = CHUNK_LINE_RE.fullmatch(text)
                if not m or len(m.group(1).lstrip(b"0")) > MAX_CHUNK_DIGITS:  # leading zeros are valid
                    raise HTTPError(400, "invalid chunk-size line")
                size = int(m.group(1), 16)
            if size == 0:
                break
            if len(body) + size > MAX_BODY:
                raise HTTPError(413, "body too large")
            body += self._read_exact(size)
            crlf = self._read_exact(2)
            if crlf != b"\r\n" and "chunk-no-crlf" not in self.bugs:
                raise HTTPError(400, "chunk-data not followed by CRLF")
        # trailer-section = *( field-line CRLF ), then CRLF; parsed and discarded.
        used = 0
        trailers: list[tuple[bytes, bytes]] = []
        while True:
            line = self._read_line(MAX_HEADER_SECTION - used, None, 400)
            used += len(line)
            if line == b"\r\n":
                break
            self._parse_field(line, trailers, lf_ok=False)
            if len(trailers) > MAX_FIELDS:
                raise HTTPError(400, "too many trailer fields")
        return bytes(body)

    # ---------------------------------------------------------------- routes
    def _route(self, req: Request) -> Response:
        self.server.count_request()  # the application ran: what /debug/vars `requests` counts
        if "crash-path" in self.bugs and req.method == "GET" and req.path == "/chunked":
            os._exit(70)
        if "leak-mem" in self.bugs:
            _LEAKED.append(bytearray(os.urandom(16)) * 4096)  # touched pages: RSS really grows
        if "leak-fd" in self.bugs:
            _LEAKED.append(open(os.devnull, "rb"))
        path, method = req.path, req.method
        if req.form == "authority":
            return Response(405, [("Allow", ALLOW_ALL), ("Content-Type", "text/plain")], b"CONNECT not supported\n")
        if req.form == "asterisk":
            return Response(200, [("Allow", ALLOW_ALL)], b"")
        if path == "/echo" or path.startswith("/echo/"):
            return self._echo(req)
        if path == ORPHAN_PATH or path == SCOPE_PATH or path.startswith(SCOPE_PATH + "/"):  # wt-wsasgi
            return self._asgi_scope(req) if path != ORPHAN_PATH else self._orphan(req)
        fixed = {"/healthz", "/debug/vars", "/", "/nocontent", "/notmodified", "/chunked"}
        if path in fixed and method not in ("GET", "HEAD"):
            return Response(405, [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")], b"method not allowed\n")
        if path == "/healthz":
            return Response(200, [("Content-Type", "text/plain")], b"ok")
        if path == "/debug/vars":
            with self.server.lock:
                n = self.server.requests
            data = {"sse_open": 0, "ws_open": 0, "tasks": threading.active_count(), "requests": n}
            data["orphans_open"] = self.server.orphans_open  # wt-wsasgi
            return Response(200, [("Content-Type", "application/json")], json.dumps(data).encode())
        if path == "/":
            if b'"hello-v1"' in [v.strip() for v in req.values(b"if-none-match")]:
                return Response(304, [("ETag", '"hello-v1"')])
            return Response(200, [("Content-Type", "text/plain"), ("ETag", '"hello-v1"')], b"hello")
        if path == "/nocontent":
            if "body-on-204" in self.bugs:
                return Response(204, [("Content-Type", "text/plain")], b"this body must not be here\n", force_body=True)
            return Response(204)
        if path == "/notmodified":
            return Response(304, [("ETag", '"v1"'), ("Cache-Control", "max-age=60")])
        if path == "/chunked":
            chunks = [
                b"first chunk of the chunked response\n",
                b"second chunk, a little longer than the first one\n",
                b"third and last chunk\n",
            ]
            return Response(200, [("Content-Type", "text/plain")], chunks=chunks)
        return Response(404, [("Content-Type", "text/plain")], b"not found\n")

    def _echo(self, req: Request) -> Response:
        data = {
            "method": req.method,
            "target": req.target,
            "http_version": req.version_str,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in req.headers],
            "body_length": len(req.body),
            "body_sha256": hashlib.sha256(req.body).hexdigest(),
        }
        body = json.dumps(data).encode()
        resp = Response(200, [("Content-Type", "application/json")])
        if "chunked=1" in req.query.split("&"):
            resp.chunks = [body[i : i + 64] for i in range(0, len(body), 64)]
        else:
            resp.body = body
            if "resp-cl-mismatch" in self.bugs:
                resp.cl_delta = -1
        return resp

    # ---- wt-wsasgi (issue 12 items 10, 11): the raw-ASGI probe routes of refapp_common/probes.py,
    # answered as a conformant ASGI server would fill the scope and stop an orphan stream.
    def _asgi_scope(self, req: Request) -> Response:
        raw_path, _, query = req.target.partition("?")
        host, port = self.sock.getsockname()[:2]
        peer, peer_port = self.sock.getpeername()[:2]
        ports = (str(port), str(peer_port)) if "scope-port-str" in self.bugs else (port, peer_port)
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": f"{req.version[0]}.{req.version[1]}", "method": req.method, "scheme": "http",
                 "path": unquote(raw_path), "raw_path": {"$bytes": raw_path}, "query_string": {"$bytes": query},
                 "root_path": "", "server": [host, ports[0]], "client": [peer, ports[1]],
                 "headers": [[{"$bytes": k.lower().decode("latin-1")}, {"$bytes": v.decode("latin-1")}]
                             for k, v in req.headers]}
        return Response(200, [("Content-Type", "application/json")], json.dumps({"scope": scope}).encode())

    def _orphan(self, req: Request) -> Response:
        """1 KiB chunks every 20 ms for at most ORPHAN_MAX_S; stops on the first failed send."""
        with self.server.lock:
            self.server.orphans_open += 1
        end = time.monotonic() + ORPHAN_MAX_S
        try:
            self._sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            while time.monotonic() < end and not self.server.stopping.is_set():
                self._sendall(b"400\r\n" + b"o" * 1024 + b"\r\n")
                time.sleep(0.02)
            self._sendall(b"0\r\n\r\n")
        except OSError:
            while "orphan-kept" in self.bugs and time.monotonic() < end and not self.server.stopping.is_set():
                time.sleep(0.05)  # the planted defect: the stream "runs" on for a client that is gone
        finally:
            with self.server.lock:
                self.server.orphans_open -= 1
        raise StreamEnded()

    # -------------------------------------------------------------- responses
    def _head_block(self, status: int, headers: list[tuple[str, str | bytes]], raw: list[tuple[bytes, bytes]]) -> bytearray:
        out = bytearray(f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n".encode())
        out += b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        out += b"Server: probatorium-h1server\r\n"
        for name, value in headers:
            v = value if isinstance(value, bytes) else value.encode("latin-1")
            # RFC 9110 §5.5: never emit CR, LF or NUL in a field value.
            v = v.replace(b"\r", b" ").replace(b"\n", b" ").replace(b"\x00", b" ")
            out += name.encode("ascii") + b": " + v + b"\r\n"
        for name, value in raw:  # resp-header-crlf: deliberately unchecked
            out += name + b": " + value + b"\r\n"
        return out

    def _send(self, resp: Response, req: Request) -> None:
        headers = list(resp.headers)
        raw: list[tuple[bytes, bytes]] = []
        for v in req.values(b"x-request-id")[:1]:
            if "resp-header-crlf" in self.bugs:
                raw.append((b"X-Request-Id", v))
            else:
                headers.append(("X-Request-Id", v))
        if self.server.stopping.is_set():
            req.keep_alive = False  # graceful shutdown: finish this one, then close
        if not req.keep_alive:
            headers.append(("Connection", "close"))
        elif req.version == (1, 0):
            headers.append(("Connection", "keep-alive"))
        head = req.method == "HEAD"
        send_body = not head or "head-body" in self.bugs
        payload = b""
        if resp.status in (204, 304) and not resp.force_body:
            pass  # no Content-Length, no body (RFC 9110 §8.6, §15.3.5, §15.4.5)
        elif resp.chunks is not None and req.version >= (1, 1):
            headers.append(("Transfer-Encoding", "chunked"))
            if send_body:
                decimal = "bad-chunked-resp" in self.bugs
                parts = bytearray()
                for c in resp.chunks:
                    size = str(len(c)) if decimal else format(len(c), "x")
                    parts += size.encode() + b"\r\n" + c + b"\r\n"
                parts += b"0\r\n\r\n"
                payload = bytes(parts)
        else:
            body = resp.body if resp.chunks is None else b"".join(resp.chunks)
            headers.append(("Content-Length", str(len(body) + resp.cl_delta)))
            if send_body:
                payload = body
        out = self._head_block(resp.status, headers, raw)
        out += b"\r\n"
        out += payload
        self._sendall(bytes(out))

    def _send_error(self, status: int, *, close: bool) -> None:
        body = f"{status} {REASONS.get(status, 'Error')}\n".encode()
        headers: list[tuple[str, str | bytes]] = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        if close:
            headers.append(("Connection", "close"))
        out = self._head_block(status, headers, [])
        out += b"\r\n" + body
        try:
            self._sendall(bytes(out))
        except OSError:
            return


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Strict HTTP/1.1 test server with optional planted bugs.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--bug", action="append", default=[], metavar="NAME", help="plant a bug (repeatable, or comma-separated)")
    p.add_argument("--header-timeout", type=float, default=10.0)
    p.add_argument("--idle-timeout", type=float, default=15.0)
    p.add_argument("--list-bugs", action="store_true", help="print the bug names and exit")
    args = p.parse_args(argv)
    names = [n.strip() for b in args.bug for n in b.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUGS]
    if unknown:
        p.error(f"unknown bug(s): {', '.join(unknown)}; known: {', '.join(BUGS)}")
    args.bug = frozenset(names)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_bugs:
        for name, text in BUGS.items():
            print(f"{name}: {text}")
        return 0
    threading.stack_size(1 << 20)
    server = Server(args.host, args.port, args.bug, args.header_timeout, args.idle_timeout)
    port = server.listen()
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    bugs = ",".join(sorted(args.bug)) or "none"
    print(f"ready addr={args.host}:{port}", flush=True)
    print(f"h1server listening on {args.host}:{port} bugs={bugs}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
