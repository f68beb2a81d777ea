"""Hostile HTTP 'servers' for robustness tests: probatorium must never crash or wedge on them.

python hostile.py --port N --mode garbage|flood|silent|crash|slam
  garbage  answers every request with random non-HTTP bytes
  flood    answers with an endless stream of bytes
  silent   accepts and reads, never answers
  crash    exits the process on the first request
  slam     closes every connection at once
"""

import argparse
import os
import random
import socket
import threading


def handle(conn: socket.socket, mode: str) -> None:
    try:
        conn.settimeout(30)
        data = conn.recv(65536)
        if mode == "garbage":
            rnd = random.Random(len(data))
            while data:
                conn.sendall(bytes(rnd.getrandbits(8) for _ in range(200)) + b"\r\n\r\n")
                data = conn.recv(65536)
        elif mode == "flood":
            chunk = b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 60000 + b"\r\n"
            while True:
                conn.sendall(chunk)
        elif mode == "silent":
            while conn.recv(65536):
                pass
        elif mode == "crash":
            os._exit(3)
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", required=True, choices=["garbage", "flood", "silent", "crash", "slam"])
    args = ap.parse_args()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(512)
    print(f"ready addr=127.0.0.1:{srv.getsockname()[1]}", flush=True)
    while True:
        conn, _ = srv.accept()
        if args.mode == "slam":
            conn.close()
            continue
        threading.Thread(target=handle, args=(conn, args.mode), daemon=True).start()


if __name__ == "__main__":
    main()
