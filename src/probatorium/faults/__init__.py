"""Tier 3's faults: the kinds as data, the seeded user-space fault proxy, and the Injector.

A drivers-layer package: it acts on targets (through ``TargetControl``), services and sockets, and
never reads the validation core. Tier 3's plans, runner and invariants are built on top of it.
See docs/tier3.md, "Faults", for each kind, its parameters and what counts as injected.
"""

from probatorium.faults.injector import DURABLE_SERVICES, Injector, durable
from probatorium.faults.netem import netem_unavailable
from probatorium.faults.proxy import FaultProxy, Impairment
from probatorium.faults.spec import (
    DIRECTIONS,
    FAULT_KINDS,
    PARAMS,
    PROCESS_KINDS,
    PROXY_KINDS,
    SERVICE_KINDS,
    FaultSpec,
    InjectedFault,
    check_params,
)

__all__ = [
    "DIRECTIONS",
    "DURABLE_SERVICES",
    "FAULT_KINDS",
    "PARAMS",
    "PROCESS_KINDS",
    "PROXY_KINDS",
    "SERVICE_KINDS",
    "FaultProxy",
    "FaultSpec",
    "Impairment",
    "InjectedFault",
    "Injector",
    "check_params",
    "durable",
    "netem_unavailable",
]
