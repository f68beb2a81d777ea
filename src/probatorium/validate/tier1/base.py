"""The protocol every Tier 1 slice implements, and the context the runner hands it.

A slice is a named unit of walkers (SPEC.md §5): it is built from a
:class:`SliceContext`, says in ``prepare()`` why it cannot run (or nothing),
runs any number of ``walker()`` coroutines until the deadline, settles in
``finish()``, and reports counters, the rfc framing tally, evidence for the
catalogue's judges and per-case detail for ``tier1_tally.json``. It never
judges a property itself: the invariant catalogue does. Slices are
registered in :mod:`.registry`; nothing else names them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from ...seeds import derive_seed


@dataclass(frozen=True)
class ContractPaths:
    """The target's contract paths (docs/contracts.md), as the user set them."""

    echo: str = "/echo"
    health: str = "/healthz"
    debug: str = "/debug/vars"
    ws: str = "/ws"
    sse: str = "/events"


@dataclass
class SliceContext:
    """What the runner gives every slice of one cell.

    ``address()`` is the target's current (host, port): it follows restarts, so a
    slice reads it for every connection instead of keeping a copy.
    """

    address: Callable[[], tuple[str, int]]
    cell_seed: int
    paths: ContractPaths = field(default_factory=ContractPaths)
    report: Callable[[Any], Any] = lambda ev: None  # Evidence → Incident | None
    alive: Callable[[], Awaitable[bool]] | None = None  # is the target up (connect probe)?
    recover: Callable[[], Awaitable[bool]] | None = None  # bring a dead target back (bounded restarts)
    quiet_timeout: float = 3.0
    openapi: Path | None = None
    markov: Path | None = None
    crashlog: Any = None  # crash.CrashLog: requests in flight, for crash attribution
    # the target process's identity now (pid + start time; None: no local process): a change
    # across one exchange means the target died (and was restarted) while it ran
    identity: Callable[[], Any] | None = None
    streams: Any = None  # held.HeldStreams: streams the validator holds open on the SSE path
    say: Callable[[str], None] = lambda msg: None
    slowloris_connections: int = 200  # the adversarial slow-client phase's K (--slowloris-connections)

    def seed(self, name: str) -> int:
        """The slice's own seed, derived from the cell seed (a run is reproducible)."""
        return derive_seed(self.cell_seed, name)

    @cached_property
    def operations(self) -> list:
        """The OpenAPI operations of the target ([] without a document)."""
        if self.openapi is None or not Path(self.openapi).is_file():
            return []
        from ..openapi import load_operations

        return load_operations(self.openapi)


class Slice(Protocol):
    """What the runner calls on a slice (see the module docstring)."""

    name: str
    stopped_reason: str
    internal_errors: list[str]
    rfc: Any  # Counter: responses_checked, rfc1_violations, rfc2_violations

    async def prepare(self) -> str | None: ...
    async def walker(self, walker_id: int, deadline: float, stop: Callable[[], bool]) -> None: ...
    async def finish(self) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def evidence(self) -> dict[str, Any]: ...
    def detail(self) -> dict[str, Any]: ...


class SliceBase:
    """Defaults of the protocol and the target address that follows restarts.

    ``host`` / ``port`` / ``host_header`` read the address source on every use
    once :meth:`follow` was called; before that (a slice built by hand in a
    test) they are the values given to the constructor.
    """

    _address: Callable[[], tuple[str, int]] | None = None
    _host: str = "127.0.0.1"
    _port: int = 0
    stopped_reason: str = ""

    def follow(self, address: Callable[[], tuple[str, int]]) -> None:
        """Read host and port from ``address()`` from now on."""
        self._address = address

    @property
    def host(self) -> str:
        return self._address()[0] if self._address else self._host

    @host.setter
    def host(self, value: str) -> None:
        self._host = value

    @property
    def port(self) -> int:
        return self._address()[1] if self._address else self._port

    @port.setter
    def port(self, value: int) -> None:
        self._port = value

    @property
    def host_header(self) -> str:
        """Host header value for the current address (bracketed IPv6)."""
        host, port = self._address() if self._address else (self._host, self._port)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def prepare(self) -> str | None:
        """Why the slice cannot run on this target, or None."""
        return None

    async def finish(self) -> None:
        """Settle after the walkers ended (default: nothing to settle)."""

    def evidence(self) -> dict[str, Any]:
        """What the catalogue's judges read besides the counters (default: nothing)."""
        return {}

    def detail(self) -> dict[str, Any]:
        """Per-case detail for tier1_tally.json."""
        out: dict[str, Any] = {"stopped_reason": self.stopped_reason}
        breakdown = getattr(self, "case_breakdown", None)
        if callable(breakdown):
            out["cases"] = breakdown()
        return out
