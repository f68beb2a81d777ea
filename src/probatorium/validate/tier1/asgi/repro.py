"""repro.py for ASGI probe findings: a scope case re-sent and re-judged, or an orphan round replayed.

The reproducer embeds judge.py (pure, stdlib only) and grades with the very
rules the run graded with.
"""

from __future__ import annotations

import time

from .... import __version__
from ... import repro as R
from ...repro import connect, read_until, reset_close
from . import judge as J
from .judge import ORPHAN_PATH, ORPHAN_SETTLE_S, ORPHAN_STREAMS, SCOPE_CASES, debug_orphans, judge_orphans, judge_scope, scope_from_response, scope_verdict


def _get(host: str, port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    sock = connect(host, port)
    sock.sendall(raw)
    data, _ = read_until(sock, timeout, timeout)
    sock.close()
    return data


def judge_asgi(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """scope: the case's request, its scope judged; orphans: a round of streams reset and counted."""
    if payload["probe"] == "scope":
        case = next(c for c in SCOPE_CASES if c.name == payload["case"])
        status, scope = scope_from_response(_get(host, port, case.request(addr)))
        if scope is None:
            return False, f"no scope record (status {status})"
        devs = judge_scope(case, scope, port)
        for d in devs:
            print("deviation:", d.rule, "(required)" if d.required else "(optional)", "-", d.detail)
        v = scope_verdict(devs)
        return v == "scope_violation", f"verdict {v}: {len(devs)} deviation(s)"
    dbg = f"GET {payload['debug_path']} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode()
    baseline = debug_orphans(_get(host, port, dbg))
    waited = time.monotonic()
    while baseline and time.monotonic() - waited < 30.0:  # orphans of an earlier round still run: wait them out
        time.sleep(1.0)
        baseline = debug_orphans(_get(host, port, dbg))
    socks = []
    for _ in range(payload["streams"]):
        s = connect(host, port)
        s.sendall(f"GET {ORPHAN_PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode())
        read_until(s, 2.0, 3.0, lambda d: len(d) > 2048)
        socks.append(s)
    held = debug_orphans(_get(host, port, dbg))
    for s in socks:
        reset_close(s)
    t0, after = time.monotonic(), []
    while time.monotonic() - t0 < ORPHAN_SETTLE_S + 1.0:
        time.sleep(0.5)
        n = debug_orphans(_get(host, port, dbg))
        after.append((time.monotonic() - t0, -1 if n is None else n))
        if n is not None and baseline is not None and n <= baseline:
            break
    v = judge_orphans(baseline, held, after, payload["streams"])
    print(f"orphans_open: before {baseline}, while held {held}, after the resets {after}")
    return v.verdict == "orphans_kept", f"verdict {v.verdict} - {v.reason}"


def asgi_repro(*, probe: str, case: str, predicate: str, detail: str, addr: str, debug_path: str = "/debug/vars",
               streams: int = ORPHAN_STREAMS) -> str:
    payload = {"probe": probe, "case": case, "debug_path": debug_path, "streams": streams}
    how = ("Sends the scope case's request and judges the scope the application received (embedded judge.py)."
           if probe == "scope" else
           f"Opens {streams} streams on {ORPHAN_PATH}, resets them, and polls orphans_open on {debug_path}\n"
           f"for {ORPHAN_SETTLE_S:.0f} s (embedded judge.py).")
    return R.build_repro("asgi", payload, judge_asgi, predicate=predicate, detail=detail, addr=addr,
                         version=__version__, case=case, how=how, modules=(J,), helpers=(_get,))
