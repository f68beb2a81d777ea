"""repro.py for Markov findings: re-run the same seeded walk, or replay the recorded requests.

A Markov walk is a pure function of (slice seed, walker id, model, spec) and
the target's responses, so re-running the walker with the same seed against a
target that answers the same way reproduces the request sequence, with fresh
ids captured on the way. Without probatorium at hand, the script falls back to
replaying the last requests byte for byte (standard library only).
"""

from __future__ import annotations

import base64

_TEMPLATE = r'''#!/usr/bin/env python3
"""Reproducer for {predicate} (Markov slice), found by probatorium {version}.

Finding: {detail}
Walker {walker_id} of slice seed {slice_seed} reached it after {steps} steps.

Usage: python3 repro.py HOST:PORT      (default {addr})

With probatorium importable, this re-runs the same seeded walk (same Markov
model, same OpenAPI document) for at most {steps} + 50 steps and stops at the
first {predicate}; exit status 1 when it reproduces. Pass --raw (or run it
without probatorium) to replay the last {n} requests exactly as they were sent
(their session cookie/token only work against the same server process).
"""
import base64, socket, sys, time

PREDICATE = {predicate!r}
SLICE_SEED = {slice_seed!r}
WALKER = {walker_id!r}
STEPS = {steps!r}
OPENAPI = {openapi!r}
MARKOV = {markov!r}
REQUESTS = [base64.b64decode(x) for x in {requests!r}]


def walk(host, port):
    import asyncio
    from probatorium.validate.tier1.markov.slice import MarkovSlice

    found = []
    s = MarkovSlice(host, port, openapi=OPENAPI, markov=MARKOV, seed=SLICE_SEED, report=found.append,
                    max_steps=STEPS + 50)
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
    print("REPRODUCED" if hits else "NOT REPRODUCED", "after", s.walkers[WALKER].steps, "steps")
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
    args = [a for a in sys.argv[1:] if a != "--raw"]
    addr = args[0] if args else {addr!r}
    host, _, port = addr.rpartition(":")
    host, port = host.strip("[]"), int(port)
    if "--raw" not in sys.argv:
        try:
            sys.exit(walk(host, port))
        except ImportError:
            print("(probatorium is not importable here: replaying the recorded requests instead)")
    sys.exit(replay(host, port))


if __name__ == "__main__":
    main()
'''


def markov_repro(*, predicate: str, detail: str, slice_seed: int, walker_id: int, steps: int,
                 openapi: str | None, markov: str | None, requests: list[bytes], addr: str, version: str) -> str:
    """Source of a standalone repro.py for one Markov finding."""
    return _TEMPLATE.format(
        predicate=predicate, detail=detail.replace('"""', "'''").replace("\\", "\\\\"), version=version,
        walker_id=walker_id, slice_seed=slice_seed, steps=steps, openapi=openapi, markov=markov,
        requests=[base64.b64encode(r).decode() for r in requests], n=len(requests), addr=addr,
    )
