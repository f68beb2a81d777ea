#!/usr/bin/env python3
"""Tier 2 (`probatorium fuzz`) beside Schemathesis on the planted REST server.

For the correct server and each planted bug of tests/servers/restserver.py,
each tool runs against a fresh server for the same budget: the server pinned to
core 0, the tool to core 1 (taskset). Recorded per run:

- caught?  Tier 2: an incident of the bug's predicate. Schemathesis: a failure
  whose code and operation match the bug (RULES below; the raw failure codes
  are printed beside it, and those not seen on the correct server);
- false alarms on the correct server: Tier 2 HIGH (MED) incidents;
  Schemathesis unique failures (its JSON report's `failures` counts);
- requests/s counted at the server (--count-file): API requests answered over
  the time from the first to the last, the same for both tools.

Logins: Tier 2 logs its two users in itself (POST /login, the spec's `login`
operation, four walkers × two users). Schemathesis gets the same two-user
login through a Web Fuzzing Commons auth file (POST /login with
username/password, the body's /token sent as `Authorization: Bearer …`) and
both users as `peers` (that enables its object_level_authorization check).

    .venv/bin/python benchmarks/fuzz_vs_schemathesis.py [--duration 60s] [--bugs a,b] [--seed 1] [--out DIR]

Schemathesis is called as `schemathesis run SPEC --checks all --max-time N`
with all phases (examples, coverage, fuzzing, stateful). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESTSERVER = REPO / "tests" / "servers" / "restserver.py"
SPEC = RESTSERVER.with_name("restserver.openapi.yaml")
CORRECT = "correct"
SERVER_CORE, TOOL_CORE = 0, 1
ITEM_OPS = ("GET /items", "POST /items", "GET /items/{itemId}", "PUT /items/{itemId}")  # answer an Item


@dataclass(frozen=True)
class Rule:
    """How a planted bug counts as caught by each tool."""

    predicate: str  # Tier 2: an incident of this predicate
    codes: tuple[str, ...] = ()  # Schemathesis: a failure with one of these codes …
    operations: tuple[str, ...] = ()  # … on one of these operations (empty codes: no check states the property)
    why: str = ""


RULES: dict[str, Rule] = {
    "use-after-delete": Rule("I-API-UAF", ("ST301",), ("GET /items/{itemId}", "PUT /items/{itemId}",
                                                       "DELETE /items/{itemId}", "Stateful tests"),
                             "use_after_free: resource still served after DELETE"),
    "authz-read": Rule("I-API-AUTHZ", ("ST402",), ("GET /items/{itemId}",),
                       "object_level_authorization: one user's object returned to another"),
    "long-field-5xx": Rule("I-API-5XX", ("ST101",), ("POST /items", "PUT /items/{itemId}"),
                           "not_a_server_error on an operation whose body has `name`"),
    "leak-on-reject": Rule("I-API-LEAK", (), (), "no check states 'a rejected request changes nothing'"),
    "wrong-type": Rule("I-API-SCHEMA", ("ST108",), ITEM_OPS,
                       "response_schema_conformance on an operation answering an Item"),
    "wrong-parent": Rule("I-API-HIERARCHY", (), (), "no check states 'a child is found only under its parent'"),
    "malformed-id-5xx": Rule("I-API-OBJ", ("ST101",), ("GET /items/{itemId}", "PUT /items/{itemId}",
                                                       "DELETE /items/{itemId}", "GET /items/{itemId}/notes",
                                                       "POST /items/{itemId}/notes",
                                                       "GET /items/{itemId}/notes/{noteId}",
                                                       "DELETE /items/{itemId}/notes/{noteId}"),
                             "not_a_server_error on an operation with an id in its path"),
    "lax-validation": Rule("I-API-LAX", ("ST201",), ("POST /login", "POST /items", "PUT /items/{itemId}",
                                                     "POST /items/{itemId}/notes"),
                           "negative_data_rejection on an operation with a request body"),
}
NAMED = ["use-after-delete", "authz-read", "long-field-5xx", "leak-on-reject", "wrong-type"]  # the 5


# ---- pure parts: parse and judge ---------------------------------------------------------------------------

def parse_duration(text: str) -> int:
    """'60s', '2m' or '60' → seconds (ValueError on anything else)."""
    m = re.fullmatch(r"\s*(\d+)\s*([sm]?)\s*", text)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"--duration: {text!r} is not a positive number of seconds (60s, 2m)")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def parse_counts(text: str) -> tuple[int, float]:
    """The restserver's --count-file lines → (API requests, seconds from the first to the last request)."""
    n, first, last = 0, None, None
    for line in text.splitlines():
        kv = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "requests" not in kv:
            continue
        n += int(kv["requests"])
        if int(kv["requests"]):
            t0, t1 = float(kv["first"]), float(kv["last"])
            first = t0 if first is None else min(first, t0)
            last = t1 if last is None else max(last, t1)
    return n, (last - first) if first is not None else 0.0


