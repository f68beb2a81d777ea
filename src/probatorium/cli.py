"""The `probatorium` command: parse, call, print. No logic lives here.

Every env knob of the original README is honoured as the default of the
matching flag (VALIDATE_DURATION, VALIDATE_MATRIX, VALIDATE_MATRIX_REFAPPS,
VALIDATE_MATRIX_ENGINES, VALIDATE_REFAPP_ENGINE, VALIDATE_DIFF_STRICT,
VALIDATE_DIFF_HOSTS, ...). Errors become one line on stderr and exit 2.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .config import default_map, find_config
from .errors import ProbatoriumError, UsageError, error_line, warning_line
from .jsonsummary import print_json
from .progress import Progress, make_progress, reporter_of
from .seeds import parse_seed, random_seed
from .validate.tier1.registry import slice_names

EXAMPLES = """Examples:

  probatorium validate      (60 s on the default refapp)

  probatorium validate --cmd "python3 server.py --port {port}" -d 30s

  probatorium validate --url http://127.0.0.1:8000 --slices adversarial

  probatorium fuzz --url http://127.0.0.1:8000 --spec openapi.yaml

  probatorium bench --list

  probatorium loadgen http://127.0.0.1:8000/ -c 64 -d 10s

Contracts a target can offer, results and exit statuses: docs/contracts.md.
Flags a team repeats can live in probatorium.toml (see README)."""

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark and production-readiness validation for HTTP servers.", epilog=EXAMPLES)
# Pipes and CI logs get a wide table instead of rich's 80-column default.
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

SLICE_NAMES = slice_names()
JSON_HELP = "Print a summary object as JSON on stdout instead of the text (docs/json.md)."
QUIET_HELP = "No progress status line, heartbeats or ETA on stderr (env PROBATORIUM_PROGRESS=0)."


def parse_duration(text: str) -> float:
    """'90', '30s', '10m', '1h', '1h30m' → seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", t)
    if not parts or "".join(n + u for n, u in parts) != t:
        raise UsageError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h")
    mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = sum(float(n) * mult[u] for n, u in parts)
    if total <= 0:
        raise UsageError(f"duration must be positive, got {text!r}")
    return total


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _csv(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def default_concurrency(duration_s: float) -> int:
    """Short runs stay small, long runs go wider (PR tier passes 24)."""
    if duration_s <= 120:
        return 8
    if duration_s <= 1800:
        return 24
    return 48


def _warn(lines: list[str]) -> None:
    for line in lines:
        err.print(warning_line(line), markup=False, soft_wrap=True)


def _fail(e: Exception, code: int = 2) -> None:
    err.print(error_line(e), markup=False, soft_wrap=True)
    raise typer.Exit(code)


VALIDATE_EXAMPLES = """Examples:

  probatorium validate -d 30s --refapp kitchen_sink --engine hypercorn

  probatorium validate --cmd "./srv --port {port}" --slices adversarial

  probatorium validate --url http://127.0.0.1:8000 --spec api.yaml

  probatorium validate --matrix --engines uvicorn,granian

Exit 1: release gate failed; 2: usage/infrastructure error; 0 otherwise.
See docs/contracts.md."""


@app.command(epilog=VALIDATE_EXAMPLES)
def validate(
    ctx: typer.Context,
    duration: str = typer.Option(os.environ.get("VALIDATE_DURATION", "60s"), "--duration", "-d",
                                 help="Total budget (30s, 10m, 1h); a matrix splits it over the cells. Env VALIDATE_DURATION."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c",
                                              help="Walkers C shared by the slices. Env VALIDATE_CONCURRENCY; default follows the duration."),
    seed: Optional[str] = typer.Option(os.environ.get("VALIDATE_SEED"), "--seed", help="Run seed (decimal or 0x hex); random if omitted, always recorded."),
    slices: Optional[str] = typer.Option(None, "--slices", help=f"Only these Tier 1 slices: {','.join(SLICE_NAMES)} (implies --tiers 1)."),
    tiers: Optional[str] = typer.Option(None, "--tiers", help="Only these tiers (1,2,3); default: every tier that applies."),
    matrix: bool = typer.Option(_env_bool("VALIDATE_MATRIX"), "--matrix/--no-matrix", help="Every refapp × engine cell. Env VALIDATE_MATRIX=1."),
    refapps: Optional[str] = typer.Option(os.environ.get("VALIDATE_MATRIX_REFAPPS"), "--refapps", help="Matrix refapps (csv). Env VALIDATE_MATRIX_REFAPPS."),
    engines: Optional[str] = typer.Option(os.environ.get("VALIDATE_MATRIX_ENGINES"), "--engines", help="Matrix engines (csv). Env VALIDATE_MATRIX_ENGINES."),
    cells: Optional[str] = typer.Option(os.environ.get("VALIDATE_MATRIX_CELLS"), "--cells", help="Matrix cells REFAPP:ENGINE (csv) instead of refapps × engines; implies --matrix. Env VALIDATE_MATRIX_CELLS."),
    refapp: Optional[str] = typer.Option(None, "--refapp", help="Reference app slug (default auth_session_ratelimit)."),
    app_target: Optional[str] = typer.Option(None, "--app", help="Any ASGI app MODULE:ATTR served by --engine."),
    app_dir: Optional[str] = typer.Option(None, "--app-dir", help="Where --app is imported from (like uvicorn's)."),
    cmd: Optional[str] = typer.Option(None, "--cmd", help="Any HTTP server command; {port} is substituted, or it prints 'ready addr=HOST:PORT'."),
    url: Optional[str] = typer.Option(None, "--url", help="A server that is already running."),
    engine: str = typer.Option(os.environ.get("VALIDATE_REFAPP_ENGINE", "auto"), "--engine", help="uvicorn, uvicorn-h11, hypercorn, granian, daphne, uvicorn-wsproto, auto. Env VALIDATE_REFAPP_ENGINE."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="OpenAPI file for a target that is not a refapp."),
    markov: Optional[Path] = typer.Option(None, "--markov", help="Markov session model for a target that is not a refapp."),
    label: Optional[str] = typer.Option(None, "--label", help="Cell name for --app/--cmd/--url targets."),
    echo_path: str = typer.Option("/echo", "--echo-path", help="Echo route (contract: docs/contracts.md)."),
    health_path: str = typer.Option("/healthz", "--health-path", help="Health path the watchdog polls."),
    debug_path: str = typer.Option("/debug/vars", "--debug-path", help="Debug endpoint (contract: docs/contracts.md)."),
    ws_path: str = typer.Option("/ws", "--ws-path", help="WebSocket echo path for the ws slice."),
    sse_path: str = typer.Option("/events", "--sse-path", help="SSE path for the sse slice."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a target outside loopback."),
    services_opt: Optional[str] = typer.Option(None, "--services", help="Start these backing services (postgres,redis,memcached) and pass their addresses to the target."),
    ready_timeout: float = typer.Option(30.0, "--ready-timeout", help="Seconds a started target has to accept connections."),
    quiet_timeout: float = typer.Option(3.0, "--quiet-timeout", help="Seconds of silence after which a probe counts as hanging."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default results/<ts>-validate-…)."),
    results_dir: Path = typer.Option(Path(os.environ.get("PROBATORIUM_RESULTS", "results")), "--results-dir", help="Root of result folders."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier run's results in --out."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Tier 3: the first N corpus seeds, or 0xA,0xB; default: as many as fit."),
    faults: Optional[str] = typer.Option(None, "--faults", help="Tier 3: only these fault kinds (default: every kind that applies)."),
    durable: bool = typer.Option(False, "--durable", help="Tier 3: the target keeps acknowledged writes across its own SIGKILL."),
    recovery_deadline: float = typer.Option(10.0, "--recovery-deadline", help="Tier 3: seconds a target has to recover after a fault."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Accepted findings (YAML, docs/gate.md): they are recorded, marked accepted, and do not fail the gate."),
    baseline_update: bool = typer.Option(False, "--baseline-update", help="Create or extend --baseline FILE with every HIGH/MED finding it does not cover."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write JUnit XML here (a testsuite per cell, a testcase per property)."),
    sarif: Optional[Path] = typer.Option(None, "--sarif", help="Also write SARIF 2.1.0 here (a result per incident)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    slowloris_connections: int = typer.Option(200, "--slowloris-connections", help="Adversarial slow-client phase: connections held at once (0: off; needs cells of 67 s)."),
    driver: str = typer.Option(os.environ.get("PROBATORIUM_VALIDATE_DRIVER") or "local", "--driver",
                               help="local (this machine), netns (a client and two server namespaces made here), ansible (the --inventory hosts). Env PROBATORIUM_VALIDATE_DRIVER. docs/cluster.md."),
    inventory: Optional[Path] = typer.Option(os.environ.get("PROBATORIUM_INVENTORY"), "--inventory", help="--driver ansible: an ansible inventory with groups client and server. Env PROBATORIUM_INVENTORY."),
    target_host: Optional[str] = typer.Option(os.environ.get("VALIDATE_TARGET"), "--target-host", help="Multi-host drivers: the server hosts to validate on (csv, or all). Env VALIDATE_TARGET."),
    parallel: bool = typer.Option(_env_bool("VALIDATE_PARALLEL"), "--parallel/--no-parallel", help="Multi-host drivers: run the server hosts at the same time. Env VALIDATE_PARALLEL=1."),
) -> None:
    """Run the validation tier on one target, or on the refapp × engine matrix."""
    from .results.store import lock_run_folder
    from .validate.plan import (TargetArgs, ValidateOptions, check_services, choose_run_dir, parse_cells,
                                plan_cells, plan_warnings)
    from .validate.schedule import allocate_walkers
    from .validate.tiers import parse_tiers

    try:
        duration_s = parse_duration(duration)
        conc = _concurrency(concurrency, duration_s)
        chosen = _csv(slices) or None
        allocate_walkers(conc, chosen)  # an unknown slice is one line naming the registered ones
        if slowloris_connections < 0:
            raise UsageError("--slowloris-connections must be 0 (off) or a positive number of connections")
        if echo_path[:1] != "/":
            raise UsageError("--echo-path and --health-path must start with '/'")
        pairs = parse_cells(cells)
        if pairs and (refapps or engines):
            raise UsageError("--cells names the matrix's cells: give it without --refapps/--engines")
        matrix = matrix or bool(pairs)
        args = TargetArgs(refapp=refapp, app=app_target, app_dir=app_dir, cmd=cmd, url=url, engine=engine,
                          matrix=matrix, refapps=_csv(refapps), engines=_csv(engines), cells=pairs,
                          spec=spec, markov=markov,
                          label=label, health_path=health_path, allow_remote=allow_remote,
                          ready_timeout=ready_timeout)
        plans = plan_cells(args, chosen)
        _warn(plan_warnings(plans, chosen))
        opts = ValidateOptions(duration_s=duration_s, concurrency=conc,
                               seed=random_seed() if seed in (None, "") else parse_seed(seed),
                               slices=chosen, tiers=parse_tiers(tiers, bool(chosen)), echo_path=echo_path,
                               health_path=health_path, debug_path=debug_path, quiet_timeout=quiet_timeout,
                               services=check_services(_csv(services_opt)), ws_path=ws_path, sse_path=sse_path,
                               progress=make_progress("validate", quiet),
                               tier_options={3: _tier3_options(args, seeds, faults, durable, recovery_deadline, services_opt)},
                               slowloris_connections=slowloris_connections)
        ci = _ci_options(baseline, baseline_update, junit, sarif)
        from .hosts.cluster import check_driver
        driver = check_driver(driver)
        if driver != "local":
            _validate_on_hosts(ctx, driver, plans, matrix, opts.seed, inventory, target_host, parallel, out,
                               results_dir, json_out)
            return
        run_dir = choose_run_dir(out, results_dir, plans, matrix)
        run_lock = lock_run_folder(run_dir, force=force)  # held until the process ends
    except (ProbatoriumError, ValueError) as e:
        _fail(e)
        return
    with run_lock:
        _run_validation(plans, opts, run_dir, matrix, ci, json_out)


#: validate's flags the controller of a multi-host run keeps to itself (each host's run gets its own --out).
_CLUSTER_FLAGS = ("driver", "inventory", "target_host", "parallel", "out", "json_out", "seed", "results_dir")


def _forwarded_flags(ctx: typer.Context, drop: tuple[str, ...] = _CLUSTER_FLAGS) -> list[str]:
    """validate's flags as given on the command line (not from env or defaults), to pass to each host's run."""
    argv: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        if name in drop or not getattr(param, "opts", None) or getattr(source, "name", "") != "COMMANDLINE":
            continue
        value = ctx.params[name]
        if param.is_flag:
            flag = param.opts[0] if value else (param.secondary_opts[:1] or [None])[0]
            argv += [flag] if flag else []
        elif value is not None:
            argv += [param.opts[0], str(value)]
    return argv


def _validate_on_hosts(ctx: typer.Context, driver: str, plans, matrix: bool, seed: int, inventory: Path | None, target_host: str | None,
                       parallel: bool, out: Path | None, results_dir: Path, json_out: bool) -> None:
    """--driver netns|ansible: the run once per server host (docs/cluster.md); exits with the worst host's status."""
    from .hosts.cluster import HostRequest, exit_code, pick_hosts, run_netns

    if any(p.spec.kind not in ("refapp", "app") for p in plans):
        raise UsageError(f"--driver {driver} starts the target on each server host: give --refapp/--app/--matrix, "
                         "not --url/--cmd (those name a server that runs somewhere already: use --driver local)")
    needing = sorted({s for p in plans for s in p.services})
    if needing:
        raise UsageError(f"--driver {driver} cannot give targets backing services yet ({', '.join(needing)}): "
                         "choose refapps without services, or --driver local")
    request = HostRequest(driver=driver, forwarded=[*_forwarded_flags(ctx), "--seed", f"{seed:#x}"],
                          hosts=pick_hosts(target_host) if driver == "netns" else tuple(_csv(target_host)),
                          parallel=parallel, matrix=matrix, results_dir=results_dir, out=out, json_out=json_out)
    if driver == "ansible":
        from .hosts.ansible_driver import run_ansible

        if any(p.spec.kind != "refapp" for p in plans):
            raise UsageError("--driver ansible deploys refapps to the hosts: give --refapp/--matrix/--cells, not --app")
        runs = run_ansible(request, inventory, cells=[(p.spec.refapp or "", p.spec.cell_engine()) for p in plans],
                           budget_s=parse_duration(ctx.params["duration"]))
    else:
        runs = run_netns(request)
    code = exit_code(runs)
    if json_out:
        print_json("validate", code, {"driver": driver, "seed": f"{seed:#x}", "hosts": {
            r.host: {"exit_code": r.exit_code, "document": str(r.document), "summary": r.summary,
                     "error": r.error or None} for r in runs}})
    else:
        for r in runs:
            state = "missing" if not r.document.is_file() else str(r.document)
            console.print(f"{r.host}: exit {r.exit_code} — {state}" + (f" ({r.error})" if r.error else ""),
                          markup=False, soft_wrap=True)
        if len(runs) > 1:
            console.print("compare the hosts: probatorium validate-diff "
                          + " ".join(str(r.document) for r in runs), markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _tier3_options(args, seeds: str | None, faults: str | None, durable: bool, recovery_deadline: float,
                   services: str | None):
    """Tier3Options from the flags, with the replay command a Tier 3 dossier names."""
    import shlex

    from .validate.tier3.corpus import parse_seeds
    from .validate.tier3.session import Tier3Options, parse_faults

    parse_seeds(seeds)  # a bad --seeds is one line now
    if recovery_deadline <= 0:
        raise UsageError("--recovery-deadline must be positive")
    flags = ["probatorium", "replay"]
    for name in ("refapp", "app", "app_dir", "cmd", "url", "spec", "markov"):
        value = getattr(args, name)
        if value:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    if args.kind() in ("refapp", "app"):
        flags += ["--engine", args.engine]
    if args.health_path != "/healthz":
        flags += ["--health-path", args.health_path]
    flags += ["--services", services] if services else []
    flags += ["--faults", faults] if faults else []
    flags += ["--durable"] if durable else []
    flags += ["--recovery-deadline", str(recovery_deadline)] if recovery_deadline != 10.0 else []
    return Tier3Options(seeds=seeds, faults=parse_faults(faults), durable=durable,
                        recovery_deadline_s=recovery_deadline, replay_command=shlex.join(flags))


def _ci_options(baseline: Path | None, update: bool, junit: Path | None, sarif: Path | None):
    """CiOptions from the gate flags, the baseline read now: a bad file is one line before the run."""
    from .validate.baseline import load_baseline
    from .validate.ci_outputs import CiOptions

    ci = CiOptions(baseline_path=baseline, update=update, junit=junit, sarif=sarif)
    ci.check()
    if baseline is not None:
        ci.baseline = load_baseline(baseline, missing_ok=update)
    return ci


def _concurrency(given: int | None, duration_s: float) -> int:
    """--concurrency, else VALIDATE_CONCURRENCY, else what the duration suggests."""
    if given is None:
        env_c = os.environ.get("VALIDATE_CONCURRENCY")
        given = int(env_c) if env_c else default_concurrency(duration_s)
    if given < 1:
        raise UsageError(f"--concurrency must be at least 1, got {given}")
    return given


def _run_validation(plans, opts, run_dir: Path, matrix: bool, ci=None, json_out: bool = False,
                    command: str = "validate") -> None:
    """Run the cells with Ctrl-C / SIGTERM handling, print the summary, exit with the gate's status."""
    from .targets.launcher import stop_all
    from .validate.gate import gate_exit_code
    from .validate.orchestrator import Orchestrator
    from .validate.schedule import allocate_walkers

    stop_event = threading.Event()

    def on_signal(signum, frame):  # first: finish gracefully; second: stop now
        if stop_event.is_set():
            stop_all(grace=1.0)
            os._exit(130)
        say = opts.progress if isinstance(opts.progress, Progress) else err.print  # above a live status line
        say(f"probatorium: {signal.Signals(signum).name}: stopping, writing a partial document…")
        stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    tiers = ",".join(map(str, opts.tiers)) if opts.tiers else "all that apply"
    slices = ",".join(allocate_walkers(opts.concurrency, opts.slices)) if 1 in (opts.tiers or [1]) else "-"
    err.print(f"probatorium {__version__}: {len(plans)} cell(s), {opts.duration_s:.0f}s, C={opts.concurrency}, "
              f"tiers={tiers}, slices={slices}, "
              f"seed={opts.seed:#x}, results {run_dir}", markup=False, soft_wrap=True)
    orch = Orchestrator(plans, opts, run_dir, kind="matrix" if matrix else "single", command=sys.argv[:],
                        stop_event=stop_event, baseline=ci.baseline if ci else None,
                        baseline_source=str(ci.baseline_path or "") if ci else "")
    progress = reporter_of(opts.progress)
    try:
        if isinstance(progress, Progress):
            progress.begin()
        doc = orch.run()
    except ProbatoriumError as e:
        progress.close()
        stop_all()
        _fail(e)
        return
    finally:
        progress.close()
        stop_all()
    code = gate_exit_code(doc, interrupted=stop_event.is_set())
    _finish_outputs(doc, run_dir, ci, json_out, code, command)
    raise typer.Exit(code)


def _finish_outputs(doc, run_dir: Path, ci, json_out: bool, code: int, command: str = "validate") -> None:
    """The summary (table, or --json), then the baseline update and the --junit/--sarif files."""
    import json

    from .validate.ci_outputs import CiOptions, json_summary, write_outputs

    try:
        lines = write_outputs(doc, run_dir, ci or CiOptions())
    except (ProbatoriumError, OSError) as e:
        _fail(e)
        return
    if json_out:
        print_json(command, code, json_summary(doc, run_dir, code))
        for line in lines:
            err.print(line, markup=False)
        return
    _print_summary(doc, run_dir)
    for line in lines:
        console.print(line, markup=False)


def reason_lines(doc) -> list[str]:
    """Each cell's reason and its not_judged predicates grouped by reason, one full line each."""
    lines = []
    for c in doc.validation_results.cells:
        name = f"{c.refapp}/{c.engine}"
        if c.reason:
            lines.append(f"{name} {c.status}: {c.reason}")
        by_reason: dict[str, list[str]] = {}
        for pid, prop in (c.properties or {}).items():
            status = prop.get("status") if isinstance(prop, dict) else getattr(prop, "status", None)
            why = prop.get("reason") if isinstance(prop, dict) else getattr(prop, "reason", None)
            if status == "not_judged":
                by_reason.setdefault(why or "no reason given", []).append(pid)
        for why, ids in by_reason.items():
            lines.append(f"{name} not judged: {', '.join(ids)}: {why}")
    return lines


def _print_summary(doc, run_dir: Path) -> None:
    """One row per cell: requests per slice (columns from the slice registry), framing, HIGH predicates."""
    from .validate.tier1.registry import SLICES

    table = Table(title=f"validate — schema {doc.schema_version}, {doc.host_arch_pair}")
    for col in ("cell", "status", *(f"{name} sent" for name in SLICES), "markov 5xx", "adv wrong/hang/lenient",
                "rfc1", "rfc2", "t3 seeds pass/fail/err", "HIGH"):
        table.add_column(col, overflow="fold")
    for c in doc.validation_results.cells:
        t1 = c.tier_1
        sent = [str((t1.get(info.tally_key) or {}).get(info.sent_counter, "-")) for info in SLICES.values()]
        adv, rfc, mk = (t1.get(k) or {} for k in ("adversarial", "rfc", "markov"))
        advs = "/".join(str(adv.get(f"adv_{v}", 0)) for v in ("wrong_accepted", "hang_until_timeout",
                                                              "lenient_accepted")) if adv else "-"
        highs = sorted({i.predicate for i in c.incidents if i.severity == "HIGH" and not i.accepted})
        t3 = c.tier_3
        t3s = "/".join(str(t3.get(f"seeds_{k}", 0)) for k in ("passed", "failed", "errored")) if t3 else "-"
        table.add_row(f"{c.refapp}/{c.engine}", c.status, *sent, str(mk.get("5xx", "-")), advs,
                      str(rfc.get("rfc1_violations", 0)), str(rfc.get("rfc2_violations", 0)), t3s,
                      ",".join(highs) or "-")
    console.print(table)
    for line in reason_lines(doc):  # whole, wrapped by the terminal: never cut to fit a column
        console.print(line, markup=False, soft_wrap=True)
    from .validate.fuzz import summary_lines

    for c in doc.validation_results.cells:
        for line in summary_lines(c):
            console.print(line, markup=False)
    console.print(f"results: {run_dir / 'validate-results.json'}", markup=False)


@app.command()
def fuzz(
    duration: str = typer.Option(os.environ.get("FUZZ_DURATION", "60s"), "--duration", "-d", help="Budget (30s, 10m). Env FUZZ_DURATION."),
    seed: Optional[str] = typer.Option(None, "--seed", help="Run seed (decimal or 0x hex); random if omitted, always recorded."),
    refapp: Optional[str] = typer.Option(None, "--refapp", help="Reference app slug (default auth_session_ratelimit)."),
    app_target: Optional[str] = typer.Option(None, "--app", help="Any ASGI app MODULE:ATTR served by --engine."),
    app_dir: Optional[str] = typer.Option(None, "--app-dir", help="Where --app is imported from."),
    cmd: Optional[str] = typer.Option(None, "--cmd", help="Any HTTP server command; {port} is substituted, or it prints 'ready addr=HOST:PORT'."),
    url: Optional[str] = typer.Option(None, "--url", help="A server that is already running."),
    engine: str = typer.Option(os.environ.get("VALIDATE_REFAPP_ENGINE", "auto"), "--engine", help="Engine for --refapp/--app."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="OpenAPI file; without it --url/--cmd targets are asked for GET /openapi.json, then /openapi.yaml."),
    markov: Optional[Path] = typer.Option(None, "--markov", help="Markov model whose login: is the login operation."),
    label: Optional[str] = typer.Option(None, "--label", help="Cell name for --app/--cmd/--url targets."),
    mode: str = typer.Option("full", "--mode", help="lean: every operation once with its checker probes; full: then BFS pairs and seeded random walks."),
    corpus: Optional[Path] = typer.Option(Path(os.environ["FUZZ_CORPUS"]) if os.environ.get("FUZZ_CORPUS") else None, "--corpus", help="Sequences that reached a new (operation, status) pair are kept here and replayed first. Env FUZZ_CORPUS."),
    show_deps: bool = typer.Option(False, "--show-deps", help="Print the inferred dependency graph and exit."),
    replay_dossier: Optional[Path] = typer.Option(None, "--replay", help="Replay a dossier's repro.py against the target and exit with its status."),
    login_path: Optional[str] = typer.Option(None, "--login-path", help="Login path when neither --markov nor the spec names one."),
    walkers: int = typer.Option(4, "--walkers", help="Concurrent walkers (each with its own two users)."),
    health_path: str = typer.Option("/healthz", "--health-path", help="Health path the watchdog polls."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a target outside loopback."),
    ready_timeout: float = typer.Option(30.0, "--ready-timeout", help="Seconds a started target has to accept connections."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default results/<ts>-validate-…)."),
    results_dir: Path = typer.Option(Path(os.environ.get("PROBATORIUM_RESULTS", "results")), "--results-dir", help="Root of result folders."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier run's results in --out."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Accepted findings (YAML, docs/gate.md): they are recorded, marked accepted, and do not fail the gate."),
    baseline_update: bool = typer.Option(False, "--baseline-update", help="Create or extend --baseline FILE with every HIGH/MED finding it does not cover."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Also write JUnit XML here (a testsuite per cell, a testcase per property)."),
    sarif: Optional[Path] = typer.Option(None, "--sarif", help="Also write SARIF 2.1.0 here (a result per incident)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
) -> None:
    """Tier 2 alone: stateful API fuzzing from the target's OpenAPI document (validate's results layout)."""
    from .results.store import lock_run_folder
    from .validate import fuzz as F
    from .validate.plan import TargetArgs, ValidateOptions, choose_run_dir, plan_cells, plan_warnings

    try:
        duration_s = parse_duration(duration)
        args = TargetArgs(refapp=refapp, app=app_target, app_dir=app_dir, cmd=cmd, url=url, engine=engine,
                          spec=spec, markov=markov, label=label, health_path=health_path,
                          allow_remote=allow_remote, ready_timeout=ready_timeout)
        plans = plan_cells(args, ["markov"])
        _warn(plan_warnings(plans, ["markov"], fuzz_only=True))
        options = F.tier2_options(mode=mode, corpus=corpus, login_path=login_path, walkers=walkers,
                                  discover=plans[0].openapi is None)
        if show_deps:
            print(F.show_deps(plans[0], login_path), end="")
            raise typer.Exit(0)
        if replay_dossier is not None:
            raise typer.Exit(F.replay(plans[0], replay_dossier, lambda m: err.print(m, markup=False)))
        opts = ValidateOptions(duration_s=duration_s, concurrency=walkers,
                               seed=random_seed() if seed in (None, "") else parse_seed(seed), slices=None,
                               tiers=[2], health_path=health_path, tier_options={2: options},
                               progress=make_progress("fuzz", quiet))
        ci = _ci_options(baseline, baseline_update, junit, sarif)
        run_dir = choose_run_dir(out, results_dir, plans, False)
        run_lock = lock_run_folder(run_dir, force=force)
    except (ProbatoriumError, ValueError) as e:
        _fail(e)
        return
    with run_lock:
        _run_validation(plans, opts, run_dir, False, ci, json_out, command="fuzz")


@app.command("validate-diff")
def validate_diff(
    docs: list[Path] = typer.Argument(None, help="Documents or run folders; default: newest matrix doc per host."),
    strict: bool = typer.Option(_env_bool("VALIDATE_DIFF_STRICT"), "--strict/--no-strict", help="Also fail on MED. Env VALIDATE_DIFF_STRICT=1."),
    hosts: Optional[str] = typer.Option(os.environ.get("VALIDATE_DIFF_HOSTS"), "--hosts", help="Only these hosts. Env VALIDATE_DIFF_HOSTS."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default <results>/validate-diff)."),
    results_dir: Path = typer.Option(Path(os.environ.get("PROBATORIUM_RESULTS", "results")), "--results-dir"),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Compare cells: cross-engine, cross-arch and per-case divergences."""
    from .validate.diff import DIFF_FOLDER, run_diff

    if json_out:  # the diff.json it wrote, behind the envelope; no text on stdout
        out_dir = out if out is not None else results_dir / DIFF_FOLDER
        code = run_diff(list(docs or []), out_dir=out_dir, strict=strict, results_root=results_dir,
                        hosts=_csv(hosts) or None)
        import json

        diff = json.loads((out_dir / "diff.json").read_text())
        raise typer.Exit(print_json("validate-diff", code, {"diff_json": str(out_dir / "diff.json"), **diff}))

    # ProbatoriumError reaches main(): one line, exit 2. Plain rows (as diff.txt): a pipe gets them
    # whole, a terminal wraps them itself; never cut to a console width.
    raise typer.Exit(run_diff(list(docs or []), out_dir=out, strict=strict, results_root=results_dir,
                              hosts=_csv(hosts) or None, echo=lambda text: sys.stdout.write(text)))


@app.command("repro-check")
def repro_check(
    run: Path = typer.Argument(..., help="A run folder (or its validate-results.json)."),
    include_med: bool = typer.Option(True, "--med/--high-only", help="Also check MED findings."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Re-run every finding's repro.py against a fresh target; exit 1 if any does not reproduce."""
    from .validate.reprocheck import check_reproducers

    results = check_reproducers(run, ("HIGH", "MED") if include_med else ("HIGH",))  # errors: see main()
    bad = [r for r in results if r.outcome != "REPRODUCED"]
    if json_out:
        raise typer.Exit(print_json("repro-check", 1 if bad else 0, {
            "run": str(run), "reproduced": len(results) - len(bad), "total": len(results),
            "results": [{"engine": r.engine, "predicate": r.predicate, "case": r.case, "outcome": r.outcome}
                        for r in results]}))
    table = Table(title="repro-check")
    for col in ("engine", "predicate", "case", "outcome"):
        table.add_column(col)
    for r in results:
        table.add_row(r.engine, r.predicate, r.case, r.outcome)
    console.print(table)
    console.print(f"{len(results) - len(bad)}/{len(results)} reproduced", markup=False)
    raise typer.Exit(1 if bad else 0)


@app.command()
def loadgen(
    url: str = typer.Argument(..., help="http://HOST:PORT/path (ws:// for --kind ws)"),
    connections: int = typer.Option(64, "--connections", "-c", help="Closed loop: connections driven back to back."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Open loop: constant arrival rate (requests/s)."),
    duration: str = typer.Option("10s", "--duration", "-d"),
    warmup: str = typer.Option("0s", "--warmup"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes (default: cores in the affinity mask)."),
    method: str = typer.Option("GET", "--method", "-m"),
    header: list[str] = typer.Option([], "--header", "-H", help="'Name: value', repeatable."),
    body: Optional[str] = typer.Option(None, "--body", help="Request body, or @file."),
    close: bool = typer.Option(False, "--close", help="A new connection per request."),
    json_out: bool = typer.Option(False, "--json", help="Print the result object as JSON."),
    timeout: float = typer.Option(10.0, "--timeout", help="Per-request timeout in seconds."),
    expect_status: list[int] = typer.Option([], "--expect-status", help="Statuses that are not errors (repeatable)."),
    allow_remote: bool = typer.Option(False, "--allow-remote"),
    kind: str = typer.Option("http", "--kind", help="http | ws (WebSocket echo) | sse (SSE fan-out)"),
    ws_message: Optional[str] = typer.Option(None, "--ws-message"),
    threshold: list[str] = typer.Option([], "--threshold", help="k6-style pass criterion, repeatable: "
                                        "'p99<50ms', 'errors<0.1%', 'rps>1000'. Decides the exit code: 1 if any is broken."),
) -> None:
    """The load generator: closed or open loop, merged HdrHistograms, errors by class."""
    from .loadgen.cli import run_loadgen_command

    # ProbatoriumError reaches main(): one line, exit 2.
    raise typer.Exit(run_loadgen_command(
        url, connections=connections, rate=rate, duration=parse_duration(duration),
        warmup=parse_duration(warmup) if warmup.strip() not in ("0", "0s") else 0.0, workers=workers,
        method=method, headers=header, body=body, close=close, json_out=json_out, timeout=timeout,
        expect_status=expect_status or None, allow_remote=allow_remote, kind=kind, ws_message=ws_message,
        thresholds=threshold))


@app.command()
def bench(
    competitors: Optional[str] = typer.Option(None, "--competitors", help="all | python-only | default | a,b. Env BENCH_COMPETITORS."),
    cells: Optional[str] = typer.Option(None, "--cells", help="all | default | a,b. Env BENCH_CELLS."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Runs per cell. Env BENCH_RUNS."),
    duration: Optional[str] = typer.Option(None, "--duration", "-d", help="Per run. Env BENCH_DURATION."),
    warmup: Optional[str] = typer.Option(None, "--warmup", help="Env BENCH_WARMUP."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default results/<ts>-bench-<version>)."),
    server_cpus: Optional[str] = typer.Option(None, "--server-cpus", help="e.g. 0 or 0-1"),
    client_cpus: Optional[str] = typer.Option(None, "--client-cpus", help="e.g. 1"),
    max_probes: int = typer.Option(5, "--max-probes", help="Rate-search probes per SLO."),
    threshold: list[str] = typer.Option([], "--threshold", help="k6-style criterion on every competitor x cell "
                                        "saturation result, repeatable: 'p99<50ms', 'rps>1000'. Any broken -> exit 1."),
    list_only: bool = typer.Option(False, "--list", help="List the competitors and cells (* = default) and exit."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    driver: str = typer.Option(os.environ.get("PROBATORIUM_VALIDATE_DRIVER") or "local", "--driver",
                               help="local (this machine), netns (load generator in a client namespace, the "
                                    "competitors in each server namespace, in turn), ansible (the --inventory "
                                    "hosts: load from the client host, each server host in turn). "
                                    "Env PROBATORIUM_VALIDATE_DRIVER. docs/bench.md."),
    target_host: Optional[str] = typer.Option(None, "--target-host", help="--driver netns|ansible: the server hosts "
                                              "(server-a,server-b or all). Env BENCH_TARGET (its host names)."),
    inventory: Optional[Path] = typer.Option(os.environ.get("PROBATORIUM_INVENTORY"), "--inventory",
                                             help="--driver ansible: an ansible inventory with groups client and "
                                                  "server. Env PROBATORIUM_INVENTORY."),
) -> None:
    """Bench competitors cell by cell: saturation and latency_at_slo for 10/50/100/500/1000 ms."""
    from .bench.cli import bench_command, bench_list, bench_list_json, bench_target_hosts, resolve_bench
    from .hosts.cluster import check_driver

    if list_only:
        if json_out:
            raise typer.Exit(print_json("bench", 0, bench_list_json()))
        print(bench_list())
        raise typer.Exit(0)
    hosts = target_host or bench_target_hosts()
    driver = check_driver(driver)  # ssh -> ansible
    if driver != "local":
        from .hosts.bench_hosts import bench_on_hosts

        comps, cell_list, opts = resolve_bench(competitors, cells, runs, duration, warmup, out, server_cpus,
                                               client_cpus, max_probes, threshold)
        raise typer.Exit(bench_on_hosts(driver, hosts, comps, cell_list, opts, json_out, quiet, inventory))
    if hosts:
        raise UsageError(f"server host(s) {hosts} (--target-host / BENCH_TARGET) need a multi-host driver: "
                         "add --driver netns")

    # ProbatoriumError reaches main(): one line, exit 2.
    raise typer.Exit(bench_command(competitors=competitors, cells=cells, runs=runs, duration=duration, warmup=warmup,
                                   out=out, server_cpus=server_cpus, client_cpus=client_cpus, max_probes=max_probes,
                                   thresholds=threshold, json_out=json_out, quiet=quiet))


@app.command("bench-since")
def bench_since(
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline version. Env BASELINE_VERSION."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Allowed drop (0.05 = 5 %). Env REGRESSION_THRESHOLD."),
    results_dir: Optional[Path] = typer.Option(None, "--results-dir", help="Root of result folders. Env PROBATORIUM_RESULTS (default results)."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Compare the newest bench with the newest bench of a baseline version; exit 1 on a regression."""
    from .bench.cli import bench_since_command

    # ProbatoriumError reaches main(): one line, exit 2.
    raise typer.Exit(bench_since_command(baseline=baseline, threshold=threshold, results_dir=results_dir,
                                         json_out=json_out))


@app.command()
def services(
    action: str = typer.Argument(..., help="up | down | status"),
    names: Optional[str] = typer.Argument(None, help="postgres,redis,memcached (default: all)"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Start, stop or list the real backing services (DATABASE_URL, REDIS_URL, MEMCACHED_ADDR)."""
    from .services.cli import services_command

    raise typer.Exit(services_command(action, _csv(names), as_json=json_out))


@app.command()
def cleanup(include_live: bool = typer.Option(False, "--include-live", help="Also undo what runs still alive made."),
            hosts: Optional[str] = typer.Option(os.environ.get("CLEANUP_HOSTS"), "--hosts",
                                                help="Multi-host drivers: all (default) or a csv of host names (the --inventory's with it). Env CLEANUP_HOSTS."),
            inventory: Optional[Path] = typer.Option(None, "--inventory", help="Also clean the run folders and processes the ansible driver left on this inventory's hosts."),
            json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Undo whatever killed runs left behind: service processes and data directories, netns clusters, and
    with --inventory what the ansible driver left on those hosts (docs/cluster.md)."""
    from .hosts.netns import cleanup_netns, parse_host_names
    from .services.cli import cleanup_command

    code = 0
    try:
        chosen = parse_host_names(hosts)
        # --hosts names the inventory's hosts when one is given; the netns clusters are then cleaned whole.
        extra = cleanup_netns(None if inventory is not None else chosen, include_live=include_live)
        if inventory is not None:
            from .hosts.commands import cleanup_inventory

            more, code = cleanup_inventory(inventory, hosts, include_live)
            extra += more
    except ProbatoriumError as e:
        _fail(e)
        return
    raise typer.Exit(cleanup_command(include_live=include_live, as_json=json_out, extra=extra) or code)


@app.command()
def invariants(markdown: bool = typer.Option(False, "--markdown", help="Print docs/invariants.md."),
               json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the invariant catalogue: ID, severity and the property each predicate guards."""
    from .validate import invariants as catalogue

    if json_out:
        raise typer.Exit(print_json("invariants", 0, {"invariants": [
            {"id": i.id, "severity": i.severity, "property": i.property, "judged_by": i.judged_by}
            for i in catalogue.CATALOGUE.values()]}))
    if markdown:
        print(catalogue.markdown(), end="")
        return
    table = Table(title="invariants")
    for col in ("ID", "severity", "property"):
        table.add_column(col, overflow="fold")
    for inv in catalogue.CATALOGUE.values():
        table.add_row(inv.id, inv.severity, inv.property)
    console.print(table)


@app.command()
def replay(
    seed: Optional[str] = typer.Option(None, "--seed", help="The Tier 3 seed (0x…) to re-run."),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="Run this plan file (e.g. a shrunk minimal-plan.json)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan JSON; start nothing."),
    attempts: int = typer.Option(1, "--attempts", help="Run it this many times; exit 1 if any fails."),
    refapp: Optional[str] = typer.Option(None, "--refapp"), app_target: Optional[str] = typer.Option(None, "--app"),
    app_dir: Optional[str] = typer.Option(None, "--app-dir"), cmd: Optional[str] = typer.Option(None, "--cmd"),
    url: Optional[str] = typer.Option(None, "--url"), engine: str = typer.Option("auto", "--engine"),
    spec: Optional[Path] = typer.Option(None, "--spec"), markov: Optional[Path] = typer.Option(None, "--markov"),
    health_path: str = typer.Option("/healthz", "--health-path"),
    allow_remote: bool = typer.Option(False, "--allow-remote"),
    services_opt: Optional[str] = typer.Option(None, "--services", help="Backing services (started durably)."),
    faults: Optional[str] = typer.Option(None, "--faults"), durable: bool = typer.Option(False, "--durable"),
    recovery_deadline: float = typer.Option(10.0, "--recovery-deadline"),
    ready_timeout: float = typer.Option(30.0, "--ready-timeout"),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
) -> None:
    """Re-run one Tier 3 seed (or plan file) against a fresh target; exit 1 if it fails."""
    from .validate.plan import TargetArgs, check_services
    from .validate.replay import ReplayRequest, dry_run_plan, replay as run_replay

    if (seed is None) == (plan_file is None):
        _fail(UsageError("give exactly one of --seed 0x… and --plan FILE"))
    if attempts < 1:
        _fail(UsageError("--attempts must be at least 1"))
    args = TargetArgs(refapp=refapp, app=app_target, app_dir=app_dir, cmd=cmd, url=url, engine=engine, spec=spec,
                      markov=markov, health_path=health_path, allow_remote=allow_remote, ready_timeout=ready_timeout)
    opts = _tier3_options(args, None, faults, durable, recovery_deadline, services_opt)
    req = ReplayRequest(args, opts, seed=parse_seed(seed) if seed else None, plan_file=plan_file,
                        services=tuple(check_services(_csv(services_opt))), attempts=attempts)
    if dry_run:
        plan_json = dry_run_plan(req).to_json(indent=2)
        if json_out:
            import json

            raise typer.Exit(print_json("replay", 0, {"dry_run": True, "plan": json.loads(plan_json)}))
        print(plan_json, end="")
        return
    with make_progress("replay", quiet) as progress:
        code, results = run_replay(req, progress)
    if json_out:
        raise typer.Exit(print_json("replay", code, {"attempts": attempts, "results": [
            {k: v for k, v in r.as_dict().items() if k != "timeline"} for r in results]}))
    raise typer.Exit(code)


@app.command()
def corpus(
    action: str = typer.Argument(..., help="list | show SEED | stats | build"),
    seed: Optional[str] = typer.Argument(None, help="show: a seed (0x…) or #INDEX"),
    offset: int = typer.Option(0, "--offset"), limit: int = typer.Option(20, "--limit"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The Tier 3 corpus under validation/corpus/: list seeds, show a seed's plan, coverage stats."""
    import json

    from .validate.tier3 import corpus as c

    if json_out:
        raise typer.Exit(print_json("corpus", 0, _corpus_json(action, seed, offset, limit)))
    if action == "list":
        rows = c.rows(offset=offset, limit=limit)
        for r in rows:
            print(json.dumps(r) if json_out else f"{r['i']:>6}  {r['seed']:<20} {r['faults']}  {','.join(r['kinds'])}")
    elif action == "show":
        if not seed:
            _fail(UsageError("corpus show SEED: give a seed (0x…) or #INDEX"))
        print(c.show(seed).to_json(indent=2), end="")
    elif action in ("stats", "build"):
        st = c.build() if action == "build" else c.stats()
        if json_out:
            print(json.dumps(st, indent=2))
            return
        print(f"{st['size']} seeds; faults per plan: " + ", ".join(f"{k}: {v}" for k, v in sorted(st['faults_per_plan'].items())))
        for kind, n in st["plans_with_kind"].items():
            print(f"  {kind:<14} {n:>6} plans ({100 * n / st['size']:.1f} %)")
    else:
        _fail(UsageError(f"unknown corpus action {action!r}: list, show, stats, build"))


def _corpus_json(action: str, seed: str | None, offset: int, limit: int) -> dict:
    """`corpus ACTION --json`: the fields of the one summary object (bad input: UsageError, exit 2)."""
    import json

    from .validate.tier3 import corpus as c

    if action == "list":
        return {"action": "list", "offset": offset, "limit": limit, "rows": c.rows(offset=offset, limit=limit)}
    if action == "show":
        if not seed:
            raise UsageError("corpus show SEED: give a seed (0x…) or #INDEX")
        return {"action": "show", "plan": json.loads(c.show(seed).to_json())}
    if action in ("stats", "build"):
        return {"action": action, **(c.build() if action == "build" else c.stats())}
    raise UsageError(f"unknown corpus action {action!r}: list, show, stats, build")


@app.command()
def refapps(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List the reference apps."""
    from .targets.refapps import list_refapps

    if json_out:
        raise typer.Exit(print_json("refapps", 0, {"refapps": list(list_refapps())}))
    for slug in list_refapps():
        console.print(slug, markup=False)


CI_TIER_EXAMPLES = """Examples:

  probatorium ci-tier pr --plan

  probatorium ci-tier pr --baseline accepted.yaml

  probatorium ci-tier nightly --engines uvicorn,granian

Exit 1: a gate failed or a property was judged in no cell; 2: a phase could not run.
See docs/ci.md."""


@app.command("ci-tier", epilog=CI_TIER_EXAMPLES)
def ci_tier(
    tier: str = typer.Argument(..., help="pr (10 min), nightly (1 h) or weekend (24 h)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Wall-time budget instead of the tier's own (e.g. 5m)."),
    refapps: Optional[str] = typer.Option(os.environ.get("VALIDATE_MATRIX_REFAPPS"), "--refapps", help="Refapps (csv; default all). Env VALIDATE_MATRIX_REFAPPS."),
    engines: Optional[str] = typer.Option(os.environ.get("VALIDATE_MATRIX_ENGINES"), "--engines", help="Engines (csv; default all). Env VALIDATE_MATRIX_ENGINES."),
    rotation: Optional[int] = typer.Option(None, "--rotation", help="Which pairs the PR tier's long cells take (default: the UTC day number)."),
    leak_cell: float = typer.Option(60.0, "--leak-cell", help="Seconds of a cell meant for the leak judges (below ~55 they cannot judge)."),
    seed: Optional[str] = typer.Option(os.environ.get("VALIDATE_SEED"), "--seed", help="Run seed (decimal or 0x hex); random if omitted."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Accepted findings passed to every validate run (docs/gate.md)."),
    plan_only: bool = typer.Option(False, "--plan", help="Print the plan and its wall-time estimate; run nothing."),
    results_dir: Path = typer.Option(Path(os.environ.get("PROBATORIUM_RESULTS", "results")), "--results-dir", help="Root of result folders."),
    json_out: bool = typer.Option(False, "--json", help="Print tier.json on stdout instead of the table."),
) -> None:
    """One tier of the release ladder: its validate runs, then a property × cells coverage table."""
    import json

    from .results.store import run_folder
    from .targets.engines import ENGINES, resolve_engine
    from .targets.refapps import list_refapps, refapp_dir
    from .validate import citier
    from .validate.invariants import CATALOGUE

    try:
        slugs = _csv(refapps) or list_refapps()
        for slug in slugs:
            refapp_dir(slug)
        names = [resolve_engine(e) for e in (_csv(engines) or list(ENGINES))]
        if baseline is not None and not baseline.is_file():
            raise UsageError(f"--baseline {baseline}: no such file")
        plan = citier.plan_tier(tier, slugs, names, budget_s=parse_duration(budget) if budget else None,
                                rotation=citier.default_rotation() if rotation is None else rotation,
                                streaming=citier.streaming_refapps(slugs), leak_cell_s=leak_cell)
        run_seed = random_seed() if seed in (None, "") else parse_seed(seed)
    except (ProbatoriumError, ValueError) as e:
        _fail(e)
        return
    for p in plan.phases:
        err.print(f"{p.name}: {len(p.cells)} cell(s) × {p.cell_s:.0f}s — {p.why}: "
                  + ", ".join(f"{r}:{e}" for r, e in p.cells), markup=False, soft_wrap=True)
    err.print(f"ci-tier {tier}: budget {plan.budget_s:.0f}s, estimate {plan.estimate_s():.0f}s, "
              f"rotation {plan.rotation}", markup=False)
    if plan_only:
        if json_out:  # wt-progress: the plan behind the --json envelope (docs/json.md)
            print_json("ci-tier", 0, {"plan_only": True, **citier.summary(plan, [], [], 0, 0.0)})
        return
    tier_dir = run_folder(results_dir, "ci", tier)
    t0 = time.monotonic()
    citier.run_plan(plan, tier_dir, run_seed, say=lambda m: err.print(m, markup=False),
                    extra=["--baseline", str(baseline)] if baseline else [])
    docs, problems = citier.load_docs(plan)
    rows = citier.coverage(docs, list(CATALOGUE))
    code = citier.tier_exit_code(plan, rows, problems)
    doc = citier.summary(plan, rows, problems, code, time.monotonic() - t0)
    (tier_dir / "tier.json").write_text(json.dumps(doc, indent=2) + "\n")
    if json_out:  # wt-progress: tier.json behind the --json envelope (docs/json.md)
        print_json("ci-tier", code, {"tier_json": str(tier_dir / "tier.json"), **doc})
    else:
        _print_coverage(rows, problems, tier_dir)
    raise typer.Exit(code)


def _print_coverage(rows, problems: list[str], tier_dir: Path) -> None:
    table = Table(title="coverage: cells per property", show_lines=False)
    for col in ("property", "judged", "failed", "not judged", "n/a", "why not judged"):
        table.add_column(col, overflow="fold")
    for r in rows:
        why = "; ".join(f"{k} (×{n})" for k, n in r.reasons.most_common(2))
        table.add_row(r.predicate, str(r.judged), str(r.failed), str(r.not_judged), str(r.not_applicable),
                      why or "-", style="bold red" if r.judged == 0 else None)
    console.print(table)
    for line in problems:
        err.print(f"probatorium: error: {line}", markup=False, soft_wrap=True)
    missing = [r.predicate for r in rows if r.judged == 0]
    if missing:
        console.print(f"judged in no cell: {', '.join(missing)}", markup=False, soft_wrap=True)
    console.print(f"results: {tier_dir / 'tier.json'}", markup=False, soft_wrap=True)


# ---- soak (issue 13): rounds of validate, checkpointed, resumable; see docs/soak.md --------------
SOAK_EXAMPLES = """Examples:

  probatorium soak -d 24h --checkpoint-every 60m --refapp kitchen_sink --engine uvicorn

  probatorium soak -d 5m --checkpoint-every 1m --out soak1 --cmd "python3 srv.py --port {port}"

  probatorium soak --resume soak1

Every flag after the soak's own is validate's (target, tiers, slices, matrix); each round is
one validate run of them. Exit 1: a HIGH incident in any round; 2: usage/infrastructure or an
unfinished soak; 0 otherwise. See docs/soak.md."""


@app.command(epilog=SOAK_EXAMPLES, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def soak(
    ctx: typer.Context,
    duration: Optional[str] = typer.Option(os.environ.get("SOAK_DURATION"), "--duration", "-d", help="Soak length (e.g. 24h). Env SOAK_DURATION."),
    checkpoint_every: str = typer.Option("60m", "--checkpoint-every", help="Round length: the whole document is checkpointed after each round."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the soak in this folder (killed or interrupted)."),
    parallel: bool = typer.Option(_env_bool("VALIDATE_PARALLEL"), "--parallel/--no-parallel", help="Each cell of a refapp matrix round as its own validate run, all at once (each gets the whole round). Env VALIDATE_PARALLEL=1."),
    seed: Optional[str] = typer.Option(os.environ.get("VALIDATE_SEED"), "--seed", help="Soak seed; each round's seed is derived from it."),
    out: Optional[Path] = typer.Option(None, "--out", help="Soak folder (default results/<ts>-soak-<version>)."),
    results_dir: Path = typer.Option(Path(os.environ.get("PROBATORIUM_RESULTS", "results")), "--results-dir", help="Root of result folders."),
    json_out: bool = typer.Option(False, "--json", help="Print soak.json's summary as JSON on stdout."),
) -> None:
    """A long validation as checkpointed rounds of validate; --resume continues a killed one."""
    import json

    from .validate import soak as S

    try:
        if resume is not None:
            if ctx.args or duration not in (None, os.environ.get("SOAK_DURATION")) or out is not None:
                raise UsageError("--resume SOAK_DIR takes the soak's flags from its soak.json: give it alone")
            soak_dir = resume
            state = S.load_state(soak_dir)
            S.check_resumable(state)
        else:
            if not duration:
                raise UsageError("soak needs --duration (or env SOAK_DURATION), e.g. -d 24h")
            S.check_validate_args(ctx.args)
            plans = _check_forwarded(list(ctx.args))
            cells = S.parallel_cells(plans, ctx.args) if parallel else None
            state = S.new_state(parse_duration(duration), parse_duration(checkpoint_every),
                                random_seed() if seed in (None, "") else parse_seed(seed), ctx.args, cells)
            if out is not None and (out / S.STATE_NAME).exists():
                raise UsageError(f"{out}: holds a soak already; continue it with --resume {out}")
            soak_dir = out if out is not None else S.soak_folder(results_dir)
        lock = S.lock_soak_dir(soak_dir)
    except (ProbatoriumError, ValueError) as e:
        _fail(e)
        return
    if resume is not None:
        for rnd in S.adopt_killed_rounds(state, soak_dir):
            err.print(f"soak: resume: round {rnd['index']} was killed after {rnd['seconds']:.0f}s; "
                      "its checkpointed cells and incidents are kept", markup=False)
        state["resumes"] = int(state.get("resumes", 0)) + 1
        state.setdefault("resume_commands", []).append(sys.argv[:])
    else:
        state["command"] = sys.argv[:]
    stop_event = threading.Event()

    def on_signal(signum, frame):
        err.print(f"probatorium: {signal.Signals(signum).name}: stopping the soak after this round's "
                  "partial document (resume with --resume)", markup=False)
        stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    err.print(f"probatorium {__version__}: soak {state['duration_s']:.0f}s in rounds of "
              f"{state['checkpoint_every_s']:.0f}s, {S.spent_s(state):.0f}s spent, seed {state['seed']}, "
              f"results {soak_dir}", markup=False, soft_wrap=True)
    try:
        doc = S.SoakRunner(soak_dir, state, say=lambda m: err.print(m, markup=False, soft_wrap=True),
                           stop_event=stop_event).run()
    except ProbatoriumError as e:
        _fail(e)
        return
    finally:
        os.close(lock)
    code = S.soak_exit_code(state, doc, stop_event.is_set())
    if json_out:
        print(json.dumps({"soak_dir": str(soak_dir), "exit_code": code, **state["summary"]}, indent=2))
    else:
        table = Table(title="soak — per hour of soak time")
        for col in S.HOURLY_COLUMNS:
            table.add_column(col, overflow="fold")
        for row in S.hourly_rows(state):
            table.add_row(*row)
        console.print(table)
        for line in S.summary_lines(state):
            console.print(line, markup=False, soft_wrap=True)
        console.print(f"results: {soak_dir / S.STATE_NAME}, {soak_dir / 'validate-results.json'}", markup=False)
    raise typer.Exit(code)


def _check_forwarded(args: list[str]) -> list:
    """The flags a soak hands to each round's validate, parsed by validate's own parser now: a bad
    one is one line before the first round starts."""
    command = typer.main.get_command(app).commands["validate"]  # type: ignore[attr-defined]
    try:
        p = command.make_context("validate", [*args, "--duration", "10s"]).params
    except typer.Exit:
        raise UsageError("soak: --help is not a target flag") from None
    except Exception as e:  # click's usage errors
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        raise UsageError(f"soak: bad validate flag: {message.split(' (Possible options')[0]}") from None
    from .validate.plan import TargetArgs, parse_cells, plan_cells

    pairs = parse_cells(p["cells"])  # the targets checked as validate checks them (unknown refapp/engine, files)
    return plan_cells(TargetArgs(refapp=p["refapp"], app=p["app_target"], app_dir=p["app_dir"], cmd=p["cmd"], url=p["url"],
                          engine=p["engine"], matrix=p["matrix"] or bool(pairs), refapps=_csv(p["refapps"]),
                          engines=_csv(p["engines"]), cells=pairs, spec=p["spec"], markov=p["markov"],
                          label=p["label"], health_path=p["health_path"], allow_remote=p["allow_remote"],
                          ready_timeout=p["ready_timeout"]), _csv(p["slices"]) or None)
# ---- end soak ----------------------------------------------------------------------------------


@app.command()
def version(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Print the version."""
    if json_out:
        raise typer.Exit(print_json("version", 0, {"version": __version__}))
    console.print(f"probatorium {__version__}", markup=False)


# --- report (issue 14 item 1; branch wt-report) ---------------------------------------
REPORT_EXAMPLES = """Examples:

  probatorium report results/20261203T165156Z-validate-matrix-amd64

  probatorium report RUN_A RUN_B results/validate-diff --out report.html

  probatorium report results/*-bench-* --history results/history.jsonl

One self-contained HTML file (no network). Views: docs/report.md."""


@app.command(epilog=REPORT_EXAMPLES)
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Validate, bench or validate-diff run folders."),
    out: Optional[Path] = typer.Option(None, "--out", help="The HTML file (default <first RUN_DIR>/report.html)."),
    history_file: Optional[Path] = typer.Option(None, "--history", help="Append each run's summary to this JSON-lines "
                                                "file and add a trends view over all its runs."),
) -> None:
    """One HTML report over validate, bench and validate-diff runs (matrix grid, charts, trends)."""
    from .report import write_report

    # ProbatoriumError reaches main(): one line, exit 2.
    path = write_report(list(run_dirs), out, history_file)
    console.print(f"report: {path} ({path.stat().st_size} bytes)", markup=False, soft_wrap=True)
# --- end report -----------------------------------------------------------------------


# --- publish (issue 14 item 2): results + report + badges to a folder or a local git branch ---------------
PUBLISH_EXAMPLES = """Examples:

  probatorium publish results/20261203T170000Z-validate-v1.2 --to site/

  PUBLISH_VERSION=v1.2 probatorium publish RUN_DIR --to git:probatorium-results --tier nightly

Never pushes or fetches. See docs/publish.md."""


@app.command(epilog=PUBLISH_EXAMPLES)
def publish(
    run_dir: Path = typer.Argument(..., help="A validate or bench run folder."),
    to: str = typer.Option(..., "--to", help="DIR (a site folder) or git:BRANCH (a local branch; orphan if missing)."),
    version: Optional[str] = typer.Option(None, "--version",
                                          help="Published version. Env PUBLISH_VERSION; default from the run document."),
    tier: Optional[str] = typer.Option(None, "--tier", help="pr | nightly | weekend (validate runs); default from the run's budget."),
    repo: Optional[Path] = typer.Option(None, "--repo", help="git:BRANCH: the repository (default: the one around the current folder)."),
) -> None:
    """Publish a run: its results, an HTML report, SVG badges and an index of every published run."""
    from .publish import publish as do_publish

    try:
        res = do_publish(run_dir, to, version=version, tier=tier, repo=repo)
    except ProbatoriumError as e:
        _fail(e, e.exit_code)
    i = res.info
    what = i.headline if i.kind == "bench" and i.headline else i.status.replace("_", " ")
    console.print(f"published {i.kind} {i.version} ({i.tier}): {what} -> {res.where} {res.run_path}", markup=False)
    if res.where.startswith("git:"):
        console.print(f"commit: {res.commit}" if res.commit else "commit: none (the branch already has this tree)",
                      markup=False)
    console.print(f"index: {res.runs} run{'s' if res.runs != 1 else ''}; latest badges: {', '.join(res.latest_badges)}",
                  markup=False)
# --- end publish --------------------------------------------------------------------------------------------


# ---- bisect (issue 14 item 7): logic in probatorium/bisect/ ---------------------------
BISECT_EXAMPLES = """Examples:

  probatorium bisect --package h11 --good 0.16.0 --bad 0.13.0 --predicate I-ADV-ACCEPTED --case chunk_data_missing_crlf

  probatorium bisect --package uvicorn --good 0.30.0 --bad 0.32.0 --cmd-check './check.sh'

Exit 0: an answer; 1: an endpoint contradicts the check; 2: usage/index/infrastructure error.
See docs/bisect.md."""


@app.command(epilog=BISECT_EXAMPLES)
def bisect(
    package: str = typer.Option(..., "--package", help="The distribution on the package index (h11, uvicorn, ...)."),
    good: str = typer.Option(..., "--good", help="A release that behaves well."),
    bad: str = typer.Option(..., "--bad", help="A release that misbehaves (older than --good: it was fixed)."),
    predicate: Optional[str] = typer.Option(None, "--predicate", help="Bad = an adversarial case's verdict violates this predicate (I-ADV-ACCEPTED, ...)."),
    case: list[str] = typer.Option([], "--case", help="The adversarial case(s) to run (repeatable); default: the whole catalogue."),
    from_run: Optional[Path] = typer.Option(None, "--from-run", help="Bad = this run's incident (--incident) reproduces: its dossier's repro.py against each release."),
    incident: Optional[str] = typer.Option(None, "--incident", help="The incident's dossier folder name (or a unique part of it) in --from-run."),
    cmd_check: Optional[str] = typer.Option(None, "--cmd-check", help="Run this shell command per release: exit 0 good, 125 skip, else bad; $PROBATORIUM_BISECT_PYTHON is the probe's python."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Engine serving the app (default: the engine the package belongs to, else auto)."),
    refapp: Optional[str] = typer.Option(None, "--refapp", help="Serve this reference app instead of the built-in echo app."),
    app_target: Optional[str] = typer.Option(None, "--app", help="Serve this ASGI app MODULE:ATTR instead."),
    app_dir: Optional[str] = typer.Option(None, "--app-dir", help="Where --app is imported from."),
    index: Optional[str] = typer.Option(os.environ.get("PROBATORIUM_BISECT_INDEX"), "--index", help="JSON API root of the index (default https://pypi.org/pypi). Env PROBATORIUM_BISECT_INDEX."),
    pip_cache: Optional[Path] = typer.Option(None, "--pip-cache", help="pip's cache dir (default ~/.cache/probatorium/pip; env PROBATORIUM_PIP_CACHE)."),
    deps: bool = typer.Option(True, "--deps/--no-deps", help="Also install the dependencies each release asks for (else they come from probatorium's environment)."),
    prereleases: bool = typer.Option(False, "--pre", help="Also probe pre-releases between the endpoints."),
    yanked: bool = typer.Option(False, "--yanked", help="Also probe yanked releases between the endpoints."),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Keep the probe venvs and logs in this folder."),
    quiet_timeout: float = typer.Option(3.0, "--quiet-timeout", help="Seconds of silence after which a case's answer is complete."),
    ready_timeout: float = typer.Option(30.0, "--ready-timeout", help="Seconds the engine has to accept connections."),
    check_timeout: float = typer.Option(300.0, "--check-timeout", help="Seconds one --cmd-check or repro.py may run (then: skip)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (probes go to stderr)."),
) -> None:
    """Install released versions into throw-away venvs and binary-search for the first bad (or first good) release."""
    from .bisect.cli import bisect_command, build_check

    # ProbatoriumError reaches main(): one line, exit 2.
    check = build_check(package=package, predicate=predicate, cases=case, cmd_check=cmd_check, engine=engine,
                        refapp=refapp, app=app_target, app_dir=app_dir, quiet_timeout=quiet_timeout,
                        ready_timeout=ready_timeout, check_timeout=check_timeout, from_run=from_run,
                        incident=incident)
    raise typer.Exit(bisect_command(package=package, good=good, bad=bad, check=check, index=index,
                                    pip_cache=pip_cache, deps=deps, prereleases=prereleases, yanked=yanked,
                                    keep=keep, json_out=json_out))
# ---- end of bisect ------------------------------------------------------------------------


@app.command()
def deploy(inventory: Optional[Path] = typer.Option(os.environ.get("PROBATORIUM_INVENTORY"), "--inventory", help="An ansible inventory with groups client and server. Env PROBATORIUM_INVENTORY."),
           refapps: Optional[str] = typer.Option(os.environ.get("VALIDATE_MATRIX_REFAPPS"), "--refapps", help="Refapps to ship (csv; default auth_session_ratelimit). Env VALIDATE_MATRIX_REFAPPS."),
           engines: Optional[str] = typer.Option(os.environ.get("VALIDATE_MATRIX_ENGINES"), "--engines", help="Engines to install (csv; default uvicorn). Env VALIDATE_MATRIX_ENGINES; DEPLOY_COMPETITORS=python-only|all|LIST adds more."),
           json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Install probatorium, the refapps and engines into /tmp/probatorium-<run>/ on every inventory host (docs/cluster.md)."""
    from .hosts.commands import deploy_command

    raise typer.Exit(deploy_command(inventory, _csv(refapps) or ["auth_session_ratelimit"], _csv(engines), json_out))


@app.command()
def status(inventory: Optional[Path] = typer.Option(os.environ.get("PROBATORIUM_INVENTORY"), "--inventory", help="Also ask these hosts (ansible ping, run folders, marked processes). Env PROBATORIUM_INVENTORY."),
           json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """What the multi-host drivers left running: netns clusters, ansible runs, and with --inventory each host's state."""
    from .hosts.commands import status_command

    raise typer.Exit(status_command(inventory, json_out))


def _version_callback(value: bool) -> None:
    if value:
        print(f"probatorium {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                            help="Print the version and exit.")) -> None:
    """Benchmark and production-readiness validation for HTTP servers."""


def main() -> None:
    """Console entry point: one line and exit 2 for bad input and our own errors, never a traceback."""
    try:
        extra = {}
        found = find_config()
        if found is not None:  # flags > env knobs > the config file > defaults
            extra["default_map"] = default_map(typer.main.get_command(app), *found)
        code = app(standalone_mode=False, prog_name="probatorium", **extra)
    except ProbatoriumError as e:
        err.print(error_line(e), markup=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # click's usage errors (typer vendors click)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            sys.exit(2)
        sub = ctx.info_name if ctx is not None and ctx.parent is not None else ""
        where = f"probatorium {sub} --help" if sub else "probatorium --help"
        err.print(error_line(f"{e.format_message()} (see {where})"), markup=False, soft_wrap=True)
        sys.exit(2 if ctx is not None else e.exit_code)
    except typer.Abort:
        err.print(error_line("interrupted"), markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
