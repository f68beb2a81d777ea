"""repro.py for Tier 2 findings: the shrunk sequence replayed with its bindings, judged by the checkers.

The reproducer embeds :mod:`.minischema`, :mod:`.exchange` and :mod:`.checks`
(pure, standard library only), so it renders each step, captures producer
values (ids, Location headers, tokens) from the fresh target's answers, and
judges the exchanges with the very checker that made the finding.
"""

from __future__ import annotations

from ...api.spec import answered_by_design
from .. import repro as R
from ..repro import connect, http_exchange
from . import checks, exchange, minischema
from .checks import check_sequence
from .exchange import LOGIN_PROBE, Exchange, cookie_pairs, login_auth, parse_response, render
from .minischema import schema_errors


def replay_steps(host: str, port: int, addr: str, steps: list) -> list:
    """Send every step (one connection per request), bindings resolved from earlier answers."""
    done, out, auth, jars = {}, [], {}, {}
    for st in steps:
        user = st.get("user", "")
        try:
            target, headers, body, bindings, params = render(st, done, auth)
        except KeyError as e:
            ex = Exchange(step=st["id"], op_id=st["op_id"], user=user, method=st["method"], path=st["path"],
                          probe=st.get("probe", ""), violates=st.get("violates"), error=f"unbound: {e}")
            done[st["id"]] = ex
            out.append(ex)
            print(f"step {st['id']}: {st['method']} {st['path']}: not sent (no value for {e})")
            continue
        jar = jars.setdefault(user, {})
        if jar:
            headers.append(["Cookie", "; ".join(f"{k}={v}" for k, v in jar.items())])
        lines = [f"{st['method']} {target} HTTP/1.1", f"Host: {addr}"] + [f"{k}: {v}" for k, v in headers]
        if body is not None or st["method"] in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        sock = connect(host, port)
        data, how = http_exchange(sock, raw, timeout=10.0)
        sock.close()
        status, rheaders, rbody = parse_response(data)
        ex = Exchange(step=st["id"], op_id=st["op_id"], user=user, method=st["method"], path=target,
                      request_headers=headers, request_body=None if body is None else body.decode("utf-8", "replace"),
                      status=status, response_headers=rheaders, response_body=rbody, bindings=bindings,
                      probe=st.get("probe", ""), violates=st.get("violates"), request_params=params,
                      error=None if status is not None else f"no response ({how})")
        cookie_pairs([v for k, v in rheaders if k.lower() == "set-cookie"], jar)
        if st.get("probe") == LOGIN_PROBE:
            auth[user] = login_auth(ex)
        done[st["id"]] = ex
        out.append(ex)
        print(f"step {st['id']}: user {user} {st['method']} {target} -> {status if status is not None else how}")
    return out


def judge_api(host: str, port: int, addr: str, payload: dict) -> tuple:
    """Replay the sequence; reproduced when the finding's checker finds it again on its operation."""
    seq = replay_steps(host, port, addr, payload["steps"])
    _, findings = check_sequence(seq, payload["ops"], schema_errors, only=payload["predicate"])
    hits = [f for f in findings if f.predicate == payload["predicate"] and f.op_id == payload["op_id"]]
    if hits:
        return True, hits[0].detail
    return False, f"{payload['predicate']} not seen on {payload['op_id']} over {len(seq)} step(s)"


def api_repro(*, steps: list, ops: dict, predicate: str, op_id: str, detail: str, addr: str, version: str,
              case: str) -> str:
    """Source of a standalone repro.py for one Tier 2 finding."""
    used = {s["op_id"] for s in steps}
    payload = {"steps": steps, "ops": {k: v for k, v in ops.items() if k in used or k == op_id}, "op_id": op_id}
    how = (f"Replays {len(steps)} request(s) against HOST:PORT: each user logs in, producer responses\n"
           "feed the ids of later steps (bindings), and the exchanges are judged by probatorium's\n"
           f"{predicate} checker (embedded below).")
    return R.build_repro("tier2", payload, judge_api, predicate=predicate, detail=detail, addr=addr,
                         version=version, case=case, how=how, modules=(minischema, exchange, checks),
                         helpers=(answered_by_design, replay_steps))
