"""repro.py for Markov findings: replay the shrunk sequence, re-run the seeded walk, or replay bytes.

When the finding was shrunk (shrink.py), repro.py replays that shortest
sequence on a fresh session, re-binding every captured value (ids, Location
headers) from the replay's own responses, so it reproduces against a freshly
started server. Otherwise, a Markov walk is a pure function of (slice seed, walker id, model, spec) and
the target's responses, so re-running the walker with the same seed against a
target that answers the same way reproduces the request sequence, with fresh
ids captured on the way. Without probatorium at hand, the script falls back to
replaying the last requests byte for byte (standard library only).
"""

from __future__ import annotations

import base64
import json

_TEMPLATE = r'''#!/usr/bin/env python3
"""Reproducer for {predicate} (Markov slice), found by probatorium {version}.

Finding: {detail}
Walker {walker_id} of slice seed {slice_seed} reached it after {steps} steps.

Shrinking: {shrink}
Minimal sequence ({seq_len} request(s) after a login, if any):
{seq_lines}

Usage: python3 repro.py HOST:PORT [--walk | --raw]     (default {addr})

With probatorium importable, this replays the minimal sequence above on a
fresh session (ids re-bound from the replay's own responses) and stops at the
first {predicate} on {operation}; exit status 1 when it reproduces. --walk (the
default when there is no minimal sequence) re-runs the same seeded walk for at
most {steps} + 50 steps instead. Pass --raw (or run it without probatorium) to
replay {n} requests exactly as they were sent (their session cookie/token only
work against the same server process).
"""
import base64, json, os, socket, sys, time

PREDICATE = {predicate!r}
SLICE_SEED = {slice_seed!r}
WALKER = {walker_id!r}
STEPS = {steps!r}
OPENAPI = {openapi!r}
MARKOV = {markov!r}
REQUESTS = [base64.b64decode(x) for x in {requests!r}]
OPERATION = {operation!r}
SEQUENCE = json.loads({sequence_json!r})
TEMPLATES = {templates!r}
LOGIN = {login!r}
USERNAME = {username!r}
PASSWORD = {password!r}
FIXED_CREDENTIALS = {fixed_credentials!r}


def sequence(host, port):
    import asyncio
    from probatorium.validate.tier1.markov.client import H1Connection
    from probatorium.validate.tier1.markov.shrink import Replayer, Step
    from probatorium.validate.tier1.markov.values import Templates

    user = USERNAME if FIXED_CREDENTIALS else "%s-repro-%d" % (USERNAME, os.getpid())
    replayer = Replayer(lambda: H1Connection(host, port, timeout=10.0), Templates(TEMPLATES),
                        tuple(LOGIN) if LOGIN else None, lambda n: (user, PASSWORD))
    out = asyncio.run(replayer.replay([Step.from_json(s) for s in SEQUENCE], PREDICATE, OPERATION))
    for line in out.lines:
        print(line)
    if out.error:
        print("stopped:", out.error)
    if out.failed_at is not None and out.last is not None:
        print("---", PREDICATE, "at step", out.failed_at + 1, "of", len(SEQUENCE))
        print(out.last.sent[-2000:].decode("latin-1"))
        print("--- received ---")
        print(out.last.received[:2000].decode("latin-1"))
    hit = out.failed_at is not None
    print("sent", len(out.sent), "request(s)")
    print("REPRODUCED" if hit else "NOT REPRODUCED")
    return 1 if hit else 0


def walk(host, port):
    import asyncio
    from probatorium.validate.tier1.markov.slice import MarkovSlice

    found = []
    s = MarkovSlice(host, port, openapi=OPENAPI, markov=MARKOV, seed=SLICE_SEED, report=found.append,
                    max_steps=STEPS + 50, shrink=False)
    stop = lambda: any(e.predicate == PREDICATE for e in found)
    asyncio.run(s.walker(WALKER, time.monotonic() + 300, stop))
    for method, path, status in s.trace(WALKER)[-30:]:
        print(status, method, path)
    hits = [e for e in found if e.predicate == PREDICATE]
    for e in hits[:1]:
        print("---", e.predicate, "-", e.detail)
        print((e.sent or b"")[-2000:].decode("latin-1"))
        print("--- received ---")
        print((e.received or b"")[:2000].decode("latin-1"))
    print("walked", s.walkers[WALKER].steps, "steps")
    print("REPRODUCED" if hits else "NOT REPRODUCED")  # alone on its line: repro-check reads it
    return 1 if hits else 0


def _complete(buf, method):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].lower()
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"http/") else 0
    if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return True
    if b"transfer-encoding: chunked" in head:
        return buf.endswith(b"0\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(buf) >= end + 4 + int(line.split(b":")[1])
    return False


def replay(host, port):
    sock = None
    for raw in REQUESTS:
        if sock is None:
            sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(raw)
        buf = b""
        sock.settimeout(5)
        try:
            while not _complete(buf, raw.split(b" ", 1)[0]):
                chunk = sock.recv(65536)
                if not chunk:
                    sock.close()
                    sock = None
                    break
                buf += chunk
        except socket.timeout:
            pass
        print(raw.split(b"\r\n", 1)[0].decode("latin-1"), "->",
              buf.split(b"\r\n", 1)[0].decode("latin-1") or "(no response)")
    print("--- last response ---")
    print(buf[:2000].decode("latin-1"))
    return 0


def main():
    args = [a for a in sys.argv[1:] if a not in ("--raw", "--walk")]
    addr = args[0] if args else {addr!r}
    host, _, port = addr.rpartition(":")
    host, port = host.strip("[]"), int(port)
    if "--raw" not in sys.argv:
        try:
            if SEQUENCE and "--walk" not in sys.argv:
                sys.exit(sequence(host, port))
            sys.exit(walk(host, port))
        except ImportError:
            print("(probatorium is not importable here: replaying the recorded requests instead)")
    sys.exit(replay(host, port))


if __name__ == "__main__":
    main()
'''


def markov_repro(*, predicate: str, detail: str, slice_seed: int, walker_id: int, steps: int,
                 openapi: str | None, markov: str | None, requests: list[bytes], addr: str, version: str,
                 sequence: list[dict] | None = None, operation: str | None = None,
                 templates: list[str] | None = None, login: list[str] | None = None, username: str = "",
                 password: str = "", fixed_credentials: bool = False, shrink: str = "") -> str:
    """Source of a standalone repro.py for one Markov finding (`sequence`: the shrunk steps, as
    `Step.to_json()` dicts, replayed with re-bound captures; without it, the seeded walk)."""
    seq = sequence or []
    lines = [f"  {i + 1}. {s['method']} {s['path']}" + (f" {s['used']}" if s.get("used") else "")
             for i, s in enumerate(seq)] or ["  (none: the seeded walk is the reproducer)"]

    def doc(text: str) -> str:
        return text.replace('"""', "'''").replace("\\", "\\\\")

    return _TEMPLATE.format(
        predicate=predicate, detail=doc(detail), version=version,
        walker_id=walker_id, slice_seed=slice_seed, steps=steps, openapi=openapi, markov=markov,
        requests=[base64.b64encode(r).decode() for r in requests], n=len(requests), addr=addr,
        operation=operation, sequence_json=json.dumps(seq), templates=list(templates or []), login=login,
        username=username, password=password, fixed_credentials=fixed_credentials, shrink=doc(shrink or "-"),
        seq_len=len(seq), seq_lines=doc("\n".join(lines)),
    )
