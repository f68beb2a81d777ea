"""Measure the false-positive side of the leak judges on a refapp (docs/leaks.md).

Starts the refapp under one engine, drives moderate mixed traffic from a few
threads (keep-alive GETs, login/create/delete sessions, connection churn,
short SSE and WebSocket opens), samples the process tree at 1 Hz with
ResourceSampler, then judges I-MEM-1/I-FD-1/I-TASK-1 and prints one JSON line.

    .venv/bin/python scripts/leak_baseline.py --engine uvicorn --duration 120 --out DIR
    .venv/bin/python scripts/leak_baseline.py --rejudge DIR/resources.json ...
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from probatorium.targets.launcher import TargetSpec, start_target
from probatorium.validate.resources import ResourceSampler, judge_all, load_series

SETTLE_S = 10.0


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n


def paced(stop: threading.Event, rate: float):
    """Yield until `stop`, at most `rate` times per second."""
    period = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        yield
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()


def keepalive_gets(host: str, port: int, stop: threading.Event, c: Counter, rate: float) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    paths = ["/healthz", "/echo/a?b=1", "/healthz"]
    i = 0
    for _ in paced(stop, rate):
        try:
            conn.request("GET", paths[i % len(paths)])
            r = conn.getresponse()
            r.read()
            c.add(f"ka_{r.status}")
        except (OSError, http.client.HTTPException):
            c.add("ka_error")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
        i += 1
    conn.close()


def sessions(host: str, port: int, stop: threading.Event, c: Counter, rate: float, who: str) -> None:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    token = None
    i = 0
    for _ in paced(stop, rate):
        try:
            if token is None or i % 200 == 0:
                conn.request("POST", "/login", json.dumps({"username": who, "password": "pw"}),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                token = json.loads(r.read()).get("token")
                c.add(f"login_{r.status}")
            h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            conn.request("POST", "/api/users", json.dumps({"name": "n", "email": "a@b.c"}), h)
            r = conn.getresponse()
            body = r.read()
            c.add(f"create_{r.status}")
            if r.status == 201:
                uid = json.loads(body)["id"]
                conn.request("GET", f"/api/users/{uid}", headers=h)
                r = conn.getresponse()
                r.read()
                c.add(f"get_{r.status}")
                conn.request("DELETE", f"/api/users/{uid}", headers=h)
                r = conn.getresponse()
                r.read()
                c.add(f"delete_{r.status}")
        except (OSError, http.client.HTTPException, ValueError):
            c.add("session_error")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
            token = None
        i += 1
    conn.close()


def churn(host: str, port: int, stop: threading.Event, c: Counter, rate: float) -> None:
    for i in paced(stop, rate):
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(4096)  # close without reading the rest, sometimes mid-response
            c.add("churn_ok")
        except OSError:
            c.add("churn_error")


def sse(host: str, port: int, stop: threading.Event, c: Counter, rate: float) -> None:
    for _ in paced(stop, rate):
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
                deadline = time.monotonic() + 0.3
                got = 0
                while time.monotonic() < deadline:
                    data = s.recv(4096)
                    if not data:
                        break
                    got += len(data)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.add("sse_ok" if got else "sse_empty")
        except OSError:
            c.add("sse_error")


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def ws(host: str, port: int, stop: threading.Event, c: Counter, rate: float) -> None:
    for _ in paced(stop, rate):
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall(
                    f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    data = s.recv(4096)
                    if not data:
                        break
                    head += data
                if not head.startswith(b"HTTP/1.1 101"):
                    c.add("ws_no101")
                    continue
                s.sendall(_ws_frame(0x1, b"hello"))
                s.recv(4096)
                s.sendall(_ws_frame(0x8, b"\x03\xe8"))
                try:
                    s.recv(4096)
                except OSError:
                    pass
            c.add("ws_ok")
        except OSError:
            c.add("ws_error")


def rejudge(paths: list[str], every: float = 10.0) -> None:
    """Judge recorded series again: at the end, and on every `every`-second prefix
    (as a periodic in-run check would), printing one line per series and kind."""
    for path in paths:
        samples = load_series(path)
        end = samples[-1]["t"] if samples else 0.0
        final = judge_all(samples)
        for predicate, verdict in final.items():
            prefix_fail = []
            t = 55.0
            while t <= end:
                prefix = [s for s in samples if s["t"] <= t]
                v = judge_all(prefix)[predicate]
                if v.status == "failed":
                    prefix_fail.append(round(t))
                t += every
            fits = [f for f in verdict.evidence.get("fits", []) if f["rule"] == "strong"]
            lows = {f["window"]: round(f["lower_per_min"], 1) for f in fits}
            print(json.dumps({
                "series": path, "predicate": predicate, "status": verdict.status,
                "slope_per_min": verdict.slope_per_min, "lower_per_min": lows,
                "positive_pairs": {f["window"]: f["positive_pairs"] for f in fits},
                "growth": {f["window"]: f["growth"] for f in fits},
                "weak": [
                    {k: f[k] for k in ("slope_per_min", "mk_z", "growth", "second_half_slope_per_min")}
                    for f in verdict.evidence.get("fits", []) if f["rule"] == "weak"
                ],
                "prefixes_failed": prefix_fail, "reason": verdict.reason,
            }))


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--rejudge":
        rejudge(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", required=True)
    parser.add_argument("--refapp", default="auth_session_ratelimit")
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="leak-baseline-"))
    out.mkdir(parents=True, exist_ok=True)
    target = start_target(TargetSpec(kind="refapp", refapp=args.refapp, engine=args.engine), out / "logs")
    stop = threading.Event()
    c = Counter()
    try:
        sampler = ResourceSampler(lambda: target.pid, debug_url=f"{target.base_url}/debug/vars").start()
        h, p = target.host, target.port
        jobs = [
            threading.Thread(target=keepalive_gets, args=(h, p, stop, c, 100.0)),
            threading.Thread(target=keepalive_gets, args=(h, p, stop, c, 100.0)),
            threading.Thread(target=sessions, args=(h, p, stop, c, 20.0, "leak-a")),
            threading.Thread(target=sessions, args=(h, p, stop, c, 20.0, "leak-b")),
            threading.Thread(target=churn, args=(h, p, stop, c, 40.0)),
            threading.Thread(target=sse, args=(h, p, stop, c, 3.0)),
            threading.Thread(target=ws, args=(h, p, stop, c, 10.0)),
        ]
        for j in jobs:
            j.daemon = True
            j.start()
        time.sleep(args.duration)
        stop.set()
        for j in jobs:
            j.join(10)
        time.sleep(SETTLE_S)  # let keep-alive tasks drain, as the orchestrator should
        sampler.stop()
        sampler.write_series(out / "resources.json")
        verdicts = judge_all(sampler.samples)
    finally:
        stop.set()
        target.stop()
    line = {
        "engine": args.engine,
        "duration_s": args.duration,
        "requests": sum(v for k, v in c.counts.items()),
        "counts": c.counts,
        "samples": len(sampler.samples),
        "verdicts": {
            k: {"status": v.status, "slope_per_min": v.slope_per_min, "reason": v.reason,
                "fits": [
                    {x: f[x] for x in ("window", "rule", "n", "slope_per_min", "lower_per_min",
                                       "positive_pairs", "growth", "baseline")}
                    for f in v.evidence.get("fits", [])
                ]}
            for k, v in verdicts.items()
        },
        "out": str(out),
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
