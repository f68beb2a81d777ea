"""Registry of the ASGI engines probatorium can serve an app with.

The registry is data: per engine, the module run with ``python -m``, the
arguments (with ``{host}``, ``{port}``, ``{app}``, ``{app_dir}`` placeholders)
and the distributions whose versions identify the build under test (the server
plus its HTTP parser and event loop). Engines always run under the current
interpreter (``sys.executable``) so that they see exactly the environment the
validator was installed into.

The launcher additionally runs every engine with ``cwd`` = app dir and the app
dir on ``PYTHONPATH``; the app-dir flags below exist for engines that have one
so that ``module:attr`` resolves the same way on every engine.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import platform
import sys
from dataclasses import dataclass

from probatorium.errors import UsageError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class EngineDef:
    """How to start one engine and which packages make up its version."""

    module: str
    args: tuple[str, ...]
    packages: tuple[str, ...]


ENGINE_DEFS: dict[str, EngineDef] = {
    "uvicorn": EngineDef(
        module="uvicorn",
        args=(
            "--host", "{host}", "--port", "{port}", "--app-dir", "{app_dir}",
            "--loop", "uvloop", "--http", "httptools",
            # The sans-I/O websockets protocol: uvicorn deprecates the legacy one.
            "--ws", "websockets-sansio",
            # Access logs would cost throughput and flood stdout.log.
            "--no-access-log",
            "{app}",
        ),
        packages=("uvicorn", "uvloop", "httptools", "websockets"),
    ),
    "uvicorn-h11": EngineDef(
        module="uvicorn",
        args=(
            "--host", "{host}", "--port", "{port}", "--app-dir", "{app_dir}",
            "--loop", "asyncio", "--http", "h11", "--ws", "websockets-sansio",
            "--no-access-log",
            "{app}",
        ),
        packages=("uvicorn", "h11", "websockets"),
    ),
    "hypercorn": EngineDef(
        # Hypercorn has no app-dir flag: cwd + PYTHONPATH (set by the launcher)
        # resolve the module. Its access log is off unless asked for.
        module="hypercorn",
        # --workers 0 serves in the process we start: signals, /proc and py-spy then
        # reach the process that actually runs the app (the default forks a child).
        args=("--bind", "{host}:{port}", "--workers", "0", "{app}"),
        packages=("hypercorn", "h11", "h2"),
    ),
    "granian": EngineDef(
        module="granian",
        args=(
            "--interface", "asgi", "--host", "{host}", "--port", "{port}",
            "--workers", "1", "--working-dir", "{app_dir}", "--no-access-log",
            "{app}",
        ),
        packages=("granian",),
    ),
    "daphne": EngineDef(
        # Daphne writes an access log to stdout at the default verbosity 1;
        # verbosity 0 turns it off while keeping warnings and errors.
        module="daphne",
        args=("-b", "{host}", "-p", "{port}", "-v", "0", "{app}"),
        packages=("daphne", "twisted", "autobahn"),
    ),
    # ---- wt-wsasgi (issue 12 item 9): uvicorn's other WebSocket implementation. uvicorn-h11
    # and uvicorn serve WebSockets with the websockets library; this entry runs the same
    # h11 HTTP stack with wsproto, so both implementations uvicorn ships are in the matrix.
    "uvicorn-wsproto": EngineDef(
        module="uvicorn",
        args=(
            "--host", "{host}", "--port", "{port}", "--app-dir", "{app_dir}",
            "--loop", "asyncio", "--http", "h11", "--ws", "wsproto",
            "--no-access-log",
            "{app}",
        ),
        packages=("uvicorn", "h11", "wsproto"),
    ),
}

#: Engine names, in the order the matrix runs them.
ENGINES: tuple[str, ...] = tuple(ENGINE_DEFS)

AUTO = "auto"


@functools.lru_cache(maxsize=1)
def _fast_stack_importable() -> bool:
    # SPEC §1: "auto" is uvicorn only where uvloop and httptools actually
    # import (a wheel can be installed yet fail to load), so really import them.
    try:
        importlib.import_module("uvloop")
        importlib.import_module("httptools")
    except Exception:  # noqa: BLE001 - any failure to load means "not usable"
        return False
    return True


def resolve_engine(name: str) -> str:
    """Map an engine name (or ``auto``) to a registry name; UsageError if unknown."""
    if name == AUTO:
        return "uvicorn" if _fast_stack_importable() else "uvicorn-h11"
    if name not in ENGINE_DEFS:
        raise UsageError(
            f"unknown engine {name!r}; valid engines: {', '.join((AUTO, *ENGINES))}"
        )
    return name


def engine_argv(engine: str, app: str, port: int | str, app_dir: str, python: str | None = None,
                host: str = HOST) -> list[str]:
    """The command line serving ``module:attr`` `app` on `host` (127.0.0.1):`port`, under `python`
    (default: this interpreter; `probatorium bisect` passes a probe venv's)."""
    definition = ENGINE_DEFS[resolve_engine(engine)]
    values = {"host": host, "port": str(port), "app": app, "app_dir": str(app_dir)}
    return [python or sys.executable, "-m", definition.module, *(a.format(**values) for a in definition.args)]


def engine_versions(engine: str) -> dict[str, str]:
    """Installed versions of the engine's packages plus ``python``.

    A package that is not installed is reported as ``"not installed"`` rather
    than raising: the caller records versions, the start itself reports the
    failure.
    """
    versions: dict[str, str] = {}
    for package in ENGINE_DEFS[resolve_engine(engine)].packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["python"] = platform.python_version()
    return versions
