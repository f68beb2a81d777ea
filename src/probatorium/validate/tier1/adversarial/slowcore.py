"""Slow clients and held connections: the standard-library core (embedded in repro.py verbatim).

Issue 12, items 4 and 5. Connections the validator holds open on purpose, each kind a way a
slow or hostile client behaves (RFC 9112 §9.5 leaves the timeout to the server; the slowloris
literature shows what holding partial requests costs):

* ``idle``            connect, send nothing (measured only: an idle connection is no request)
* ``partial_line``    half a request-line, then nothing
* ``trickle_headers`` a request-line and Host, then one header byte every ``trickle`` seconds
* ``stalled_body``    a complete head announcing 1000 body bytes, 10 of them, then nothing

``hold`` keeps one connection of a kind until the server closes it or the cap, and returns the
seconds it stayed open (None: still open at the cap). ``legit`` is one fresh, complete request
sent while the others are held. ``stream_header`` sends an endless header value (no CRLF ever)
as fast as the server reads it: the bytes a server buffers for one unfinished head. The judges
below are pure; nothing here imports probatorium.
"""

from __future__ import annotations

import asyncio
import os
import time

HOLD_KINDS = ("idle", "partial_line", "trickle_headers", "stalled_body")
PARTIAL_KINDS = ("partial_line", "trickle_headers", "stalled_body")  # holding these is I-ADV-SLOWLORIS
STALLED_BODY_LENGTH = 1000
# The held-connection kinds as data: clause, level, the outcome required, the predicate held-to-cap
# breaks. RFC 9112 §9.5 leaves the timeout to the server (no keyword), so the level is MAY and the
# finding's weight (MED) is the availability exposure the issue fixes, not a MUST.
HOLD_CASES = {
    "idle": ("RFC 9112 §9.5", "MAY", "measured only: keeping an idle connection is the server's choice", None),
    "partial_line": ("RFC 9112 §9.5, §2.2", "MAY", "closed (408 or not) before the cap", "I-ADV-SLOWLORIS"),
    "trickle_headers": ("RFC 9112 §9.5, §5", "MAY", "closed before the cap, however slowly bytes arrive",
                        "I-ADV-SLOWLORIS"),
    "stalled_body": ("RFC 9112 §9.5, §6.2", "MAY", "closed before the cap when the body stops", "I-ADV-SLOWLORIS"),
}


def opening(kind: str, target: str, host: str) -> bytes:
    """The bytes a held connection of `kind` sends at once (the trickle follows for trickle_headers)."""
    if kind == "idle":
        return b""
    if kind == "partial_line":
        return f"GET {target} HT".encode("latin-1")
    if kind == "trickle_headers":
        return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode("latin-1")
    if kind == "stalled_body":
        return (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {STALLED_BODY_LENGTH}\r\n\r\n"
                "0123456789").encode("latin-1")
    raise ValueError(f"unknown held-connection kind {kind!r}")


async def _close(writer) -> None:
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, asyncio.TimeoutError, ConnectionError):
        pass


