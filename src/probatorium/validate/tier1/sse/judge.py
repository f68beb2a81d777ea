"""Pure I-CONN-2 judging from a series of debug-endpoint samples (no I/O here).

I-CONN-2 (HIGH): after clients reset their SSE streams, the server releases the
slots. Each sample is (t, sse_open, held): seconds since sampling started, the
server's `sse_open` from its debug endpoint (None when that poll failed), and
the streams the validator held open at that moment. A sample is in EXCESS when

    sse_open > held + 2 + 5 % of held

(+2 and +5 % absorb streams the validator just reset and the server has not
reaped yet). I-CONN-2 fails when excess lasts longer than the settle window
(10 s): from the first sample of an unbroken run of excess samples to the last.
A failed poll neither breaks nor extends a run. Zero valid samples is never a
pass: the result is then `not_judged`.
"""

from __future__ import annotations

from dataclasses import dataclass

SETTLE_WINDOW = 10.0  # seconds excess may last
SLACK_ABS = 2
SLACK_FRAC = 0.05


def allowed(held: int) -> float:
    """The most open streams the server may report while the validator holds `held`."""
    return held + SLACK_ABS + SLACK_FRAC * held


@dataclass
class Conn2Result:
    status: str  # passed | failed | not_judged
    evaluations: int  # valid samples judged
    reason: str
    excess_since: float | None = None  # start of the run of excess still open at the end of the series
    worst: tuple[float, int, int] | None = None  # (t, sse_open, held) with the largest excess in the failing run


def judge_series(samples: list[tuple[float, int | None, int]], *, settle_window: float = SETTLE_WINDOW,
                 final: bool = False) -> Conn2Result:
    """Judge a sample series. With final=False (online, during the run) a series that has not
    failed yet is `passed` so far; with final=True an excess run still open at the end that is
    shorter than the window cannot be decided and is `not_judged` (sampling ended too early)."""
    valid = [(t, o, h) for t, o, h in samples if o is not None]
    if not valid:
        return Conn2Result("not_judged", 0, "no debug-endpoint sample of sse_open was obtained")
    run_start: float | None = None
    run: list[tuple[float, int, int]] = []
    for t, o, h in valid:
        if o > allowed(h):
            if run_start is None:
                run_start, run = t, []
            run.append((t, o, h))
            if t - run_start > settle_window:
                worst = max(run, key=lambda s: s[1] - allowed(s[2]))
                return Conn2Result(
                    "failed", len(valid),
                    f"sse_open stayed above the allowance (held + {SLACK_ABS} + {int(SLACK_FRAC * 100)} %) for "
                    f"{t - run_start:.1f} s > {settle_window:.0f} s settle window (e.g. sse_open={worst[1]} "
                    f"while the validator held {worst[2]} at t={worst[0]:.1f} s)", run_start, worst)
        else:
            run_start, run = None, []
    if run_start is not None and final:
        return Conn2Result("not_judged", len(valid),
                           f"sse_open was still above the allowance at the end of sampling, for "
                           f"{valid[-1][0] - run_start:.1f} s (< the {settle_window:.0f} s settle window)",
                           run_start)
    return Conn2Result("passed", len(valid),
                       "sse_open never stayed above the allowance for longer than the settle window"
                       + (f" (excess since t={run_start:.1f} s, not yet decided)" if run_start is not None else ""),
                       run_start)


def sse_events(body: bytes) -> int:
    """Events dispatched in an SSE body so far: blocks ended by a blank line that carry a data field."""
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    n = 0
    for block in text.split(b"\n\n")[:-1]:  # the last piece is not terminated yet
        if any(line.startswith(b"data") for line in block.split(b"\n")):
            n += 1
    return n


def dechunk_prefix(data: bytes) -> bytes:
    """The payload of the complete chunks at the start of a (possibly unfinished) chunked body."""
    out, pos = bytearray(), 0
    while True:
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            break
        try:
            size = int(data[pos:nl].split(b";")[0].strip(), 16)
        except ValueError:
            break
        if size == 0 or len(data) < nl + 2 + size:
            break
        out += data[nl + 2:nl + 2 + size]
        pos = nl + 2 + size + 2
    return bytes(out)
