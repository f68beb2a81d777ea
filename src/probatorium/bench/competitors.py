"""The competitor registry, as data.

Each entry says how to install it (``install``), how to start it (a refapp or
``module:attr`` app on one of our engines, or a command line with ``{port}``),
what it needs to exist on this machine (Python distributions, executables)
and which cells it serves (``capabilities``, matched against
``Cell.capabilities``). A missing package or toolchain makes the competitor
``not_applicable`` with the reason; it never fails a run.

Command placeholders: ``{port}`` (the launcher's free port), ``{host}`` (the
address to bind, filled by the launcher: loopback, or the server host's address
under ``--driver netns``; a command without it cannot be placed on a host), ``{python}``
(this interpreter), ``{apps}`` (``refapps/bench_app/competitors``) and
``{dir}`` (a per-start temp folder, where ``prepare`` steps write configs
or build binaries).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from probatorium.errors import UsageError
from probatorium.targets.engines import ENGINE_DEFS
from probatorium.targets.launcher import TargetSpec
from probatorium.targets.refapps import refapps_root

ALL_HTTP = ("plaintext", "json", "path_param", "post_body")
ASGI_FULL = ALL_HTTP + ("websocket", "sse")


class NotApplicable(Exception):
    """This competitor cannot run here; the message says why."""


@dataclass(frozen=True)
class Competitor:
    """One entry of the registry."""

    name: str
    group: str  # "ours" | "python" | "baseline"
    description: str
    install: str
    kind: str  # "refapp" | "app" | "cmd"
    capabilities: tuple[str, ...]
    refapp: str | None = None
    engine: str | None = None
    app: str | None = None  # module:attr, imported from refapps/bench_app/competitors
    cmd: str | None = None
    distributions: tuple[str, ...] = ()  # Python distributions that must be installed
    executables: tuple[str, ...] = ()  # programs that must be on PATH
    app_file: str | None = None  # file under {apps} the entry serves (must exist)
    prepare: str | None = None  # "nginx_conf" | "go_build"
    env: tuple[tuple[str, str], ...] = ()


def _engine_entry(engine: str) -> Competitor:
    return Competitor(
        name=f"bench_app-{engine}", group="ours",
        description=f"refapps/bench_app (pure ASGI) on {engine}",
        install="pip install -r requirements/engines.in (bundled engines)",
        kind="refapp", refapp="bench_app", engine=engine, capabilities=ASGI_FULL,
        distributions=ENGINE_DEFS[engine].packages,
    )


def _driver_entry(service: str) -> Competitor:
    return Competitor(
        name=f"driver_{service}-uvicorn", group="ours",
        description=f"refapps/driver_{service} on uvicorn (key/value routes over {service})",
        install=f"pip install -r refapps/driver_{service}/requirements.in; "
                f"scripts/install-debian-packages.sh ({service} server)",
        kind="refapp", refapp=f"driver_{service}", engine="uvicorn",
        capabilities=(f"driver_{service}",), distributions=ENGINE_DEFS["uvicorn"].packages,
        env=(("REFAPP_RATE_LIMIT", "off"),),
    )


def _uvicorn_app(name: str, dist: str, description: str, capabilities: tuple[str, ...] = ASGI_FULL) -> Competitor:
    """An ASGI framework's bench app (``<dist>_app.py``, attribute ``app``) on uvicorn."""
    return Competitor(
        name=name, group="python", description=f"{description} on uvicorn (uvloop, httptools)",
        install=f"pip install {dist} uvicorn[standard]", kind="app", app=f"{dist}_app:app", engine="uvicorn",
        capabilities=capabilities, distributions=(dist,) + ENGINE_DEFS["uvicorn"].packages,
        app_file=f"{dist}_app.py",
    )


