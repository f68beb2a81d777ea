#!/usr/bin/env python3
"""Reproducer: asyncio tasks left behind by h2c upgrades the client resets after the 101.

Found by `probatorium validate --matrix --refapps auth_session_ratelimit --duration 50m
--concurrency 24` (I-TASK-1 and I-MEM-1 on hypercorn 0.18.0; docs/leaks.md). Stdlib only.

    python scripts/repro_h2c_task_leak.py HOST:PORT [-n 200] [--stage after101|partial|before101]

The target must serve the SPEC.md §3 debug endpoint (GET /debug/vars with an integer
``tasks``), as every refapp does. Sends N valid h2c upgrade requests (RFC 7540 §3.2), each
on its own connection; after101 reads the 101 and resets the connection (RST via
SO_LINGER 0), partial also sends half of the HTTP/2 connection preface first, before101
resets without reading. Waits --settle seconds (default 20) with no traffic, then prints
the task count before and after and REPRODUCED (exit 1) when at least N/2 tasks stayed,
else NOT REPRODUCED (exit 0).
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import struct
import sys
import time
import urllib.request


def debug_tasks(host: str, port: int) -> int:
    with urllib.request.urlopen(f"http://{host}:{port}/debug/vars", timeout=5) as resp:
        return int(json.load(resp)["tasks"])


def one_upgrade(host: str, port: int, stage: str) -> None:
    settings = base64.urlsafe_b64encode(struct.pack("!HI", 3, 100)).rstrip(b"=")  # MAX_CONCURRENT_STREAMS=100
    request = (f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               "Upgrade: h2c\r\n").encode() + b"HTTP2-Settings: " + settings + b"\r\n\r\n"
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(request)
        if stage in ("after101", "partial"):
            try:
                sock.recv(65536)
            except OSError:
                pass
        if stage == "partial":
            sock.sendall(b"PRI * HTTP/2.0\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("addr", help="HOST:PORT of the target")
    ap.add_argument("-n", type=int, default=200, help="upgrades to send (default 200)")
    ap.add_argument("--stage", choices=("after101", "partial", "before101"), default="after101")
    ap.add_argument("--settle", type=float, default=20.0, help="idle seconds before counting again")
    args = ap.parse_args()
    host, _, port_text = args.addr.rpartition(":")
    host, port = host or "127.0.0.1", int(port_text)
    try:
        before = debug_tasks(host, port)
        for _ in range(args.n):
            one_upgrade(host, port, args.stage)
        time.sleep(args.settle)
        after = debug_tasks(host, port)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.n} h2c upgrades reset at stage {args.stage}: tasks {before} before, {after} after "
          f"{args.settle:.0f} s idle")
    if after - before >= args.n // 2:
        print("REPRODUCED")
        return 1
    print("NOT REPRODUCED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
