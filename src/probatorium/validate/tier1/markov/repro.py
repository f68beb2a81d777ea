"""repro.py for Markov findings: replay the shrunk sequence, or the recorded requests, and judge.

The reproducer embeds the HTTP/1.1 grammar (http1.py), the Markov client
(client.py), the path templates (values.py) and the replayer (shrink.py), all
pure standard-library code, and judges each response with `shrink.findings`
(framing violations, x-invariant tags, any other 5xx as I-API-5XX), as the
walker does; an I-API-5XX reproduces only with the finding's own status.

When the finding was shrunk, repro.py replays that shortest sequence on a
fresh session, re-binding every captured value (ids, Location headers) from
the replay's own responses, so it reproduces against a freshly started server.
Otherwise (or with --raw) it replays the walker's last recorded requests byte
for byte (the Host re-rendered for HOST:PORT; their session cookie or token
only works against the same server process) and judges every response; for
I-DRV-1 it also checks read-after-write itself: a GET of a key must return
the body the last acknowledged PUT stored, and 404 after an acknowledged DELETE.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys

from ....api.spec import answered_by_design
from ....rawclient import set_nodelay
from ...repro import build_repro, connect, rehost
from .. import http1
from . import client, values
from . import shrink as shrink_module
from .client import H1Connection, HttpResult
from .shrink import Replayer, Step, findings
from .values import Templates


def _read_after_write(expected: dict, res: HttpResult) -> str | None:
    """I-DRV-1 over a replayed request: remember what PUT/DELETE stored; a GET must see it."""
    ok = res.status is not None and 200 <= res.status < 300
    if res.method == "PUT" and ok:
        expected[res.target] = res.sent.partition(b"\r\n\r\n")[2]
    elif res.method == "DELETE" and ok:
        expected[res.target] = None
    elif res.method == "GET" and res.target in expected and res.status is not None:
        want = expected[res.target]
        if want is None and res.status != 404:
            return f"GET {res.target} answered {res.status} after an acknowledged DELETE (expected 404)"
        if want is not None and (res.status != 200 or res.body != want):
            return f"GET {res.target} answered {res.status} with {res.body[:80]!r} instead of {want[:80]!r}"
    return None


async def _replay_raw(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    conn = H1Connection(host, port, timeout=10.0)
    expected: dict = {}
    try:
        for i, b64 in enumerate(payload["requests"]):
            raw = rehost(base64.b64decode(b64), payload["recorded_host"], addr)
            method, target = raw.split(b" ", 2)[:2]
            res = await conn._once(method.decode("latin-1"), target.decode("latin-1"), raw)
            print(raw.split(b"\r\n", 1)[0].decode("latin-1"), "->",
                  res.received.split(b"\r\n", 1)[0].decode("latin-1") or f"(no response: {res.error})")
            why = _read_after_write(expected, res) if payload["predicate"] == "I-DRV-1" else None
            shown = findings(res) if payload.get("status") in (None, res.status) else []
            if why is not None or payload["predicate"] in shown:
                print("--- received ---")
                print(res.received[:2000].decode("latin-1"))
                return True, f"request {i + 1} of {len(payload['requests'])} shows {payload['predicate']}" + (
                    f": {why}" if why else "")
    finally:
        await conn.close()
    return False, f"none of the {len(payload['requests'])} replayed responses shows {payload['predicate']}"


async def _replay_sequence(host: str, port: int, payload: dict) -> tuple[bool, str]:
    user = payload["username"] if payload["fixed_credentials"] else f"{payload['username']}-repro-{os.getpid()}"
    replayer = Replayer(lambda: H1Connection(host, port, timeout=10.0), Templates(payload["templates"]),
                        tuple(payload["login"]) if payload["login"] else None, lambda n: (user, payload["password"]))
    steps = [Step.from_json(s) for s in payload["sequence"]]
    out = await replayer.replay(steps, payload["predicate"], payload["operation"], payload.get("status"))
    for line in out.lines:
        print(line)
    if out.error:
        print("stopped:", out.error)
    if out.failed_at is not None and out.last is not None:
        print("---", payload["predicate"], "at step", out.failed_at + 1, "of", len(steps))
        print(out.last.sent[-2000:].decode("latin-1"))
        print("--- received ---")
        print(out.last.received[:2000].decode("latin-1"))
    hit = out.failed_at is not None
    return hit, f"sent {len(out.sent)} request(s); " + (
        f"step {out.failed_at + 1} shows {payload['predicate']}" if hit else "the finding did not show")


def judge_markov(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """The minimal sequence when there is one (and --raw is not given), else the recorded requests."""
    connect(host, port).close()  # nothing listening: UNREACHABLE, before any request
    if payload["sequence"] and "--raw" not in sys.argv:
        return asyncio.run(_replay_sequence(host, port, payload))
    return asyncio.run(_replay_raw(host, port, addr, payload))


def markov_repro(*, predicate: str, detail: str, slice_seed: int, walker_id: int, steps: int,
                 requests: list[bytes], addr: str, version: str, sequence: list[dict] | None = None,
                 operation: str | None = None, status: int | None = None, templates: list[str] | None = None,
                 login: list[str] | None = None,
                 username: str = "", password: str = "", fixed_credentials: bool = False, shrink: str = "") -> str:
    """Source of a standalone repro.py for one Markov finding (`sequence`: the shrunk steps, as
    `Step.to_json()` dicts, replayed with re-bound captures; without it, the recorded `requests`;
    `status`: an I-API-5XX finding's status, the one a replayed 5xx must have)."""
    seq = sequence or []
    lines = [f"  {i + 1}. {s['method']} {s['path']}" + (f" {s['used']}" if s.get("used") else "")
             for i, s in enumerate(seq)] or ["  (none: the recorded requests are replayed)"]
    payload = {"sequence": seq, "operation": operation, "status": status, "templates": list(templates or []),
               "login": login,
               "username": username, "password": password, "fixed_credentials": fixed_credentials,
               "requests": [base64.b64encode(r).decode() for r in requests], "recorded_host": addr}
    how = (f"Walker {walker_id} of slice seed {slice_seed} reached it after {steps} steps.\n"
           f"Shrinking: {shrink or '-'}\nMinimal sequence ({len(seq)} request(s) after a login, if any):\n"
           + "\n".join(lines) + "\n\n"
           f"Replays the minimal sequence on a fresh session (ids re-bound from the replay's own responses)\n"
           f"and stops at the first {predicate}{' on ' + operation if operation else ''}"
           f"{f' answered {status}' if status else ''}. Without one, or with\n"
           f"--raw (python3 repro.py HOST:PORT --raw), replays the {len(requests)} recorded requests byte for byte\n"
           "(their session cookie/token only works against the same server process) and judges each response.")
    return build_repro("markov", payload, judge_markov, predicate=predicate, detail=detail, addr=addr,
                       version=version, how=how, modules=(http1, client, values, shrink_module),
                       helpers=(set_nodelay, answered_by_design, _read_after_write, _replay_raw, _replay_sequence))
