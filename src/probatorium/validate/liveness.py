"""Keeping the target up during a cell: connect probes, bounded restarts, crash attribution.

Walkers that find the target gone call :meth:`Liveness.recover`: the death is
snapshotted (crash.py narrows the suspects: the requests in flight), recorded
as I-LIVENESS, and the target restarted at most MAX_RESTARTS_PER_CELL times;
after a restart the suspects are replayed alone to confirm which request kills
it. Restarts go through :class:`~..targets.control.TargetControl` when one is
given, so they are planned (never an I-LIVENESS of their own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..errors import ProbatoriumError
from ..rawclient import can_connect
from ..results.store import write_json_atomic
from ..targets.control import TARGET, TargetControl
from .crash import MAX_CONFIRM_RESTARTS, CrashAttributor, CrashLog, crash_repro
from .incidents import Evidence, IncidentRecorder

MAX_RESTARTS_PER_CELL = 3
#: Longest a walker's recover() waits for a planned fault of the target to end (Tier 3 keeps
#: its faults far shorter); after that the target is treated as any dead target.
PLANNED_FAULT_WAIT_S = 60.0


class Liveness:
    """alive() / recover() for the walkers of one cell, and the crash dossier of its deaths."""

    def __init__(self, target: Any, recorder: IncidentRecorder, *, cell_seed: int, tally: dict[str, Any],
                 dossier_dir: Any, restart: Callable[[], None], pause: Callable[[], None],
                 resume: Callable[[], None], stop: Callable[[], bool], say: Callable[[str], None],
                 control: TargetControl | None = None) -> None:
        self.target = target
        self.control = control  # its fault windows: a planned kill is no death of ours to report
        self.recorder = recorder
        self.cell_seed = cell_seed
        self.tally = tally  # the cell's tier_1: target_restarts / crash_confirm_restarts go there
        self.dossier_dir = dossier_dir  # the cell folder (crash_attribution.json)
        self._restart, self._pause, self._resume = restart, pause, resume
        self.stop, self.say = stop, say
        self.restarts = 0
        self._lock = asyncio.Lock()
        self._last_dead = None
        self.crashlog = CrashLog() if target.pid is not None else None
        self.attributor: CrashAttributor | None = None
        if self.crashlog is not None:
            self.attributor = CrashAttributor(self.crashlog, target, on_change=self._crash_changed,
                                              pause=pause, resume=resume, stop=stop)

    def address(self) -> tuple[str, int]:
        """The target's current address (it changes when a restart had to take another port)."""
        return self.target.host, self.target.port

    async def alive(self) -> bool:
        """The process is up and the port accepts connections (three tries)."""
        if self.target.pid is not None and not self.target.alive():
            return False
        for _ in range(3):
            if await can_connect(self.target.host, self.target.port, 1.0):
                return True
            await asyncio.sleep(0.3)
        return False

    async def _crash_changed(self, att: CrashAttributor) -> None:
        await asyncio.to_thread(self.attach_crash_reproducer)

    def planned_down(self) -> bool:
        """Whether the target is down because of a planned fault (TargetControl's windows): the
        exit of the process a kill / term / restart was aimed at, or a fault still in force."""
        if self.control is None:
            return False
        windows = self.control.windows
        spawned = getattr(self.target, "spawned", None)
        return windows.is_open(TARGET) or windows.planned_death(TARGET, spawned.identity if spawned else None)

    def note_death(self) -> None:
        """The process is gone: snapshot the suspects, make sure I-LIVENESS is recorded (the
        watchdog polls every 2 s; a walker may notice and restart first). A planned death is neither."""
        att, target = self.attributor, self.target
        if att is None or target.alive() or target.process is self._last_dead:
            return  # alive, or this exit was already snapshotted (several walkers notice one death)
        self._last_dead = target.process
        if self.planned_down():
            return
        att.record_death()
        if not self.recorder.seen("I-LIVENESS"):
            self.recorder.record(Evidence(
                predicate="I-LIVENESS", seed=self.cell_seed,
                detail=f"{target.spec.describe()} (pid {target.pid}) exited (status {target.exit_code()}) "
                       "while wanted up (noticed by a walker)"))

    async def _restart_now(self, why: str) -> bool:
        self._pause()
        try:
            await asyncio.to_thread(self._restart)
            return True
        except ProbatoriumError as e:
            if self.attributor is not None:
                self.attributor.notes.append(f"{why} failed: {e}")
            return False
        finally:
            self._resume()

    async def recover(self) -> bool:
        """Bring a dead target back (bounded); True when it answers again."""
        async with self._lock:
            if await self._planned_fault_over():
                return True
            if await self.alive():
                return True
            self.note_death()
            att = self.attributor
            if self.target.pid is None or self.restarts >= MAX_RESTARTS_PER_CELL:
                if att is not None and att.deaths:
                    await self._crash_changed(att)  # unconfirmed: the suspects still go in the dossier
                return False
            self.restarts += 1
            self.tally["target_restarts"] = self.restarts
            self.say(f"  target died: restarting ({self.restarts}/{MAX_RESTARTS_PER_CELL})")
            if not await self._restart_now("restart"):
                return False
            if att is not None and self.crashlog is not None:
                self.crashlog.restart_window()
                if att.deaths and await self.alive():
                    await att.confirm()  # bounded; restarts the target if a replay kills it
                    self.tally["crash_confirm_restarts"] = att.confirm_restarts
            return await self.alive()

    async def _planned_fault_over(self) -> bool:
        """While a planned fault of the target lasts (bounded by PLANNED_FAULT_WAIT_S), wait for
        it instead of restarting: True when the target answers once the fault is over."""
        if self.control is None or not self.control.windows.is_open(TARGET):
            return False
        deadline = time.monotonic() + PLANNED_FAULT_WAIT_S
        while self.control.windows.is_open(TARGET) and time.monotonic() < deadline and not self.stop():
            await asyncio.sleep(0.2)
        return await self.alive()

    async def finish(self) -> None:
        """After the walkers: a target dead now (died in the last moments, or left down after the
        last restart) is snapshotted; an unconfirmed death gets one bounded confirmation round on a
        restarted target (counted in the confirmation restarts, never the walkers')."""
        att = self.attributor
        if att is None:
            return
        if not self.target.alive():
            self.note_death()
            if (att.confirmed is None and att.suspects() and not self.stop()
                    and att.confirm_restarts < MAX_CONFIRM_RESTARTS):
                att.confirm_restarts += 1
                self.say("  crash attribution: restarting the target to replay the suspects")
                if await self._restart_now("restart for the final confirmation") and await self.alive():
                    await att.confirm()
                self.tally["crash_confirm_restarts"] = att.confirm_restarts
        if att.deaths:
            await asyncio.to_thread(self.attach_crash_reproducer)

    def attach_crash_reproducer(self) -> None:
        """Write what crash attribution knows into the cell's I-LIVENESS incident (once it exists)."""
        att = self.attributor
        if att is None or not att.deaths:
            return
        requests = att.repro_requests()
        status = att.summary()
        addr = f"{self.target.host}:{self.target.port}"
        repro = crash_repro(requests, status=status, addr=addr, version=__version__) if requests else None
        sent = requests[0].raw_bytes() if att.confirmed is not None and requests else None
        inc = self.recorder.amend("I-LIVENESS", reproducer=status, details=att.to_json(), repro=repro, sent=sent)
        if inc is not None and att.confirmed is not None and att.confirmed.request is not None \
                and "killed by" not in inc.detail:
            inc.detail += (f"; killed by {att.confirmed.signature} ({att.confirmed.request.request}, "
                           "confirmed by replay)")
        write_json_atomic(self.dossier_dir / "crash_attribution.json", att.to_json())