def st_failures(report: dict) -> list[tuple[str, str]]:
    """Schemathesis JSON report → [(code, operation)], one per failure kind and operation."""
    return [(f["code"], op) for f in report.get("failures", []) for op in f.get("operations", [])]


def st_caught(bug: str, failures: list[tuple[str, str]]) -> bool:
    """Whether a Schemathesis failure matches the bug's rule (code and operation)."""
    rule = RULES[bug]
    return any(code in rule.codes and op in rule.operations for code, op in failures)


def st_codes(failures: list[tuple[str, str]]) -> str:
    """'ST101×2 ST402': each failure code with the number of operations it was reported on."""
    counts: dict[str, int] = {}
    for code, _ in failures:
        counts[code] = counts.get(code, 0) + 1
    return " ".join(c if n == 1 else f"{c}×{n}" for c, n in sorted(counts.items())) or "-"


def st_new(failures: list[tuple[str, str]], baseline: list[tuple[str, str]]) -> str:
    """The (code, operation) failures not reported on the correct server."""
    new = sorted(set(failures) - set(baseline))
    return "; ".join(f"{c} {op}" for c, op in new) or "-"


def t2_predicates(incidents: list[dict], severities: tuple[str, ...] = ("HIGH", "MED")) -> list[str]:
    """The distinct predicates of a run's incidents of the given severities."""
    return sorted({i["predicate"] for i in incidents if i.get("severity") in severities})


def t2_caught(bug: str, incidents: list[dict]) -> bool:
    """Whether Tier 2 recorded an incident of the bug's predicate."""
    return any(i["predicate"] == RULES[bug].predicate for i in incidents)


# ---- running ------------------------------------------------------------------------------------------------

@dataclass
class Result:
    caught: bool | None = None
    findings: str = "-"
    new: str = "-"
    alarms: str = "-"
    requests: int = 0
    seconds: float = 0.0
    own_requests: int | None = None  # the tool's own count (Tier 2 tally), for comparison
    error: str = ""
    raw: list = field(default_factory=list)

    @property
    def rps(self) -> str:
        return f"{self.requests / self.seconds:.0f}" if self.seconds > 0 else "n/a"


def server_argv(bug: str, port: str, count_file: Path) -> list[str]:
    argv = ["taskset", "-c", str(SERVER_CORE), sys.executable, str(RESTSERVER), "--port", port,
            "--count-file", str(count_file)]
    return argv + (["--bug", bug] if bug != CORRECT else [])


def run_tier2(bug: str, seconds: int, seed: int, work: Path) -> Result:
    """`probatorium fuzz` on core 1; it starts the server (on core 0) itself."""
    count_file, out = work / "count.txt", work / "run"
    cmd = " ".join(server_argv(bug, "{port}", count_file))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = ["taskset", "-c", str(TOOL_CORE), sys.executable, "-c", "from probatorium.cli import main; main()",
            "fuzz", "--cmd", cmd, "--spec", str(SPEC), "--duration", f"{seconds}s", "--seed", str(seed),
            "--out", str(out)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 240, env=env)
    except subprocess.TimeoutExpired:
        return Result(error="probatorium fuzz timed out")
    (work / "fuzz.log").write_text(p.stdout + p.stderr)
    doc_path = out / "validate-results.json"
    if not doc_path.is_file():
        return Result(error=f"probatorium fuzz exit {p.returncode}, no results: {p.stderr.strip()[-200:]}")
    doc = json.loads(doc_path.read_text())
    incidents = doc.get("incidents", [])
    n, span = parse_counts(count_file.read_text()) if count_file.is_file() else (0, 0.0)
    high, med = t2_predicates(incidents, ("HIGH",)), t2_predicates(incidents, ("MED",))
    t2 = doc["validation_results"]["cells"][0].get("tier_2", {})
    return Result(caught=None if bug == CORRECT else t2_caught(bug, incidents),
                  findings=" ".join(t2_predicates(incidents)) or "-",
                  alarms=f"{len(high)} HIGH, {len(med)} MED", requests=n, seconds=span,
                  own_requests=t2.get("requests"), raw=incidents)


