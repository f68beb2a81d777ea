"""repro.py for WebSocket findings: the exact connection rebuilt from (case, connection seed).

The reproducer embeds the one framer (probatorium/wsframe.py) and frames.py
(the catalogue, the parsing and the grading; pure and stdlib-only), rebuilds
the key and the frames from the connection seed, replays handshake + case over
a blocking socket the way the slice's driver does (AWAIT_REPLY waits for the
server's first frame; a close frame is answered; the end of TCP is timed), and
grades with the same functions.
"""

from __future__ import annotations

import os
import random
import socket
import time

from .... import __version__, wsframe
from ...repro import build_repro, connect, read_until
from . import frames
from .frames import (AFTER_CLOSE_MAX_S, CASES_BY_NAME, grade_after_close, HANDSHAKE_CASES, JUDGE_CLOSE_TCP_MAX_SENT, VALID_HANDSHAKE, VERDICT_PREDICATE,
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


def _listener_rss(port: int) -> int | None:
    """wt-wsasgi: the RSS (bytes) of the local process listening on `port`, found through /proc
    (Linux; None when it is not a local process or cannot be read)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                line = next(x for x in open(f"/proc/{pid}/status") if x.startswith("VmRSS:"))
                return int(line.split()[1]) * 1024
        except (OSError, StopIteration, ValueError):
            continue
    return None


def _ws_after_close(sock: socket.socket, case, segments: list, port: int, timeout: float):
    """wt-wsasgi: send the oversize stream; after the server's close go on for up to case.after_close
    bytes or AFTER_CLOSE_MAX_S, then grade what it did with them from its RSS."""
    before, received, at_close, sent, error, closed = None, b"", None, 0, "", False
    end = None
    sock.settimeout(timeout)
    for seg in segments:
        if seg is None:
            continue
        try:
            sock.sendall(seg)
        except OSError as e:
            error, closed = f"send stopped: {e}", True
            break
        sent += len(seg)
        sock.setblocking(False)
        try:
            while True:
                more = sock.recv(65536)
                if not more:
                    closed = True
                    break
                received += more
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed = True
        finally:
            sock.settimeout(timeout)
        if at_close is None and close_frame_complete(received):
            at_close, end = sent, time.monotonic() + AFTER_CLOSE_MAX_S
            before = _listener_rss(port)  # what it holds at its close
        if closed or (at_close is not None and (sent - at_close >= case.after_close or time.monotonic() >= end)):
            break
    time.sleep(0.5)
    after = _listener_rss(port)
    sent_after = sent - at_close if at_close is not None else 0
    timed_out = False
    if at_close is None:
        more, how = read_until(sock, timeout, timeout, lambda d: close_frame_complete(received + d))
        received += more
        closed = closed or how.startswith(("closed", "reset"))
        timed_out = how.startswith("timeout")
    g = grade(case, received, closed and not close_frame_complete(received), timed_out)
    print(f"sent {sent >> 20} MiB, {sent_after >> 20} MiB after the server's close; RSS {before} -> {after}", error)
    print("close code:", g.close_code, "| verdict before the RSS rule:", g.verdict)
    if g.verdict == "ws_closed_correctly":
        extra = grade_after_close(sent_after, before, after)
        if extra is not None:
            g.verdict, g.reason = extra
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
    g = grade_handshake(hs, status, how.startswith(("closed", "reset")), how.startswith("timeout"), problem,
                        headers.get("sec-websocket-version"))
    if case is not None and g.verdict == "ws_closed_correctly" and case.after_close:  # wt-wsasgi
        g = _ws_after_close(sock, case, segments, port, timeout)
    elif case is not None and g.verdict == "ws_closed_correctly":
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
                       case=case.name, how=how, modules=(wsframe, frames),
                       helpers=(_ws_send_case, _ws_frames, _listener_rss, _ws_after_close))
