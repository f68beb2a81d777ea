"""The Injector: starts one planned fault, holds it, reverts it, and says what really happened.

Process faults go through :class:`~probatorium.targets.TargetControl` (so each is a planned
window the watchdog, liveness and the resource sampler read); network faults through the
:class:`~probatorium.faults.proxy.FaultProxy`. A fault counts as ``applied`` only when it bit
something observable (docs/tier3.md, "Faults"): a signal delivered to the identified process and
its effect seen in /proc, a soft limit lowered with the open count measured, proxy connections or
bytes inside the window.

Blocking work (signals, waits on /proc, restarts that wait for readiness) runs in worker threads,
so the event loop — and the proxy on it — keeps relaying while a fault lasts.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from probatorium import procfs, procs
from probatorium.faults.netem import netem_unavailable
from probatorium.faults.proxy import FaultProxy
from probatorium.faults.spec import FAULT_KINDS, PROXY_KINDS, SERVICE_KINDS, FaultSpec, InjectedFault
from probatorium.hosts.netns import exec_prefix
from probatorium.services.base import SERVICE_NAMES
from probatorium.targets.control import TARGET, TargetControl

#: How long a signalled process gets to show its new state (stopped, dead) in /proc.
SIGNAL_SEEN_S = 5.0
#: Services whose acknowledged writes survive their own SIGKILL when started durably.
DURABLE_SERVICES = frozenset({"postgres", "redis"})
#: Decisions of the proxy kept in ``observed`` (a long jitter window draws one per chunk).
MAX_DECISIONS = 64
NETEM_NO_NAMESPACE = ("net-netem needs the target inside a network namespace (--driver netns): "
                      "netem is never applied to the host's own interfaces")


def durable(service: str, manager: Any = None) -> bool:
    """Whether ``service``'s acknowledged writes survive its SIGKILL + restart: postgres and redis
    when started durably (``ServiceManager(durable=True)``, what Tier 3 does); memcached never.
    Without ``manager`` the answer is for a durable start."""
    if service not in SERVICE_NAMES:
        raise KeyError(f"unknown service {service!r}")
    if manager is not None and not getattr(manager, "durable", False):
        return False
    return service in DURABLE_SERVICES


class Injector:
    """Injects :class:`FaultSpec` values on one cell's target, its services and its fault proxy."""

    def __init__(self, control: TargetControl, proxy: FaultProxy | None = None,
                 services: Iterable[str] = ()) -> None:
        self.control = control
        self.proxy = proxy
        self.services = tuple(services)
        self._kinds: dict[str, Callable[[FaultSpec, int], Awaitable[tuple[bool, dict[str, Any]]]]] = {
            "target-kill": self._kill, "target-term": self._term, "target-stop": self._stop,
            "fd-squeeze": self._squeeze, "service-kill": self._kill, "service-stop": self._stop,
            "net-netem": self._netem,
        }

    # -- what applies ------------------------------------------------------------------------

    def applies(self, kind: str, subject: str | None = None) -> str | None:
        """None when ``kind`` can be injected here, else the one-line reason it cannot."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind in PROXY_KINDS:
            return None if self.proxy is not None else "no fault proxy"
        if kind == "net-netem":
            return netem_unavailable() or (None if self._target_namespace() else NETEM_NO_NAMESPACE)
        if kind in SERVICE_KINDS:
            if not self.services or self.control.services is None:
                return "no backing service"
            if subject is not None and subject not in self.services:
                return f"no backing service {subject!r} (this cell has {', '.join(self.services)})"
            return None
        return self._target_reason(kind)

    def _target_reason(self, kind: str) -> str | None:
        target = self.control.target
        if target is None or getattr(target, "spawned", None) is None:
            return (getattr(target, "no_process_reason", None)
                    or "the target has no local process (a --url target cannot be signalled)")
        if kind == "fd-squeeze" and not hasattr(resource, "prlimit"):
            return "this platform has no prlimit"
        return None

    # -- injecting ---------------------------------------------------------------------------

    async def inject(self, spec: FaultSpec, seed: int) -> InjectedFault:
        """Start ``spec``'s fault, hold it ``duration_s``, revert it; what happened."""
        clock = self.control.windows.now
        started = clock()
        reason = self.applies(spec.kind, spec.subject if spec.kind in SERVICE_KINDS else None)
        if reason is not None:
            return InjectedFault(spec, started, clock(), False, reason, {})
        if spec.kind in PROXY_KINDS:
            applied, observed = await self._net(spec, seed)
        else:
            try:
                applied, observed = await self._kinds[spec.kind](spec, seed)
            except (ProcessLookupError, RuntimeError, KeyError) as exc:
                # nothing to aim at (the subject was down already): the fault did not happen
                applied, observed = False, {"error": str(exc)}
        return InjectedFault(spec, started, clock(), applied, "", observed)

    def _subject(self, spec: FaultSpec) -> str:
        return spec.subject if spec.kind in SERVICE_KINDS else TARGET

    async def _stop(self, spec: FaultSpec, seed: int) -> tuple[bool, dict[str, Any]]:
        """SIGSTOP for duration_s, then SIGCONT; applied once /proc shows the process stopped ('T')."""
        subject = self._subject(spec)
        window = await asyncio.to_thread(self.control.pause, subject)
        pid = window.pid
        try:
            stopped = await asyncio.to_thread(procs.wait_until, lambda: procfs.state(pid) == "T", SIGNAL_SEEN_S)
            observed: dict[str, Any] = {"pid": pid, "state_during": procfs.state(pid)}
            await asyncio.sleep(spec.duration_s)
        finally:
            await asyncio.to_thread(self.control.resume, subject)
        await asyncio.to_thread(procs.wait_until, lambda: procfs.state(pid) != "T", SIGNAL_SEEN_S)
        observed["state_after"] = procfs.state(pid)
        return stopped, observed

    async def _kill(self, spec: FaultSpec, seed: int) -> tuple[bool, dict[str, Any]]:
        """SIGKILL, wait for the death, stay down duration_s, restart; applied once the process died."""
        subject = self._subject(spec)
        window = await asyncio.to_thread(self.control.kill, subject)
        victim = procs.Identity(window.pid, window.start_ticks)
        died = await asyncio.to_thread(procs.wait_until, lambda: not victim.alive(), SIGNAL_SEEN_S)
        observed: dict[str, Any] = {"pid": victim.pid, "died": died, **await self._exit(subject)}
        await asyncio.sleep(spec.duration_s)
        observed.update(await self._restart(subject))
        return died, observed

    async def _term(self, spec: FaultSpec, seed: int) -> tuple[bool, dict[str, Any]]:
        """SIGTERM, a graceful drain within grace_s (then SIGKILL), down duration_s, restart.
        Applied once the process was signalled and is gone; ``observed`` says how it ended."""
        grace = spec.params["grace_s"]
        window = await asyncio.to_thread(self.control.term, TARGET)
        victim = procs.Identity(window.pid, window.start_ticks)
        t0 = time.monotonic()
        drained = await asyncio.to_thread(procs.wait_until, lambda: not victim.alive(), grace)
        observed: dict[str, Any] = {"pid": victim.pid, "grace_s": grace, "exited_within_grace": drained,
                                    "exit_after_s": round(time.monotonic() - t0, 3) if drained else None,
                                    "killed_after_grace": False}
        died = drained
        if not drained:  # it outlived its grace: what I-T3-DRAIN judges
            observed["killed_after_grace"] = True
            await asyncio.to_thread(self.control.kill, TARGET)
            died = await asyncio.to_thread(procs.wait_until, lambda: not victim.alive(), SIGNAL_SEEN_S)
        observed.update(await self._exit(TARGET))
        await asyncio.sleep(spec.duration_s)
        observed.update(await self._restart(TARGET))
        return died, observed

    async def _exit(self, subject: str) -> dict[str, Any]:
        """The dead target's exit status (negative: the signal), when the target can tell.

        Waited for briefly: /proc shows the death before the status can be collected, and a
        poll while another thread waits on the same process answers None."""
        exit_code = getattr(self.control.target, "exit_code", None)
        if subject != TARGET or not callable(exit_code):
            return {}
        await asyncio.to_thread(procs.wait_until, lambda: exit_code() is not None, SIGNAL_SEEN_S)
        return {"exit": exit_code()}

    async def _restart(self, subject: str) -> dict[str, Any]:
        """Restart the subject (through TargetControl); a failure is recorded, not raised: it is
        the run's to judge (I-T3-NO-RECOVERY)."""
        try:
            await asyncio.to_thread(self.control.restart, subject)
        except Exception as exc:  # noqa: BLE001 - a target that cannot come back is a finding, not a crash
            return {"restarted_pid": None, "restart_error": f"{type(exc).__name__}: {exc}"}
        identity = self.control.identity(subject)
        out: dict[str, Any] = {"restarted_pid": identity.pid if identity else None}
        if subject == TARGET:
            out["port_after"] = getattr(self.control.target, "port", None)
        return out

    async def _squeeze(self, spec: FaultSpec, seed: int) -> tuple[bool, dict[str, Any]]:
        """Soft RLIMIT_NOFILE = open + headroom for duration_s, then the old soft limit back;
        applied when the limit really went down (the open count was measured)."""
        window, measured = await asyncio.to_thread(self.control.squeeze_fds, TARGET, spec.params["headroom"])
        try:
            await asyncio.sleep(spec.duration_s)
        finally:
            measured.update(await asyncio.to_thread(self.control.release_fds, TARGET))
        before, during = measured.get("soft_before"), measured.get("soft_during")
        lowered = measured.get("open") is not None and during is not None and (before is None or during < before)
        return lowered, measured

    async def _net(self, spec: FaultSpec, seed: int) -> tuple[bool, dict[str, Any]]:
        """Through the proxy for duration_s; applied when it touched what its kind acts on."""
        assert self.proxy is not None
        handle = self.proxy.impair(spec.kind, spec.params, seed)
        try:
            await asyncio.sleep(spec.duration_s)
        finally:
            observed = self.proxy.clear(handle)
        observed["decisions"] = [list(d) for d in handle.decisions[:MAX_DECISIONS]]
        observed["decisions_total"] = len(handle.decisions)
        bit = {"net-reset": "connections_reset", "net-stall": "stalls", "net-halfclose": "halfclosed",
               "net-slice": "pieces", "net-bandwidth": "paced_bytes"}.get(spec.kind, "delayed_chunks")
        return observed.get(bit, 0) > 0, observed

    def _target_namespace(self) -> str | None:
        placement = getattr(self.control.target, "placement", None)
        return placement[0] if placement else None

    async def _netem(self, spec: FaultSpec, seed: int) -> tuple[bool, dict[str, Any]]:
        """``tc qdisc add dev eth0 root netem`` inside the target's namespace for duration_s, then removed."""
        namespace = self._target_namespace()
        if namespace is None:
            raise RuntimeError(NETEM_NO_NAMESPACE)  # applies() already says so
        delay, loss = float(spec.params.get("delay_ms", 0.0)), float(spec.params.get("loss_pct", 0.0))
        qdisc = [*exec_prefix(namespace), "tc", "qdisc"]
        added = await asyncio.to_thread(subprocess.run, [*qdisc, "add", "dev", "eth0", "root", "netem",
                                                         "delay", f"{delay:g}ms", "loss", f"{loss:g}%"],
                                        capture_output=True, text=True, timeout=10)
        observed: dict[str, Any] = {"namespace": namespace, "delay_ms": delay, "loss_pct": loss}
        if added.returncode != 0:
            return False, {**observed, "error": added.stderr.strip()}
        try:
            await asyncio.sleep(spec.duration_s)
        finally:
            await asyncio.to_thread(subprocess.run, [*qdisc, "del", "dev", "eth0", "root"],
                                    capture_output=True, timeout=10)
        return True, observed
