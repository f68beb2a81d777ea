"""repro.py for WebSocket findings: the exact connection rebuilt from (case, connection seed).

The reproducer embeds the one framer (probatorium/wsframe.py) and frames.py
(the catalogue, the parsing and the grading; pure and stdlib-only), rebuilds
the key and the frames from the connection seed, replays handshake + case over
a blocking socket the way the slice's driver does (AWAIT_REPLY waits for the
server's first frame; a close frame is answered; the end of TCP is timed), and
grades with the same functions.
"""

from __future__ import annotations

import random
import socket

from .... import __version__, wsframe
from ...repro import build_repro, connect, read_until
from . import frames
from .frames import (CASES_BY_NAME, HANDSHAKE_CASES, JUDGE_CLOSE_TCP_MAX_SENT, VALID_HANDSHAKE, VERDICT_PREDICATE,
                     HandshakeCase, WsCase, check_accept, close_frame_complete, close_reply_frame, grade,
                     grade_handshake, new_key, parse_frames, render_handshake, split_head)


def _ws_send_case(sock: socket.socket, segments: list, received: bytes, timeout: float) -> tuple[bytes, int, str]:
    """Send the case's segments (None: wait for the server's first frame); (received, bytes sent,
    the send error or "")."""
    sent = 0
    try:
        for seg in segments:
            if seg is None:
                more, _ = read_until(sock, timeout, timeout, lambda d: bool(parse_frames(received + d).frames))
                received += more
                continue
            sock.sendall(seg)
            sent += len(seg)
    except OSError as e:
        return received, sent, f"send stopped: {e}"
    return received, sent, ""


def _ws_frames(sock: socket.socket, case, segments: list, received: bytes, timeout: float):
    """After the 101: send the case, read to the close frame, answer it, time the end of TCP, grade."""
    received, sent, error = _ws_send_case(sock, segments, received, timeout)
    more, how = read_until(sock, timeout, timeout + 30.0, lambda d: close_frame_complete((received + d)[:1 << 20]))
    received += more
    closed, timed_out, kept_open = how.startswith(("closed", "reset")), how.startswith("timeout"), False
    if how == "complete":
        whole = not error and sent <= JUDGE_CLOSE_TCP_MAX_SENT
        try:
            sock.sendall(close_reply_frame(received))
        except OSError:
            pass
        _, end = read_until(sock, timeout if whole else 0.2, timeout if whole else 0.2, max_bytes=1 << 24)
        closed, kept_open = not end.startswith("timeout"), whole and end.startswith("timeout")
    g = grade(case, received, closed, timed_out, kept_open)
    print("frames back (opcode, length):", [(f.opcode, f.length) for f in g.frames[:10]], error)
    print("close code:", "no close frame" if not g.close_seen else g.close_code,
          "| TCP closed" if closed else "", "| timed out" if timed_out else "",
          "| TCP kept open after the close handshake" if kept_open else "")
    print("expected close:", "/".join(map(str, case.expected_close)))
    return g


def judge_ws(host: str, port: int, addr: str, payload: dict) -> tuple[bool, str]:
    """Handshake (the case's, or the valid one), then the case's frames; reproduced when the
    verdict maps to the finding's predicate (frames.VERDICT_PREDICATE, the catalogue's ws rows)."""
    rng = random.Random(payload["conn_seed"])
    key = new_key(rng)
    hs = next((h for h in HANDSHAKE_CASES if h.name == payload["case"]), None)
    case = None if hs is not None else CASES_BY_NAME[payload["case"]]
    hs = hs or VALID_HANDSHAKE
    segments = case.build(rng) if case is not None else None
    timeout = payload["close_timeout"]
    sock = connect(host, port)
    sock.sendall(render_handshake(hs, addr, payload["ws_path"], key))
    data, how = read_until(sock, timeout, timeout, lambda d: split_head(d)[3])
    status, headers, rest, _ = split_head(data)
    print(f"handshake: {hs.name} -> status {status}")
    problem = check_accept(status, headers.get("sec-websocket-accept"), headers.get("upgrade"), key) \
        if status == 101 else None
    g = grade_handshake(hs, status, how.startswith(("closed", "reset")), how.startswith("timeout"), problem)
    if case is not None and g.verdict == "ws_closed_correctly":
        g = _ws_frames(sock, case, segments, rest, timeout)
    sock.close()
    return VERDICT_PREDICATE.get(g.verdict) == payload["predicate"], f"verdict {g.verdict} - {g.reason}"


def ws_repro(*, case: WsCase | HandshakeCase, predicate: str, detail: str, conn_seed: int, ws_path: str,
             addr: str, close_timeout: float) -> str:
    """Source of a standalone repro.py (stdlib only) for one WebSocket finding."""
    payload = {"case": case.name, "conn_seed": conn_seed, "ws_path": ws_path,
               "close_timeout": max(close_timeout, 1.0)}
    how = (f"Case: {case.name} - {case.clause}; connection seed {conn_seed}.\n"
           "Rebuilds the key and the frames from the seed, replays handshake + case and grades with\n"
           "probatorium's frames.py (embedded below, on its one framer wsframe.py).")
    return build_repro("ws", payload, judge_ws, predicate=predicate, detail=detail, addr=addr, version=__version__,
                       case=case.name, how=how, modules=(wsframe, frames), helpers=(_ws_send_case, _ws_frames))