def start_server(bug: str, count_file: Path) -> tuple[subprocess.Popen, str]:
    """The restserver on core 0 at a free port; (process, 'host:port') once it printed ready."""
    proc = subprocess.Popen(server_argv(bug, "0", count_file), stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready addr="):
        stop(proc)
        raise RuntimeError(f"restserver did not come up: {line.strip()!r}")
    return proc, line.split("=", 1)[1].strip()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM by PID (the server then writes its count), SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wfc_auth(path: Path) -> None:
    """Two users logged in through POST /login, the token sent as a bearer: what Tier 2's walkers do."""
    def user(name: str) -> dict:
        return {"name": name, "loginEndpointAuth": {
            "verb": "POST", "endpoint": "/login", "contentType": "application/json",
            "payloadUserPwd": {"username": name, "password": f"pw-{name}",
                               "usernameField": "username", "passwordField": "password"},
            "token": {"extractFrom": "body", "extractSelector": "/token", "sendIn": "header",
                      "sendName": "Authorization", "sendTemplate": "Bearer {token}"}}}
    path.write_text(json.dumps({"auth": [user("alice"), user("bob")]}, indent=1))


def schemathesis_bin() -> str:
    found = Path(sys.executable).with_name("schemathesis")
    return str(found) if found.exists() else (shutil.which("schemathesis") or "")


def run_schemathesis(bug: str, seconds: int, seed: int, work: Path) -> Result:
    """`schemathesis run --checks all --max-time N` on core 1 against a fresh server on core 0."""
    count_file, report = work / "count.txt", work / "report.json"
    wfc_auth(work / "auth.json")
    (work / "schemathesis.toml").write_text(
        f'[auth.wfc]\npath = "{work / "auth.json"}"\npeers = ["alice", "bob"]\n')
    proc, addr = start_server(bug, count_file)
    try:
        argv = ["taskset", "-c", str(TOOL_CORE), schemathesis_bin(), "--config-file", str(work / "schemathesis.toml"),
                "run", str(SPEC), "--url", f"http://{addr}", "--checks", "all", "--max-time", str(seconds),
                "--seed", str(seed), "--report", "json", "--report-json-path", str(report), "--no-color"]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 240, cwd=work)
        except subprocess.TimeoutExpired:
            return Result(error="schemathesis timed out")
    finally:
        stop(proc)
    (work / "schemathesis.log").write_text(p.stdout + p.stderr)
    if not report.is_file():
        return Result(error=f"schemathesis exit {p.returncode}, no report: {(p.stdout + p.stderr).strip()[-200:]}")
    failures = st_failures(json.loads(report.read_text()))
    n, span = parse_counts(count_file.read_text()) if count_file.is_file() else (0, 0.0)
    total = sum(f.get("count", 0) for f in json.loads(report.read_text()).get("failures", []))
    return Result(caught=None if bug == CORRECT else st_caught(bug, failures), findings=st_codes(failures),
                  alarms=f"{total} failures", requests=n, seconds=span, raw=failures)


# ---- table --------------------------------------------------------------------------------------------------

def yes_no(r: Result, what: str) -> str:
    if r.error:
        return "ERROR"
    return "-" if r.caught is None else (f"yes ({what})" if r.caught else "no")