REGISTRY: dict[str, Competitor] = {c.name: c for c in (
    *(_engine_entry(e) for e in ENGINE_DEFS),
    Competitor(
        name="starlette-uvicorn", group="python", description="Starlette routes on uvicorn (uvloop, httptools)",
        install="pip install starlette uvicorn[standard]", kind="app", app="starlette_app:app",
        engine="uvicorn", capabilities=ASGI_FULL,
        distributions=("starlette",) + ENGINE_DEFS["uvicorn"].packages, app_file="starlette_app.py",
    ),
    Competitor(
        name="flask-gunicorn", group="python", description="Flask on gunicorn (1 sync worker)",
        install="pip install flask gunicorn", kind="cmd",
        cmd="{python} -m gunicorn --workers 1 --bind {host}:{port} --chdir {apps} flask_app:app",
        capabilities=ALL_HTTP, distributions=("flask", "gunicorn"), app_file="flask_app.py",
    ),
    Competitor(
        name="django-gunicorn", group="python",
        description="Django (one-module project, no middleware) on gunicorn (1 sync worker)",
        install="pip install django gunicorn", kind="cmd",
        cmd="{python} -m gunicorn --workers 1 --bind {host}:{port} --chdir {apps} django_app:application",
        # a sync worker serves one connection at a time: no WebSocket, and an SSE
        # stream would hold the only worker, so neither is declared
        capabilities=ALL_HTTP, distributions=("django", "gunicorn"), app_file="django_app.py",
    ),
    _uvicorn_app("fastapi-uvicorn", "fastapi", "FastAPI (EventSourceResponse for SSE)"),
    _uvicorn_app("litestar-uvicorn", "litestar", "Litestar (websocket_listener, ServerSentEvent)"),
    _uvicorn_app("falcon-uvicorn", "falcon", "Falcon ASGI app (on_websocket, resp.sse)"),
    _uvicorn_app("blacksheep-uvicorn", "blacksheep", "BlackSheep (@ws, ServerSentEvent generator)"),
    Competitor(
        name="aiohttp", group="python", description="aiohttp on its own server (web.run_app, uvloop, 1 process)",
        install="pip install aiohttp uvloop", kind="cmd", cmd="{python} {apps}/aiohttp_app.py {port} {host}",
        capabilities=ASGI_FULL, distributions=("aiohttp", "uvloop"), app_file="aiohttp_app.py",
    ),
    Competitor(
        name="sanic", group="python",
        description="Sanic on its own server (single_process, no auto-reload, access log off)",
        install="pip install sanic", kind="cmd", cmd="{python} {apps}/sanic_app.py {port} {host}",
        capabilities=ASGI_FULL, distributions=("sanic",), app_file="sanic_app.py",
    ),
    Competitor(
        name="nginx", group="baseline", description="nginx, 1 worker, fixed bodies from a generated config",
        install="apt-get install nginx-light", kind="cmd",
        # the launcher fills {port} and {host} in argv only, so a shell writes them into the config
        cmd="sh -c 'sed -e s/__PORT__/{port}/ -e s/__HOST__/{host}/ {dir}/nginx.conf.in > {dir}/nginx.conf && "
            "exec nginx -p {dir} -e {dir}/error.log -c {dir}/nginx.conf'",
        capabilities=("plaintext", "json", "path_param"), executables=("nginx",),
        app_file="nginx.conf.tmpl", prepare="nginx_conf",
    ),
    Competitor(
        name="node-http", group="baseline", description="Node.js http module (no dependencies)",
        install="apt-get install nodejs", kind="cmd", cmd="node {apps}/node_http.js {port} {host}",
        capabilities=ALL_HTTP + ("sse",), executables=("node",), app_file="node_http.js",
    ),
    Competitor(
        name="go-nethttp", group="baseline", description="Go net/http, standard library only",
        install="apt-get install golang-go", kind="cmd", cmd="{dir}/server {port} {host}",
        capabilities=ALL_HTTP + ("sse",), executables=("go",), app_file="go_nethttp.go", prepare="go_build",
    ),
    *(_driver_entry(s) for s in ("postgres", "redis", "memcached")),
)}

#: The short default set (`probatorium bench` with no flags).
DEFAULT_COMPETITORS = ("bench_app-uvicorn", "bench_app-granian", "starlette-uvicorn", "nginx", "node-http")


def apps_dir() -> Path:
    """Where the competitors' app files live."""
    return refapps_root() / "bench_app" / "competitors"


