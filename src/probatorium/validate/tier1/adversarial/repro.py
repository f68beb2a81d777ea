"""repro.py for adversarial findings: the case, re-rendered for any HOST:PORT, judged by verdict.py.

The reproducer embeds the HTTP/1.1 grammar (`http1.py`), the case model
(`catalogue.py`) and the verdict rules (`verdict.py`), all pure and
standard-library-only, so it renders the case exactly as the walker did
(lengths depend on the Host) and grades what comes back with the same judge.
"""

from __future__ import annotations

import dataclasses
import json
import time

from ... import repro as R
from ...repro import accepts, connect, http_exchange, read_until, send_segments
from .. import http1
from ..http1 import parse_response_stream
from . import catalogue, verdict
from .catalogue import Case, render
from .verdict import Outcome, judge


def app_count(host: str, port: int, addr: str, path: str) -> int | None:
    """The debug endpoint's `requests` counter (wt-smuggle, issue 12: app-side evidence)."""
    sock = connect(host, port)
    data, _ = http_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
    sock.close()
    return requests_counter(data)


def requests_counter(data: bytes) -> int | None:
    """The `requests` field of a debug-endpoint answer (the raw bytes read), or None."""
    finals = parse_response_stream(data, ["GET"], eof=True).final_responses
    if not finals or finals[0].status != 200:
        return None
    try:
        value = json.loads(finals[0].body).get("requests")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def judge_adversarial(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """Send the case as the walker did and grade it; reproduced when the verdict (or a framing
    violation) is the finding's predicate."""
    case = Case(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["case"].items()})
    rendered = render(case, target=payload["target"], host=addr, nonce=payload["nonce"], echo=payload["echo"])
    want = 1 + case.followups

    def answered(data: bytes) -> bool:
        finals = parse_response_stream(data, list(case.methods), eof=False).final_responses
        return not case.close and len([r for r in finals if r.complete]) >= want

    debug = payload.get("debug_path")  # the finding was judged from the debug counter
    deltas = []
    for _ in range(2 if debug else 0):  # other traffic only adds: the smallest delta is the case's
        before = app_count(host, port, addr, debug)
        sock = connect(host, port)
        send_segments(sock, rendered.segments, case.pause)
        read_until(sock, payload["quiet"], payload["quiet"] + 5.0 + case.pause * len(rendered.segments), answered)
        sock.close()
        after = app_count(host, port, addr, debug)
        if before is not None and after is not None:
            deltas.append(after - before - 1)  # the second read counts itself
        time.sleep(0.3)
    before = app_count(host, port, addr, debug) if debug else None
    sock = connect(host, port)
    error = send_segments(sock, rendered.segments, case.pause)
    quiet = payload["quiet"]
    data, how = read_until(sock, quiet, quiet + 5.0 + case.pause * len(rendered.segments), answered)
    sock.close()
    print(f"sent {len(rendered.data)} bytes in {len(rendered.segments)} segment(s)"
          f"{'; ' + error if error else ''}; received {len(data)} bytes; connection: {how}")
    print("--- received ---")
    print(data[:4000].decode("latin-1"))
    closed = how.startswith(("closed", "reset"))
    outcome = Outcome(data, closed, how.startswith("timeout"))
    after = app_count(host, port, addr, debug) if debug else None
    if before is not None and after is not None:
        deltas.append(after - before - 1)
        outcome.app_requests = min(deltas)
        print(f"debug counter: the application handled {deltas} request(s) in {len(deltas)} runs; judged: "
              f"{outcome.app_requests}")
    finals = parse_response_stream(data, list(case.methods), eof=True).final_responses
    if closed and not finals:
        time.sleep(0.3)
        outcome.target_alive = accepts(host, port)
    v = judge(case, rendered, outcome, echo=payload["echo"])
    for viol in v.violations:
        print("framing:", viol.predicate, viol.detail)
    bad = payload["verdict_predicates"].get(v.verdict) == payload["predicate"] or any(
        viol.predicate == payload["predicate"] for viol in v.violations)
    return bad, f"verdict {v.verdict} - {v.reason} (case {case.name}: {case.clause}, {case.level}, " \
                f"expected {case.expect})"


def adversarial_repro(*, case: Case, predicate: str, detail: str, echo: bool, target: str, nonce: str,
                      addr: str, quiet: float, version: str, debug_path: str | None = None) -> str:
    """Source of a standalone repro.py for one adversarial finding (`debug_path`: it was judged
    from the debug endpoint's counter, which the script then reads around its exchange)."""
    payload = {"case": dataclasses.asdict(case), "echo": echo, "target": target, "nonce": nonce,
               "quiet": max(quiet, 1.0), "debug_path": debug_path}
    how = (f"Case: {case.name} - {case.clause} ({case.level}); expected outcome: {case.expect}.\n"
           "Re-renders the case for HOST:PORT (lengths depend on the Host), sends it as the walker did,\n"
           "and grades the answer with probatorium's verdict rules (embedded below).")
    return R.build_repro("adversarial", payload, judge_adversarial, predicate=predicate, detail=detail,
                         addr=addr, version=version, case=case.name, how=how,
                         modules=(http1, catalogue, verdict), verdicts_of="adversarial", helpers=(app_count, requests_counter))
