"""Shared types of the services package: errors, infos, binary lookup."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from probatorium.errors import InfraError

#: Debian package that provides each service's server binaries.
PACKAGES = {"postgres": "postgresql", "redis": "redis-server", "memcached": "memcached"}
SERVICE_NAMES = tuple(PACKAGES)
#: The environment variables each service exports to targets.
ENV_VARS = {"postgres": ("DATABASE_URL",), "redis": ("REDIS_URL",), "memcached": ("MEMCACHED_ADDR",)}
#: A marker file in every service directory; cleanup removes only marked dirs.
MARKER = ".probatorium-service"


class ServiceUnavailable(InfraError):
    """A backing service cannot be started on this host (missing binary, no
    usable user, never became healthy). The message is one line; cells that
    need the service are ``not_run`` with it as the reason."""

    def __init__(self, service: str, message: str, package: str | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.package = package


@dataclass(frozen=True)
class ServiceInfo:
    """A running service as targets see it."""

    name: str
    host: str
    port: int
    pid: int
    data_dir: str
    env: dict[str, str]
    version: str
    pgid: int = 0
    user: str = ""
    started_at: str = ""
    start_seconds: float = 0.0
    log_path: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "host": self.host, "port": self.port, "pid": self.pid,
                "pgid": self.pgid, "data_dir": self.data_dir, "env": dict(self.env),
                "version": self.version, "user": self.user, "started_at": self.started_at,
                "start_seconds": round(self.start_seconds, 3), "log_path": self.log_path}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    port: int | None
    data_dir: str
    alive: bool
    healthy: bool | None
    env: dict[str, str] = field(default_factory=dict)
    detached: bool = False
    owner_pid: int | None = None
    started_at: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "pid": self.pid, "port": self.port, "data_dir": self.data_dir,
                "alive": self.alive, "healthy": self.healthy, "env": dict(self.env),
                "detached": self.detached, "owner_pid": self.owner_pid, "started_at": self.started_at}


def normalise_names(names) -> list[str]:
    """'postgres,redis' / ['redis', 'postgres'] / None → validated, de-duplicated list."""
    from probatorium.errors import UsageError

    if names is None:
        return list(SERVICE_NAMES)
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    aliases = {"postgresql": "postgres", "pg": "postgres", "memcache": "memcached"}
    for chunk in names:
        for raw in str(chunk).split(","):
            name = aliases.get(raw.strip().lower(), raw.strip().lower())
            if not name:
                continue
            if name not in PACKAGES:
                raise UsageError(f"unknown service {raw.strip()!r}: choose from {', '.join(SERVICE_NAMES)}")
            if name not in out:
                out.append(name)
    return out


def _version_key(path: str) -> tuple:
    m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/", path)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


class BinFinder:
    """Finds server binaries.

    ``PROBATORIUM_SERVICE_BIN_DIRS`` (or ``bin_dirs=``; ``os.pathsep``-separated)
    replaces the search path entirely, so a test or a user can point at one
    particular build or simulate a host without the packages. Otherwise: the
    newest ``/usr/lib/postgresql/*/bin`` (Debian keeps the PostgreSQL server
    binaries out of PATH), then PATH, then /usr/sbin and /usr/bin.
    """

    def __init__(self, bin_dirs: list[str] | str | None = None) -> None:
        if bin_dirs is None:
            env = os.environ.get("PROBATORIUM_SERVICE_BIN_DIRS")
            bin_dirs = env if env is not None else None
        if isinstance(bin_dirs, str):
            bin_dirs = [d for d in bin_dirs.split(os.pathsep) if d]
        self.explicit = bin_dirs is not None
        if bin_dirs is None:
            pg = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
            path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
            bin_dirs = pg + path + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"]
        seen: list[str] = []
        for d in bin_dirs:
            if d not in seen:
                seen.append(d)
        self.dirs = seen

    def find(self, program: str, *, prefer_dir: str | None = None) -> str | None:
        dirs = ([prefer_dir] if prefer_dir else []) + self.dirs
        for d in dirs:
            candidate = os.path.join(d, program)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return None

    def require(self, service: str, *programs: str, prefer_dir: str | None = None,
                package: str | None = None) -> dict[str, str]:
        found: dict[str, str] = {}
        missing: list[str] = []
        for p in programs:
            path = self.find(p, prefer_dir=prefer_dir)
            if path:
                found[p] = path
            else:
                missing.append(p)
        if missing:
            pkg = package or PACKAGES[service]
            where = "PROBATORIUM_SERVICE_BIN_DIRS" if self.explicit else "this host"
            raise ServiceUnavailable(
                service,
                f"service {service} unavailable: {', '.join(missing)} not found on {where}; "
                f"install the Debian package {pkg} (apt-get install {pkg}, or run scripts/install-debian-packages.sh)",
                package=pkg)
        return found


def service_user(service: str) -> pwd.struct_passwd | None:
    """The unprivileged account a service runs as when we are root, else None.

    ``PROBATORIUM_SERVICE_USER`` overrides; otherwise PostgreSQL runs as the
    ``postgres`` account of the Debian package and the others as ``nobody``
    (falling back to ``nobody`` / ``daemon`` when the first choice is absent).
    """
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("PROBATORIUM_SERVICE_USER")
    choices = [wanted] if wanted else (["postgres", "nobody", "daemon"] if service == "postgres"
                                       else ["nobody", "daemon"])
    for name in choices:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid != 0:
            return pw
    raise ServiceUnavailable(
        service, f"service {service} unavailable: running as root and no unprivileged account "
                 f"({', '.join(choices)}) exists to run it as; set PROBATORIUM_SERVICE_USER")


def _default_root() -> Path:
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"probatorium-services-{os.geteuid()}"


def prune_default_root() -> None:
    """Remove the default services root once it is empty (a configured root —
    PROBATORIUM_SERVICES_TMPDIR or root= — belongs to whoever configured it)."""
    if os.environ.get("PROBATORIUM_SERVICES_TMPDIR"):
        return
    try:
        os.rmdir(_default_root())
    except OSError:
        pass  # not empty (another run is using it) or already gone


def services_root(explicit: str | os.PathLike | None = None) -> Path:
    """The temp root of throw-away service directories, created safely (0711,
    ours, not a symlink) so an unprivileged service user can traverse it."""
    base = explicit or os.environ.get("PROBATORIUM_SERVICES_TMPDIR")
    root = Path(base) if base else _default_root()
    try:
        root.mkdir(mode=0o711, parents=True, exist_ok=True)
    except OSError as e:
        raise InfraError(f"cannot create the services directory {root}: {e}") from None
    st = os.lstat(root)
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise InfraError(f"services directory {root} is not a directory owned by us; refusing to use it")
    os.chmod(root, 0o711)
    return root


def remove_tree(path: str | os.PathLike) -> bool:
    """Remove a service directory we created (it carries MARKER). True if gone."""
    p = Path(path)
    if not p.exists():
        return True
    if not (p / MARKER).exists():
        return False
    shutil.rmtree(p, ignore_errors=True)
    if p.exists():  # a file appeared while removing (a dying server); once more
        shutil.rmtree(p, ignore_errors=True)
    return not p.exists()