async def hold(host: str, port: int, kind: str, target: str, host_header: str, *, cap: float,
               trickle: float, stop=None) -> dict:
    """Hold one connection of `kind` until the server closes it or `cap` seconds pass.

    Returns {"kind", "open_s" (None: open at the cap), "connected", "response" (the first line
    the server sent, if any), "sent"}. `stop()` ends the hold early (then open_s is None too)."""
    out = {"kind": kind, "open_s": None, "connected": False, "response": "", "sent": 0}
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
    except (OSError, asyncio.TimeoutError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    out["connected"] = True
    t0 = time.monotonic()
    end = t0 + cap
    received = b""
    try:
        data = opening(kind, target, host_header)
        if data:
            writer.write(data)
            await writer.drain()
            out["sent"] += len(data)
        next_byte = t0 + trickle
        while True:
            now = time.monotonic()
            if now >= end or (stop is not None and stop()):
                return out
            wake = min(end, next_byte) if kind == "trickle_headers" else min(end, now + 1.0)
            try:
                chunk = await asyncio.wait_for(reader.read(4096), max(0.01, wake - now))
            except asyncio.TimeoutError:
                chunk = None
            if chunk == b"":
                out["open_s"] = round(time.monotonic() - t0, 2)
                return out
            if chunk:
                received += chunk
                if not out["response"]:
                    out["response"] = received.split(b"\r\n", 1)[0][:80].decode("latin-1")
                continue
            if kind == "trickle_headers" and time.monotonic() >= next_byte:
                writer.write(b"a")
                await writer.drain()
                out["sent"] += 1
                next_byte += trickle
    except (OSError, ConnectionError):
        out["open_s"] = round(time.monotonic() - t0, 2)  # reset by the server
        return out
    finally:
        await _close(writer)


async def legit(host: str, port: int, target: str, host_header: str, *, nonce: str, echo: bool,
                timeout: float) -> dict:
    """One complete GET on a fresh connection (Connection: close). ok: in echo mode the response
    body carries the nonce (the application received it), else any status below 500 arrived."""
    t0 = time.monotonic()
    joiner = "&" if "?" in target else "?"
    path = f"{target}{joiner}adv={nonce}" if echo else target
    req = f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode("latin-1")
    res = {"nonce": nonce, "ok": False, "how": "", "status": None, "evidence": "echo" if echo else "status"}
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        res["how"] = "connect timeout"
        return res
    except OSError as e:
        res["how"] = f"refused: {type(e).__name__}"
        return res
    data = b""
    try:
        writer.write(req)
        await writer.drain()
        while len(data) < (1 << 20):
            left = t0 + timeout - time.monotonic()
            if left <= 0:
                res["how"] = "timeout"
                break
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                res["how"] = "answered" if data else "closed without a response"
                break
            data += chunk
    except asyncio.TimeoutError:
        res["how"] = "timeout"
    except (OSError, ConnectionError) as e:
        res["how"] = f"reset: {type(e).__name__}"
    finally:
        await _close(writer)
    head = data.split(b"\r\n", 1)[0].split(b" ")
    if len(head) >= 2 and head[0].startswith(b"HTTP/") and head[1].isdigit():
        res["status"] = int(head[1])
    if res["status"] is not None and res["how"] in ("answered", "timeout"):
        res["ok"] = (nonce.encode() in data) if echo else res["status"] < 500
    res["seconds"] = round(time.monotonic() - t0, 2)
    return res


async def stream_header(host: str, port: int, target: str, host_header: str, *, limit: int,
                        seconds: float) -> dict:
    """Send one head whose last field value never ends (no CRLF), up to `limit` bytes or `seconds`.
    Returns the bytes the server took and whether it closed (or answered) before the limit."""
    out = {"sent": 0, "closed": False, "response": ""}
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
    except (OSError, asyncio.TimeoutError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    end = time.monotonic() + seconds
    block = b"a" * 65536
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nX-Big: ".encode("latin-1"))
        while out["sent"] < limit and time.monotonic() < end:
            writer.write(block)
            await asyncio.wait_for(writer.drain(), max(0.05, end - time.monotonic()))
            out["sent"] += len(block)
            try:  # an answer (431) or a close ends it
                chunk = await asyncio.wait_for(reader.read(4096), 0.001)
            except asyncio.TimeoutError:
                continue
            if chunk:
                out["response"] = chunk.split(b"\r\n", 1)[0][:80].decode("latin-1")
            out["closed"] = True
            break
    except asyncio.TimeoutError:
        pass  # the server stopped reading: what it took is what it buffered (or the kernel did)
    except (OSError, ConnectionError):
        out["closed"] = True
    out["writer"] = writer  # the caller holds it open while memory is sampled, then closes it
    return out


async def close_streams(streams: list[dict]) -> None:
    for s in streams:
        w = s.pop("writer", None)
        if w is not None:
            await _close(w)


# ---- pure judges ------------------------------------------------------------------------------


def judge_holds(kind: str, holds: list[dict], cap: float) -> dict:
    """One kind's held connections: seconds each stayed open, and the verdict.

    `held_to_cap` (a partial kind: I-ADV-SLOWLORIS) when at least half of the connected ones were
    still open at the cap; `closed` otherwise; `idle_*` for the idle kind (measured, never a
    finding); `not_connected` when none connected."""
    connected = [h for h in holds if h.get("connected")]
    open_s = sorted(cap if h.get("open_s") is None else float(h["open_s"]) for h in connected)
    at_cap = sum(1 for h in connected if h.get("open_s") is None)
    clause, level, required, _ = HOLD_CASES[kind]
    row = {"kind": kind, "clause": clause, "level": level, "required": required, "connections": len(holds), "connected": len(connected), "held_to_cap": at_cap,
           "cap_s": cap, "median_s": open_s[len(open_s) // 2] if open_s else None,
           "max_s": open_s[-1] if open_s else None,
           "responses": sorted({h["response"] for h in connected if h.get("response")})[:3]}
    if not connected:
        row["verdict"] = "not_connected"
    elif 2 * at_cap >= len(connected):
        row["verdict"] = "idle_held_to_cap" if kind not in PARTIAL_KINDS else "held_to_cap"
    else:
        row["verdict"] = "idle_closed" if kind not in PARTIAL_KINDS else "closed"
    return row


def judge_starvation(baseline: dict | None, during: list[dict], *, min_failures: int = 2) -> dict:
    """Whether legitimate requests failed while the connections were held.

    not_judged when the baseline request (before any was held) failed: the target was not
    answering to begin with. starved (I-ADV-STARVE) when at least `min_failures` of the requests
    sent while the connections were held were refused or timed out; else ok."""
    if baseline is None or not baseline.get("ok"):
        how = "none sent" if baseline is None else baseline.get("how") or f"status {baseline.get('status')}"
        return {"verdict": "not_judged", "reason": f"the legitimate request before holding failed ({how})",
                "sent": len(during), "failed": 0}
    failed = [d for d in during if not d.get("ok")]
    verdict = "starved" if during and len(failed) >= min_failures else "ok"
    if not during:
        verdict = "not_judged"
    return {"verdict": verdict, "sent": len(during), "failed": len(failed),
            "evidence": baseline.get("evidence", "status"),
            "failures": [f"{d.get('how') or 'status ' + str(d.get('status'))}" for d in failed][:5],
            "reason": "" if during else "no legitimate request was sent while the connections were held"}


MEMORY_MIN_GROWTH = 16 << 20
MEMORY_SHARE = 0.5


def judge_memory(rss_before: int | None, rss_peak: int | None, streams: list[dict]) -> dict:
    """Whether the target's memory grew with the unfinished heads it was sent.

    grew (I-ADV-MEMORY) when the server took at least 16 MiB of head bytes (no header limit
    stopped it) and the resident set rose by at least half of them (and by 16 MiB) while none of
    the heads was finished. Growth alone is not evidence: a server that stopped reading after a
    few KiB cannot owe its growth to the heads (other slices of the cell, e.g. a WebSocket
    stream, move the same resident set). not_judged without RSS samples."""
    sent = sum(int(s.get("sent", 0)) for s in streams)
    row = {"streams": len(streams), "bytes_taken": sent, "closed_early": sum(1 for s in streams if s.get("closed")),
           "rss_before": rss_before, "rss_peak": rss_peak,
           "responses": sorted({s["response"] for s in streams if s.get("response")})[:3]}
    if rss_before is None or rss_peak is None:
        row.update(verdict="not_judged", reason="no resident-set sample of the target (no local process)")
        return row
    growth = rss_peak - rss_before
    row["growth"] = growth
    threshold = max(MEMORY_MIN_GROWTH, int(MEMORY_SHARE * sent))
    row["threshold"] = threshold
    row["verdict"] = "grew" if sent >= MEMORY_MIN_GROWTH and growth >= threshold else "bounded"
    return row


# ---- the target's resident set from outside (repro.py has no pid) ------------------------------


def listener_pids(port: int) -> list[int]:
    """Pids of the processes holding a socket listening on `port` (Linux /proc; [] elsewhere)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except (OSError, StopIteration, ValueError):
            continue
    pids = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()) if inodes else ():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.append(int(pid))
                    break
        except OSError:
            continue
    return pids


def rss_of(pids: list[int]) -> int | None:
    """Summed VmRSS of `pids` in bytes (None when none can be read)."""
    total, seen = 0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        seen = True
                        break
        except OSError:
            continue
    return total if seen else None
