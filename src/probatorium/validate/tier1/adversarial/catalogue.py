"""The adversarial case model and the template renderer.

A case is DATA (see cases.py): the exact bytes to send as a template, how
they are split into TCP segments and paced, the RFC clause, the requirement
level, and the outcome the RFC requires. Templates are latin-1 strings so any
byte (NUL, CR, 0xFF) can be written literally, with these markers:

  $T   the probed request-target (the echo route plus a unique `adv=` nonce)
  $S   a second request-target (nonce + "-s"): the smuggled / follow-up request
  $U   a third request-target (nonce + "-u")
  $H   the Host value (HOST:PORT)
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


@dataclass(frozen=True)
class Rendered:
    """A case made concrete for one probe."""

    segments: tuple[bytes, ...]
    nonce: str
    body: bytes | None

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
        return text.encode("latin-1")

    raw = _resolve_lengths(subst(case.template))
    segments = tuple(p for p in raw.split(SEG.encode()) if p)
    body = None if case.body is None else _resolve_lengths(subst(case.body))
    return Rendered(segments=segments, nonce=nonce, body=body)


def validate_catalogue(cases: list[Case]) -> None:
    """Check the catalogue's own consistency (unique names, renderable templates)."""
    seen: set[str] = set()
    for c in cases:
        if c.name in seen:
            raise ValueError(f"duplicate adversarial case name {c.name!r}")
        seen.add(c.name)
        if c.level not in ("MUST", "SHOULD", "MAY") or c.expect not in ("reject", "serve", "either"):
            raise ValueError(f"case {c.name!r}: bad level/expect")
        if not c.clause:
            raise ValueError(f"case {c.name!r}: no RFC clause")
        render(c, target="/echo", host="127.0.0.1:1", nonce="n", echo=True)
