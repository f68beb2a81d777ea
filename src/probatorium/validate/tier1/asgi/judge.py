"""ASGI conformance as data and pure rules: the raw scope an engine built, and orphaned streams.

Standard library only and free of I/O, so a reproducer embeds this module as
is (validate/repro.py) and grades with the very rules the run graded with.

Evidence is what the APPLICATION received: the refapps' raw-ASGI routes
(refapps/refapp_common/probes.py) return the scope the engine handed them
(``GET /_probatorium/scope...``) and count the orphan streams still running on
``/debug/vars`` (``orphans_open``). A target without those routes is not
judged (no status code says what a scope contained).

Scope rules follow the ASGI HTTP connection scope (asgiref specs/www.rst,
"HTTP" → "Connection Scope"). A rule is ``required`` when the spec states the
type or value ("One of "1.0", "1.1" or "2"", "byte string", "[host, port]
... port is the integer listening port"): a deviation is I-ASGI-SCOPE (MED).
A rule is ``optional`` when the spec makes the key optional or says "should"
(``asgi.spec_version`` "Optional; if missing, assume 2.0"; header names
"should be lowercased"): a deviation is a note (verdict ``scope_note``, no
predicate), still compared across engines by validate-diff.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote

SCOPE_PATH = "/_probatorium/scope"
ORPHAN_PATH = "/_probatorium/orphan"
SCOPE_CLAUSE = "ASGI HTTP connection scope (asgiref specs/www.rst)"
ORPHAN_CLAUSE = "ASGI HTTP, Disconnected Client (send raises once the client is gone)"
HTTP_VERSIONS = ("1.0", "1.1", "2")
PROBE_HEADER = ("X-Probatorium-Scope", "Mixed Case")

# Worst first.
SCOPE_VERDICTS = ("scope_violation", "scope_note", "scope_ok", "scope_not_served", "conn_error")
ORPHAN_VERDICTS = ("orphans_kept", "orphans_released", "orphans_not_counted", "orphans_absent", "orphans_busy",
                   "conn_error")


@dataclass(frozen=True)
class ScopeCase:
    """One request whose scope is judged: the raw path and query as sent, the HTTP version."""

    name: str
    raw_path: str  # after SCOPE_PATH, percent-encoded as sent
    query: str = ""
    version: str = "1.1"
    fragment: str = ""  # sent raw after the query (RFC 9112 §3.2 has no fragment: a server may refuse)
    note: str = ""

    @property
    def target(self) -> str:
        return SCOPE_PATH + self.raw_path + (f"?{self.query}" if self.query else "") + \
            (f"#{self.fragment}" if self.fragment else "")

    def request(self, host: str) -> bytes:
        lines = [f"GET {self.target} HTTP/{self.version}", f"Host: {host}", f"{PROBE_HEADER[0]}: {PROBE_HEADER[1]}",
                 "Connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


SCOPE_CASES: tuple[ScopeCase, ...] = (
    ScopeCase("asgi scope HTTP/1.1 encoded path and query", "/a%20b/%E2%9C%93/%2F", "q=1&x=%20",
              note="path decoded (space, UTF-8 check mark, encoded slash), raw_path and query_string as sent"),
    ScopeCase("asgi scope HTTP/1.0", "/v10", "a=b", version="1.0",
              note="http_version must be the string \"1.0\", never \"1\" or \"1.1\""),
    ScopeCase("asgi scope fragment in target", "/frag", "q=1", fragment="frag",
              note="a '#' is not part of an origin-form target; served, it must not leak into path or query"),
)


@dataclass(frozen=True)
class Deviation:
    rule: str
    required: bool
    detail: str


def _bytes(v: object) -> bytes | None:
    """A scope value the route encoded as a byte string, else None."""
    if isinstance(v, dict) and set(v) == {"$bytes"} and isinstance(v["$bytes"], str):
        return v["$bytes"].encode("latin-1")
    return None


def _typename(v: object) -> str:
    if isinstance(v, dict) and "$bytes" in v:
        return "bytes"
    if isinstance(v, dict) and "$type" in v:
        return str(v["$type"])
    return {str: "str", int: "int", float: "float", bool: "bool", list: "list", dict: "dict",
            type(None): "None"}.get(type(v), type(v).__name__)


def _host_port(key: str, v: object, port: int | None) -> list[Deviation]:
    if v is None:
        return []
    if not isinstance(v, list) or len(v) != 2:
        return [Deviation(f"{key}_shape", True, f"{key} is {v!r}, not [host, port]")]
    out = []
    if not isinstance(v[0], str):
        out.append(Deviation(f"{key}_host_type", True, f"{key}[0] is {_typename(v[0])}, not a str"))
    if isinstance(v[1], bool) or not isinstance(v[1], int):
        out.append(Deviation(f"{key}_port_type", True, f"{key}[1] is {_typename(v[1])} {v[1]!r}, not an int"))
    elif port is not None and v[1] != port:
        out.append(Deviation(f"{key}_port_value", True, f"{key} port {v[1]} is not the listening port {port}"))
    return out


def judge_scope(case: ScopeCase, scope: dict, port: int | None) -> list[Deviation]:
    """Every deviation of a served scope from the ASGI HTTP connection scope, for `case`."""
    out: list[Deviation] = []

    def dev(rule: str, detail: str, required: bool = True) -> None:
        out.append(Deviation(rule, required, detail))

    if scope.get("type") != "http":
        dev("type", f"type is {scope.get('type')!r}, not 'http'")
    asgi = scope.get("asgi")
    if not isinstance(asgi, dict) or not isinstance(asgi.get("version"), str):
        dev("asgi_version", f"asgi is {asgi!r}: no asgi['version'] string")
    elif "spec_version" not in asgi:
        dev("spec_version", "asgi['spec_version'] is not declared (the spec allows that: assume \"2.0\")", False)
    elif not isinstance(asgi["spec_version"], str):
        dev("spec_version", f"asgi['spec_version'] is {_typename(asgi['spec_version'])}, not a str")
    hv = scope.get("http_version")
    if hv not in HTTP_VERSIONS:
        dev("http_version", f"http_version is {hv!r}, not one of {', '.join(HTTP_VERSIONS)}")
    elif hv != case.version:
        dev("http_version_value", f"http_version is {hv!r} for an HTTP/{case.version} request")
    if scope.get("method") != "GET":
        dev("method", f"method is {scope.get('method')!r} for a GET request")
    if "scheme" in scope and (not isinstance(scope["scheme"], str) or not scope["scheme"]):
        dev("scheme", f"scheme is {scope['scheme']!r}: must be a non-empty str")
    path = scope.get("path")
    want_path = unquote(SCOPE_PATH + case.raw_path, encoding="utf-8", errors="strict")
    if not isinstance(path, str):
        dev("path_type", f"path is {_typename(path)}, not a str")
    else:
        if "?" in path or (case.query and path.endswith(case.query)):
            dev("path_query", f"path {path!r} includes the query string")
        if "#" in path:
            dev("path_fragment", f"path {path!r} includes the fragment")
        if path != want_path and not ({"path_query", "path_fragment"} & {d.rule for d in out}):
            dev("path_decoded", f"path is {path!r}, not the decoded target path {want_path!r}")
    if "raw_path" in scope and scope["raw_path"] is not None:
        raw = _bytes(scope["raw_path"])
        if raw is None:
            dev("raw_path_type", f"raw_path is {_typename(scope['raw_path'])}, not a byte string")
        elif raw != (SCOPE_PATH + case.raw_path).encode("latin-1"):
            dev("raw_path_value", f"raw_path is {raw!r}, not the path as received "
                                  f"{(SCOPE_PATH + case.raw_path).encode('latin-1')!r} (no query)")
    qs = _bytes(scope.get("query_string"))
    if qs is None:
        dev("query_string_type", f"query_string is {_typename(scope.get('query_string'))}, not a byte string")
    elif qs != case.query.encode("latin-1"):
        dev("query_string_value", f"query_string is {qs!r}, not {case.query.encode('latin-1')!r}")
    if "root_path" in scope and not isinstance(scope["root_path"], str):
        dev("root_path_type", f"root_path is {_typename(scope['root_path'])}, not a str")
    out += _headers(scope.get("headers"))
    out += _host_port("server", scope.get("server"), port)
    out += _host_port("client", scope.get("client"), None)
    return out


def _headers(headers: object) -> list[Deviation]:
    if not isinstance(headers, list):
        return [Deviation("headers_type", True, f"headers is {_typename(headers)}, not a list of pairs")]
    out: list[Deviation] = []
    pairs: list[tuple[bytes, bytes]] = []
    for item in headers:
        if not isinstance(item, list) or len(item) != 2:
            return [Deviation("headers_pair", True, f"header item {item!r} is not a [name, value] pair")]
        name, value = _bytes(item[0]), _bytes(item[1])
        if name is None or value is None:
            return [Deviation("headers_bytes", True, f"header item is [{_typename(item[0])}, {_typename(item[1])}],"
                                                     " not [bytes, bytes]")]
        pairs.append((name, value))
    probe = [(n, v) for n, v in pairs if n.lower() == PROBE_HEADER[0].lower().encode()]
    if not probe:
        out.append(Deviation("headers_missing", True, f"the request header {PROBE_HEADER[0]} is not in headers"))
    elif probe[0][1] != PROBE_HEADER[1].encode():
        out.append(Deviation("headers_value", True, f"{PROBE_HEADER[0]} value is {probe[0][1]!r}"))
    upper = [n for n, _ in pairs if n != n.lower()]
    if upper:
        out.append(Deviation("headers_lowercase", False, f"header names not lowercased: {upper[:3]!r}"))
    return out


def scope_verdict(deviations: list[Deviation]) -> str:
    if any(d.required for d in deviations):
        return "scope_violation"
    return "scope_note" if deviations else "scope_ok"


def split_response(data: bytes) -> tuple[int | None, bytes]:
    """(status, body) of one HTTP/1.x response that is framed by Content-Length or the close."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None, b""
    head = data[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    body = data[end + 4:]
    for line in head[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length" and v.strip().isdigit():
            body = body[:int(v.strip())]
    return status, body


def scope_from_response(data: bytes) -> tuple[int | None, dict | None]:
    """The scope record a probe route answered with, if it is one."""
    status, body = split_response(data)
    try:
        doc = json.loads(body)
    except ValueError:
        return status, None
    scope = doc.get("scope") if isinstance(doc, dict) else None
    return status, scope if isinstance(scope, dict) else None


# --------------------------------------------------------------------------------------
# orphaned streams


ORPHAN_STREAMS = 3  # streams opened and reset per round
ORPHAN_SETTLE_S = 10.0  # the engine has this long, after the resets, to stop every orphan


@dataclass(frozen=True)
class OrphanVerdict:
    verdict: str
    reason: str


def judge_orphans(baseline: int | None, while_held: int | None, after: list[tuple[float, int]],
                  streams: int, settle_s: float = ORPHAN_SETTLE_S) -> OrphanVerdict:
    """Were the orphan streams stopped after the client reset them?

    `baseline` orphans_open before the round (None: the debug endpoint has no such field),
    `while_held` while our `streams` were open and streaming, `after` (seconds since the
    resets, orphans_open) samples. Released: orphans_open came back to the baseline within
    `settle_s`. A route that did not count our streams cannot be judged.
    """
    if baseline is None:
        return OrphanVerdict("orphans_absent", "the debug endpoint has no orphans_open counter")
    if baseline:
        return OrphanVerdict("orphans_busy", f"{baseline} orphan stream(s) already running before the round")
    if while_held is None or while_held < baseline + streams:
        return OrphanVerdict("orphans_not_counted", f"orphans_open {while_held} while {streams} stream(s) were held")
    for t, n in after:
        if t <= settle_s and n <= baseline:
            return OrphanVerdict("orphans_released", f"orphans_open back to {n} {t:.1f} s after the resets")
    late = next(((t, n) for t, n in after if 0 <= n <= baseline), None)
    if late is not None:
        return OrphanVerdict("orphans_kept", f"orphans_open back to {late[1]} only {late[0]:.1f} s after {streams} "
                                             f"client reset(s) (limit {settle_s:.0f} s): the engine kept running "
                                             "application code that streams to a client that is gone")
    last = after[-1] if after else (0.0, while_held)
    return OrphanVerdict("orphans_kept", f"orphans_open still {last[1]} (baseline {baseline}) {last[0]:.1f} s after "
                                         f"{streams} client reset(s): the engine kept running application code "
                                         "that streams to a client that is gone")


def debug_orphans(data: bytes) -> int | None:
    """orphans_open from a /debug/vars response, None when absent."""
    status, body = split_response(data)
    if status != 200:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    v = doc.get("orphans_open") if isinstance(doc, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None
