"""Real backing services (PostgreSQL, Redis, memcached) started by probatorium.

Each service is the real server from the host's Debian packages, run in a
throw-away directory on a free loopback port, tuned for tests, health-checked
with its own protocol, and always torn down (context manager, atexit, the
parent-death signal, and the manifest that ``cleanup`` replays). Targets learn
the addresses from ``DATABASE_URL``, ``REDIS_URL`` and ``MEMCACHED_ADDR``.

Knobs (environment):
  PROBATORIUM_STATE_DIR          where manifest.json lives (default ~/.cache/probatorium)
  PROBATORIUM_SERVICES_TMPDIR    root of the throw-away service directories
  PROBATORIUM_SERVICE_BIN_DIRS   search ONLY these dirs for server binaries
  PROBATORIUM_SERVICE_USER       the unprivileged account when running as root
"""

from probatorium.services.base import (
    ENV_VARS,
    PACKAGES,
    SERVICE_NAMES,
    ServiceInfo,
    ServiceStatus,
    ServiceUnavailable,
    normalise_names,
)
from probatorium.services.manager import (
    ServiceManager,
    cleanup_manifest,
    ensure_no_leftovers,
    recorded_status,
    stop_recorded,
)
from probatorium.services.manifest import Manifest, state_dir

__all__ = [
    "ENV_VARS",
    "PACKAGES",
    "SERVICE_NAMES",
    "Manifest",
    "ServiceInfo",
    "ServiceManager",
    "ServiceStatus",
    "ServiceUnavailable",
    "cleanup_manifest",
    "ensure_no_leftovers",
    "normalise_names",
    "recorded_status",
    "state_dir",
    "stop_recorded",
]
