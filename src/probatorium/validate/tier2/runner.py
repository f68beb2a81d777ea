"""Run a sequence of steps against the target: one keep-alive connection per user.

The HTTP/1.1 client is the Markov slice's (:class:`..tier1.markov.client.H1Connection`):
every response is framed and graded by the one strict parser. Steps are
rendered and values captured by :mod:`.exchange`, exactly as a dossier's
repro.py does. A run starts with fresh connections and no credentials: the
sequence's own login steps log its users in, so a replay is self-contained.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..tier1.markov.client import H1Connection, HttpResult
from .exchange import LOGIN_PROBE, Exchange, cookie_pairs, login_auth, render


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def exchange_of(step: dict, res: HttpResult, headers: list, body: bytes | None, bindings: dict) -> Exchange:
    """The recorded exchange of one step's request and response."""
    resp = res.response
    return Exchange(
        step=step["id"], op_id=step["op_id"], user=step.get("user", ""), method=step["method"], path=res.target,
        request_headers=[list(h) for h in headers], request_body=None if body is None else _text(body),
        status=res.status if res.error is None or resp is not None else None,
        response_headers=[[k.decode("latin-1"), v.decode("latin-1")] for k, v in (resp.headers if resp else [])],
        response_body=_text(resp.body) if resp is not None else "", bindings=bindings, elapsed=res.elapsed,
        probe=step.get("probe", ""), violates=step.get("violates"), error=res.error)


class Runner:
    """Sends sequences to the target at `address()` (it follows restarts)."""

    def __init__(self, address: Callable[[], tuple[str, int]], timeout: float = 10.0) -> None:
        self.address = address
        self.timeout = timeout
        self.requests = 0
        self.cleanup_requests = 0
        self.rfc_violations: list = []  # (predicate, detail) of responses the strict parser refused

    async def run(self, steps: list[dict], cleanup: Callable[[list], list] | None = None) -> list[Exchange]:
        """Every step in order; a step whose producer gave no value is recorded with an error.

        `cleanup(steps)` gives the steps sent after the sequence on its connections (garbage
        collection, :meth:`.planner.Planner.cleanup`): their answers are not returned and no
        checker sees them; `cleanup_requests` counts them."""
        host, port = self.address()
        conns: dict[str, H1Connection] = {}
        auth: dict[str, dict] = {}
        jars: dict[str, dict] = {}
        done: dict = {}
        out: list[Exchange] = []
        try:
            for step in steps:
                ex = await self._one(step, host, port, conns, auth, jars, done)
                done[step["id"]] = ex
                out.append(ex)
            for step in cleanup(steps) if cleanup is not None else ():
                before = self.requests
                done[step["id"]] = await self._one(step, host, port, conns, auth, jars, done)
                self.cleanup_requests += self.requests - before
        finally:
            for c in conns.values():
                await c.close()
        return out

    async def _one(self, step, host, port, conns, auth, jars, done) -> Exchange:
        user = step.get("user", "")
        try:
            target, headers, body, bindings, params = render(step, done, auth)
        except KeyError as e:
            return Exchange(step=step["id"], op_id=step["op_id"], user=user, method=step["method"],
                            path=step["path"], probe=step.get("probe", ""), violates=step.get("violates"),
                            error=f"unbound: no value for {e} (its producer step failed)")
        jar = jars.setdefault(user, {})
        if jar:
            headers = [*headers, ["Cookie", "; ".join(f"{k}={v}" for k, v in jar.items())]]
        conn = conns.get(user)
        if conn is None:
            conn = conns[user] = H1Connection(host, port, timeout=self.timeout, owner="tier2")
        t0 = time.monotonic()
        res = await conn.request(step["method"], target, [tuple(h) for h in headers], body)
        res.elapsed = time.monotonic() - t0
        self.requests += 1
        for v in res.violations:
            self.rfc_violations.append((v.predicate, f"{step['method']} {target}: {v.detail}"))
        ex = exchange_of(step, res, headers, body, bindings)
        ex.request_params = params
        cookie_pairs([v for k, v in ex.response_headers if k.lower() == "set-cookie"], jar)
        if step.get("probe") == LOGIN_PROBE:
            auth[user] = login_auth(ex)
        return ex