def select_competitors(spec: str | None) -> list[Competitor]:
    """`all`, `python-only`, `default`/empty, or a comma list of names."""
    if not spec or spec == "default":
        return [REGISTRY[n] for n in DEFAULT_COMPETITORS]
    if spec == "all":
        return list(REGISTRY.values())
    if spec == "python-only":
        return [c for c in REGISTRY.values() if c.group in ("ours", "python")]
    out = []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        if name not in REGISTRY:
            raise UsageError(f"unknown competitor {name!r}; valid: all, python-only, {', '.join(REGISTRY)}")
        out.append(REGISTRY[name])
    return out


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def versions(comp: Competitor) -> dict[str, str]:
    """Versions of what the competitor is made of (distributions; executables' --version first line)."""
    out: dict[str, str] = {}
    for dist in comp.distributions:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    for exe in comp.executables:
        flag = {"nginx": "-v", "go": "version"}.get(exe, "--version")
        try:
            done = subprocess.run([exe, flag], capture_output=True, text=True, timeout=10)
            text = (done.stdout or done.stderr).strip().splitlines()
            out[exe] = text[0] if text else "unknown"
        except (OSError, subprocess.TimeoutExpired):
            out[exe] = "not installed"
    return out


def not_applicable_reason(comp: Competitor) -> str | None:
    """Why this competitor cannot run on this machine, or None when it can."""
    missing = [d for d in comp.distributions if not _installed(d)]
    if missing:
        return f"not installed: {', '.join(missing)} ({comp.install})"
    for exe in comp.executables:
        if shutil.which(exe) is None:
            return f"toolchain missing: {exe} not on PATH ({comp.install})"
    if comp.app_file and not (apps_dir() / comp.app_file).is_file():
        return f"bench app {comp.app_file} for {comp.name} is not written yet"
    return None


def prepare(comp: Competitor, workdir: Path) -> dict[str, str]:
    """Run the entry's prepare step in `workdir`; the placeholder values for its command.

    Raises RuntimeError when a present toolchain fails (a real failure, not n/a).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    subs = {"python": sys.executable, "apps": str(apps_dir()), "dir": str(workdir)}
    if comp.prepare == "nginx_conf":
        template = (apps_dir() / "nginx.conf.tmpl").read_text()
        # {port} and {host} are filled at start (see the nginx entry); nginx's own braces are left alone.
        text = template.replace("{dir}", str(workdir)).replace("{port}", "__PORT__").replace("{host}", "__HOST__")
        (workdir / "nginx.conf.in").write_text(text)
    elif comp.prepare == "go_build":
        done = subprocess.run(
            ["go", "build", "-o", str(workdir / "server"), str(apps_dir() / "go_nethttp.go")],
            capture_output=True, text=True, timeout=300, cwd=workdir,
        )
        if done.returncode != 0:
            raise RuntimeError(f"go build failed: {done.stderr.strip()[-500:]}")
    return subs


def target_spec(comp: Competitor, subs: dict[str, str], extra_env: dict[str, str] | None = None) -> TargetSpec:
    """The launcher spec that starts `comp` (placeholders other than {port} filled from `subs`)."""
    env = dict(comp.env)
    env.update(extra_env or {})
    if comp.kind == "refapp":
        return TargetSpec(kind="refapp", refapp=comp.refapp, engine=comp.engine or "uvicorn", env=env)
    if comp.kind == "app":
        return TargetSpec(kind="app", app=comp.app, app_dir=str(apps_dir()), engine=comp.engine or "uvicorn",
                          env=env)
    assert comp.cmd is not None
    cmd = comp.cmd
    for key, value in subs.items():
        cmd = cmd.replace("{" + key + "}", value)
    return TargetSpec(kind="cmd", cmd=cmd, env=env, app_dir=subs.get("dir"))


def serves(comp: Competitor, cell) -> str | None:
    """None when `comp` can serve `cell`, else the not_applicable reason."""
    missing = [c for c in cell.capabilities if c not in comp.capabilities]
    if missing:
        return f"{comp.name} does not serve {', '.join(missing)}"
    return None
