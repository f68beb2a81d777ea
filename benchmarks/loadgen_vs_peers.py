#!/usr/bin/env python3
"""Our load generator against its peers, on the same server and the same client core.

nginx serves a fixed 13-byte body on core 0 (one worker process); each generator
runs pinned to core 1, one after the other, interleaved round by round: our
loadgen (1 worker), wrk (1 thread), hey, and Locust (FastHttpUser) when installed.
For each: requests/s, client CPU seconds, requests per client CPU-second (does not
depend on the server's ceiling) and the ratio to wrk. Bar (SPEC §8): ours >= 0.85 x wrk.

    .venv/bin/python benchmarks/loadgen_vs_peers.py [--duration 10] [--connections 64] [--rounds 1]

Missing tools are reported and skipped (apt-get install -y nginx-light wrk hey;
pip install locust). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BODY = "Hello, World!"  # 13 bytes

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 120s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type text/plain; return 200 "{body}"; }}
  }}
}}
"""

LOCUSTFILE = """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

class U(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("/")
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not come up")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_child(cmd: list[str], cpu: int, timeout: float) -> tuple[str, float, float]:
    """Run cmd pinned to `cpu`; (stdout+stderr, client CPU seconds, wall seconds)."""
    before = children_cpu()
    t0 = time.monotonic()
    p = subprocess.run(["taskset", "-c", str(cpu), *cmd], capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    return p.stdout + p.stderr, children_cpu() - before, wall


def run_ours(url: str, conns: int, duration: float, warmup: float, cpu: int) -> dict:
    from probatorium.loadgen import LoadConfig, run_load

    r = run_load(LoadConfig(url=url, connections=conns, duration=duration, warmup=warmup, workers=1, cpus=[cpu]))
    errors = sum(r.errors.values())
    return {"rps": r.requests_per_sec, "cpu_s": r.client_cpu["total_cpu_s"], "errors": errors,
            "p99_ms": r.latency_us["p99"] / 1000, "note": f"util {r.client_cpu['max_util']:.0%}"}


def run_wrk(url: str, conns: int, duration: float, warmup: float, cpu: int) -> dict:
    out, cpu_s, _ = run_child(["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--latency", url], cpu, duration + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError("wrk output not understood:\n" + out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = None
    if p99:
        v = float(p99.group(1))
        p99_ms = v / 1000 if p99.group(2) == "us" else v * 1000 if p99.group(2) == "s" else v
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    n_err = (int(errs.group(1)) if errs else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": float(m.group(1)), "cpu_s": cpu_s, "errors": n_err, "p99_ms": p99_ms, "note": "whole process"}


def run_hey(url: str, conns: int, duration: float, warmup: float, cpu: int) -> dict:
    out, cpu_s, _ = run_child(["env", "GOMAXPROCS=1", "hey", "-z", f"{duration:g}s", "-c", str(conns), url],
                              cpu, duration + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError("hey output not understood:\n" + out[-2000:])
    p99 = re.search(r"99%% in ([\d.]+) secs".replace("%%", "%"), out)
    non200 = sum(int(c) for code, c in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out) if code != "200")
    return {"rps": float(m.group(1)), "cpu_s": cpu_s, "errors": non200,
            "p99_ms": float(p99.group(1)) * 1000 if p99 else None, "note": "GOMAXPROCS=1"}


def run_locust(url: str, conns: int, duration: float, warmup: float, cpu: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        lf = Path(d) / "locustfile.py"
        lf.write_text(textwrap.dedent(LOCUSTFILE))
        csv = Path(d) / "out"
        cmd = [sys.executable, "-m", "locust", "-f", str(lf), "--headless", "-u", str(conns), "-r", str(conns * 10),
               "-t", f"{duration:g}s", "-H", url.rstrip("/"), "--csv", str(csv), "--only-summary",
               "--loglevel", "ERROR"]
        out, cpu_s, wall = run_child(cmd, cpu, duration + 60)
        stats = (Path(str(csv) + "_stats.csv")).read_text().splitlines()
    header = stats[0].split(",")
    agg = next(line.split(",") for line in stats[1:] if ",Aggregated," in line)
    row = dict(zip(header, agg))
    n = int(row["Request Count"])
    fails = int(row["Failure Count"])
    p99 = row.get("99%")
    # Locust's own "Requests/s" averages over its run; use count / configured duration
    return {"rps": n / duration, "cpu_s": cpu_s, "errors": fails,
            "p99_ms": float(p99) if p99 and p99 != "N/A" else None, "note": "FastHttpUser, 1 process"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="ours only (wrk/hey have no warmup)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--generators", default="probatorium,wrk,hey,locust",
                    help="comma-separated subset of probatorium,wrk,hey,locust")
    args = ap.parse_args()
    wanted = set(args.generators.split(","))

    missing = []
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        print("MISSING: nginx (apt-get install -y nginx-light) -- cannot run without the server")
        return 2
    gens = [("probatorium", run_ours)]
    for tool, fn in (("wrk", run_wrk), ("hey", run_hey)):
        if shutil.which(tool):
            gens.append((tool, fn))
        else:
            missing.append(f"{tool} (apt-get install -y {tool})")
    # find_spec, not import: importing locust monkey-patches this process with gevent
    import importlib.util

    if importlib.util.find_spec("locust") is not None:
        gens.append(("locust", run_locust))
    else:
        missing.append("locust (pip install locust)")
    gens = [g for g in gens if g[0] in wanted]
    if missing:
        print("missing, skipped: " + "; ".join(missing))
    if not shutil.which("taskset"):
        print("MISSING: taskset (util-linux)")
        return 2

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    tmp = tempfile.mkdtemp(prefix="lg-nginx-")
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port, body=BODY))
    srv = subprocess.Popen(["taskset", "-c", str(args.server_cpu), nginx, "-c", str(conf), "-p", tmp],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        kernel = os.uname().release
        cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        print(f"nginx 1 worker on cpu {args.server_cpu}; generators on cpu {args.client_cpu}; "
              f"{args.connections} connections, {args.duration:g}s per run, {args.rounds} round(s); "
              f"kernel {kernel}; {cpu_model}")
        runs: dict[str, list[dict]] = {g: [] for g, _ in gens}
        for rnd in range(args.rounds):
            for name, fn in gens:
                try:
                    res = fn(url, args.connections, args.duration, args.warmup, args.client_cpu)
                except Exception as exc:  # report, keep going
                    print(f"  round {rnd + 1} {name}: FAILED {type(exc).__name__}: {str(exc)[:300]}")
                    continue
                res["round"] = rnd
                runs[name].append(res)
                print(f"  round {rnd + 1} {name:12s} {res['rps']:>10,.0f} req/s  cpu {res['cpu_s']:.2f}s  "
                      f"errors {res['errors']}")
                time.sleep(0.5)
    finally:
        srv.terminate()
        try:
            srv.wait(5)
        except subprocess.TimeoutExpired:
            srv.kill()

    def med(name: str, key: str) -> float | None:
        vals = [r[key] for r in runs.get(name, []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    wrk_rps = med("wrk", "rps")
    wrk_eff = None
    if runs.get("wrk"):
        wrk_eff = statistics.median(r["rps"] * args.duration / r["cpu_s"] for r in runs["wrk"] if r["cpu_s"] > 0)
    print()
    hdr = f"| generator | requests/s | client CPU s | requests per client CPU-s | ratio to wrk (req/s) | ratio to wrk (req/CPU-s) | p99 ms | errors | note |"
    print(hdr)
    print("|" + "---|" * 9)
    verdict = None
    for name, _ in gens:
        if not runs[name]:
            print(f"| {name} | failed | | | | | | | |")
            continue
        rps = med(name, "rps")
        cpu = med(name, "cpu_s")
        eff = statistics.median(r["rps"] * args.duration / r["cpu_s"] for r in runs[name] if r["cpu_s"] > 0)
        p99 = med(name, "p99_ms")
        errs = sum(r["errors"] for r in runs[name])
        ratio = f"{rps / wrk_rps:.2f}" if wrk_rps else "n/a"
        ratio_eff = f"{eff / wrk_eff:.2f}" if wrk_eff else "n/a"
        print(f"| {name} | {rps:,.0f} | {cpu:.2f} | {eff:,.0f} | {ratio} | {ratio_eff} | "
              f"{p99:.2f} | {errs} | {runs[name][0]['note']} |" if p99 is not None else
              f"| {name} | {rps:,.0f} | {cpu:.2f} | {eff:,.0f} | {ratio} | {ratio_eff} | - | {errs} | {runs[name][0]['note']} |")
        if name == "probatorium" and wrk_rps:
            verdict = rps / wrk_rps
    wrk_by_round = {r["round"]: r for r in runs.get("wrk", [])}
    paired = [o["rps"] / wrk_by_round[o["round"]]["rps"] for o in runs.get("probatorium", [])
              if o["round"] in wrk_by_round and wrk_by_round[o["round"]]["rps"]]
    if paired:
        print()
        print("per-round ratio probatorium/wrk (req/s): " + ", ".join(f"{x:.2f}" for x in paired)
              + f"; median {statistics.median(paired):.2f}")
    print()
    if verdict is None:
        print("bar: not checked (wrk missing or failed)")
        return 0
    ok = verdict >= 0.85
    print(f"bar: probatorium requests/s = {verdict:.2f} x wrk (needs >= 0.85): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
