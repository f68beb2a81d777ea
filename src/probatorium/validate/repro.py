"""The one reproducer harness: every finding kind's repro.py is built here.

A dossier's repro.py must run with a bare system `python3` (no probatorium,
`python3 -I -S` works) and decide by itself. So a reproducer is assembled from
source text, all of it standard library only:

1. a header: the docstring (finding, usage, exit codes) and `PAYLOAD`, the
   kind's data as JSON (bytes as hex, steps, paths — whatever the kind needs);
2. embedded modules (`module_source`): probatorium modules that are pure and
   stdlib-only (the HTTP/1.1 grammar, the adversarial verdict rules, the
   WebSocket framer), copied verbatim minus their package imports, so the
   reproducer judges with the very rules the run judged with;
3. the runtime below (`RUNTIME`): connect, send segments with pauses, read
   with deadlines, HTTP/1.1 response framing, a liveness probe, and
   `repro_main`, which owns the exit codes;
4. the kind's judge: one function `judge(host, port, addr, payload)` returning
   `(reproduced, why)`, written in the kind's own module on top of the runtime
   (it imports the runtime and the embedded modules' names normally, so it also
   runs in-process; in repro.py the same names are the embedded copies).
   `payload["predicate"]` is the finding's predicate.

Exit codes (the same for every kind): 1 and a last line `REPRODUCED` when the
bad behaviour is seen, 0 and `NOT REPRODUCED` when it is not, 2 and a line
starting `UNREACHABLE` when nothing accepts connections on the address before
the first byte is sent. The address is argv[1] (HOST:PORT), else the address
the finding was made on.

The runtime functions are embedded by source (`inspect.getsource`), so they use
only the standard library and each other; `build_repro` (never embedded) also
reads the catalogue's verdict→predicate mapping.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import socket
import struct
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from types import ModuleType

# --------------------------------------------------------------------------------------
# the runtime (embedded verbatim in every repro.py)


class Unreachable(Exception):
    """Nothing accepted a connection on the address before the reproducer sent anything."""


_REACHED = [False]  # a refusal after the first successful connect is evidence, not unreachability


def connect(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection with Nagle off; `Unreachable` when no connection ever succeeded yet."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        if not _REACHED[0]:
            raise Unreachable(f"{host}:{port}: {e}") from e
        raise
    _REACHED[0] = True
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_segments(sock: socket.socket, segments: Sequence[bytes], pause: float = 0.0) -> str | None:
    """Send each segment (pausing between them); the error that stopped sending, or None."""
    for i, seg in enumerate(segments):
        if i and pause:
            time.sleep(pause)
        try:
            sock.sendall(seg)
        except OSError as e:
            return f"send failed: {e}"
    return None


def read_until(sock: socket.socket, quiet: float, limit: float, done: Callable[[bytes], bool] | None = None,
               max_bytes: int = 1 << 20) -> tuple[bytes, str]:
    """Read until `done(data)`, the peer closes, `quiet` seconds pass without a byte, or `limit`
    seconds in all. Returns (data, how): how is "complete", "closed by the server", "reset: ...",
    or "timeout (connection still open)"."""
    data = b""
    deadline = time.monotonic() + limit
    while len(data) < max_bytes:
        if done is not None and done(data):
            return data, "complete"
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(min(quiet, left))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError as e:
            return data, f"reset: {e}"
        if not chunk:
            return data, "closed by the server"
        data += chunk
    return data, "timeout (connection still open)"


def response_complete(data: bytes, method: bytes = b"GET") -> bool:
    """Whether `data` holds one complete final HTTP/1.x response (RFC 9112 §6.3 framing: interim
    1xx skipped, a 101 ends the head; no body for HEAD/204/304; chunked; Content-Length). A
    close-delimited or unparsable one is never complete: read until the server closes or goes quiet."""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/"):
            return False
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return False
        if status == 101 or method == b"HEAD" or status in (204, 304):
            return True
        if 100 <= status < 200:
            data = body  # an interim response: the final one follows
            continue
        fields = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            return body.endswith(b"0\r\n\r\n")
        try:
            return len(body) >= int(fields[b"content-length"])
        except (KeyError, ValueError):
            return False


def http_exchange(sock: socket.socket, raw: bytes, timeout: float = 5.0) -> tuple[bytes, str]:
    """Send one request and read its response (complete by its framing, or until close/timeout)."""
    method = raw.split(b" ", 1)[0]
    try:
        sock.sendall(raw)
    except OSError as e:
        return b"", f"send failed: {e}"
    return read_until(sock, timeout, timeout, lambda d: response_complete(d, method))


def rehost(raw: bytes, old_host: str, new_host: str) -> bytes:
    """The request with its Host field value re-rendered for another address."""
    if not old_host or old_host == new_host:
        return raw
    return raw.replace(b"\r\nHost: " + old_host.encode("latin-1") + b"\r\n",
                       b"\r\nHost: " + new_host.encode("latin-1") + b"\r\n", 1)


def reset_close(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a client that vanishes does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def accepts(host: str, port: int) -> bool:
    """False only when the port refuses (nothing listens); a slow accept still counts as alive."""
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except (ConnectionRefusedError, ConnectionResetError):
        return False
    except OSError:
        return True


def repro_main(judge: Callable, default_addr: str, payload: dict) -> None:
    """Run the kind's judge against argv[1] (or the finding's address) and exit 1/0/2."""
    addr = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else default_addr
    host, _, port = addr.rpartition(":")
    try:
        bad, why = judge(host.strip("[]"), int(port), addr, payload)
    except Unreachable as e:
        print(f"UNREACHABLE: nothing accepts connections on {e}; is the target running?")
        sys.exit(2)
    print("judged:", why)
    print("REPRODUCED" if bad else "NOT REPRODUCED")  # alone on the last line: repro-check reads it
    sys.exit(1 if bad else 0)


RUNTIME = (Unreachable, connect, send_segments, read_until, response_complete, http_exchange, rehost, reset_close,
           accepts, repro_main)

# --------------------------------------------------------------------------------------
# assembling a repro.py (runs in probatorium, never embedded)

_IMPORTS = "import asyncio, base64, hashlib, json, os, random, re, socket, struct, sys, time"
_PKG_IMPORT = re.compile(r"^(from (\.+[\w.]*|probatorium[\w.]*) import (\([^)]*\)|[^\n]*)|import probatorium[^\n]*)\n",
                         re.M)


def module_source(module: ModuleType) -> str:
    """A pure stdlib-only module's source, ready to embed: its package imports (relative or
    `probatorium.*`) and its `from __future__` line removed (the reproducer supplies the names)."""
    src = inspect.getsource(module).replace("from __future__ import annotations\n", "", 1)
    return f"# ---- embedded: {module.__name__} (verbatim) ----\n" + _PKG_IMPORT.sub("", src)


def _defined(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _check_parts(parts: Sequence[str]) -> None:
    """Refuse a reproducer whose embedded parts define one top-level name twice (a later
    definition would silently replace an earlier one) or that imports probatorium."""
    seen: dict[str, int] = {}
    for i, part in enumerate(parts):
        for name in _defined(part):
            if name in seen and seen[name] != i and not name.startswith("__"):
                raise ValueError(f"repro.py parts {seen[name]} and {i} both define {name!r}")
            seen[name] = i
        if re.search(r"^\s*(from|import) probatorium", part, re.M):
            raise ValueError(f"repro.py part {i} imports probatorium")


def _doc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', "'''")


def build_repro(kind: str, payload: dict, judge: Callable, *, predicate: str, detail: str, addr: str,
                version: str, case: str = "", how: str = "", modules: Sequence[ModuleType] = (),
                helpers: Sequence[Callable | type] = (), verdicts_of: str | None = None) -> str:
    """Source of a standalone repro.py: `payload` (JSON-able) is the kind's data, `judge` (with
    `helpers`) its verdict function, `modules` pure stdlib-only modules it needs embedded, `how`
    one paragraph saying what the script sends and what counts as reproduced. `verdicts_of` (a
    slice name) copies that slice's rows of the catalogue's one verdict→predicate mapping into
    `payload["verdict_predicates"]`, so the script maps a verdict as the catalogue does."""
    payload = {**payload, "predicate": predicate}
    if verdicts_of is not None:
        from .invariants import VERDICT_PREDICATES

        payload["verdict_predicates"] = {v: p for (s, v), p in VERDICT_PREDICATES.items() if s == verdicts_of}
    title = f"{predicate} ({kind}{': ' + case if case else ''})"
    header = (f'#!/usr/bin/env python3\n"""Reproducer for {_doc(title)}, found by probatorium {version}.\n\n'
              f"Finding: {_doc(detail)}\n\n{_doc(how)}\n\n"
              f"Usage: python3 repro.py [HOST:PORT]      (default {addr})\n"
              "Standard library only; it judges by itself. Exit status 1 (last line REPRODUCED) when the\n"
              "finding shows again, 0 (NOT REPRODUCED) when it does not, 2 (UNREACHABLE) when nothing\n"
              'accepts connections on the address.\n"""\n'
              f"from __future__ import annotations\n\n{_IMPORTS}\n\n"
              f"KIND = {kind!r}\nPREDICATE = {predicate!r}\nDEFAULT_ADDR = {addr!r}\n"
              f"PAYLOAD = json.loads({json.dumps(payload)!r})\n")
    runtime = "# ---- the reproducer runtime (probatorium.validate.repro) ----\n\n" + "\n\n".join(
        inspect.getsource(f) for f in RUNTIME)
    runtime = runtime.replace("def connect(", "_REACHED = [False]\n\n\ndef connect(", 1)
    judge_src = f"# ---- the {kind} judge ----\n\n" + "\n\n".join(
        textwrap.dedent(inspect.getsource(f)) for f in (*helpers, judge))
    parts = [header, *(module_source(m) for m in modules), runtime, judge_src]
    _check_parts(parts)
    tail = f'\n\nif __name__ == "__main__":\n    repro_main({judge.__name__}, DEFAULT_ADDR, PAYLOAD)\n'
    return "\n\n".join(parts) + tail