def table(results: dict[str, tuple[Result, Result]]) -> str:
    """One markdown table: per server, each tool's verdict, raw findings and requests/s."""
    head = ["server", "Tier 2 caught", "Tier 2 findings", "Tier 2 req/s", "Schemathesis caught",
            "Schemathesis failures", "new vs correct", "Schemathesis req/s"]
    rows = [head, ["---"] * len(head)]
    base = results.get(CORRECT, (Result(), Result()))[1].raw
    for bug, (t2, st) in results.items():
        rule = RULES.get(bug)
        t2_cell = f"{t2.alarms}: {t2.findings}" if bug == CORRECT else t2.findings
        st_cell = f"{st.alarms}: {st.findings}" if bug == CORRECT else st.findings
        rows.append([bug, yes_no(t2, rule.predicate if rule else ""), t2.error or t2_cell, t2.rps,
                     yes_no(st, "/".join(rule.codes) if rule else ""), st.error or st_cell,
                     "-" if bug == CORRECT else st_new(st.raw, base), st.rps])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", default="60s", help="budget per tool and server (default 60s)")
    p.add_argument("--bugs", default="all", help="comma-separated planted bugs, 'named' (the issue's five) "
                                                 "or 'all' (default); the correct server always runs")
    p.add_argument("--seed", type=int, default=1, help="seed given to both tools (default 1)")
    p.add_argument("--out", type=Path, help="folder for raw outputs (default: a new temporary folder)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        seconds = parse_duration(args.duration)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = list(RULES) if args.bugs == "all" else NAMED if args.bugs == "named" else \
        [b.strip() for b in args.bugs.split(",") if b.strip()]
    unknown = [b for b in names if b not in RULES]
    if unknown:
        print(f"error: unknown bug(s) {', '.join(unknown)}; known: {', '.join(RULES)}", file=sys.stderr)
        return 2
    for tool in ("taskset",):
        if not shutil.which(tool):
            print(f"error: {tool} not found", file=sys.stderr)
            return 2
    if not schemathesis_bin():
        print("error: schemathesis is not installed beside this python (pip install schemathesis)", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="fuzz-vs-st-"))
    print(f"raw outputs: {out}; {len(names) + 1} servers x 2 tools x {seconds}s", file=sys.stderr)
    results: dict[str, tuple[Result, Result]] = {}
    for bug in [CORRECT, *names]:
        pair = []
        for tool, run in (("tier2", run_tier2), ("schemathesis", run_schemathesis)):
            work = out / bug / tool
            work.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            try:
                r = run(bug, seconds, args.seed, work)
            except (OSError, RuntimeError) as e:
                r = Result(error=str(e))
            pair.append(r)
            print(f"{bug:18} {tool:12} {time.monotonic() - t0:5.0f}s caught={r.caught} {r.error or r.findings}"
                  f" ({r.requests} requests at the server in {r.seconds:.1f}s"
                  + (f", {r.own_requests} in the tier 2 tally)" if r.own_requests is not None else ")"),
                  file=sys.stderr)
        results[bug] = (pair[0], pair[1])
    st_version = subprocess.run([schemathesis_bin(), "--version"], capture_output=True, text=True,
                                timeout=30).stdout.strip()
    print(f"\n{len(names)} planted bugs + correct server, {seconds}s per tool and server, seed {args.seed}, "
          f"{st_version}; server on core {SERVER_CORE}, tool on core {TOOL_CORE}\n")
    print(table(results))
    (out / "summary.json").write_text(json.dumps(
        {bug: {tool: {"caught": r.caught, "findings": r.findings, "alarms": r.alarms, "requests": r.requests,
                      "seconds": r.seconds, "own_requests": r.own_requests, "error": r.error}
               for tool, r in zip(("tier2", "schemathesis"), pair)} for bug, pair in results.items()}, indent=1))
    caught = {t: sum(bool(results[b][i].caught) for b in names) for i, t in enumerate(("Tier 2", "Schemathesis"))}
    print("\nbugs caught: " + ", ".join(f"{t} {n}/{len(names)}" for t, n in caught.items()))
    return 1 if any(r.error for pair in results.values() for r in pair) else 0


if __name__ == "__main__":
    sys.exit(main())
