"""Targets: start (or reach) the server under test, watch it, stop it.

The one launcher every tier uses; see docs/contracts.md.
"""

from probatorium.targets.control import FaultWindow, FaultWindows, TargetControl
from probatorium.targets.engines import ENGINES, engine_argv, engine_versions, resolve_engine
from probatorium.targets.launcher import (
    RunningTarget,
    TargetSpec,
    running_targets,
    start_target,
    stop_all,
)
from probatorium.targets.refapps import list_refapps, refapp_app_target, refapp_dir
from probatorium.targets.safety import check_target_allowed, is_loopback_host
from probatorium.targets.watchdog import Watchdog, WatchEvent

__all__ = [
    "ENGINES",
    "FaultWindow",
    "FaultWindows",
    "RunningTarget",
    "TargetControl",
    "TargetSpec",
    "WatchEvent",
    "Watchdog",
    "check_target_allowed",
    "engine_argv",
    "engine_versions",
    "is_loopback_host",
    "list_refapps",
    "refapp_app_target",
    "refapp_dir",
    "resolve_engine",
    "running_targets",
    "start_target",
    "stop_all",
]
