"""The progress reporter: ETA arithmetic, modes, and what each mode writes (a fake clock, no sleeping)."""

from __future__ import annotations

import io

import pytest

from probatorium.progress import (NullProgress, Progress, Snapshot, eta_s, fmt_counts, fmt_duration,
                                  progress_mode, reporter_of, status_text)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fmt_duration():
    assert [fmt_duration(x) for x in (0, 42, 60, 185, 3720, None)] == ["0s", "42s", "1m00s", "3m05s", "1h02m", "?"]


def test_eta_planned_units_scaled_by_what_finished_units_took():
    # nothing finished yet: the plan as it stands (20 s of the first unit spent)
    assert eta_s([60, 60, 60], [None, None, None], 0, 20.0) == pytest.approx(160.0)
    # the first 60 s cell took 66 s (start-up, settle): the rest is scaled by 1.1
    assert eta_s([60, 60, 60], [66, None, None], 1, 6.0) == pytest.approx(66 - 6 + 66)
    # a running unit past its (scaled) plan adds nothing, never a negative
    assert eta_s([10, 10], [10, None], 1, 30.0) == 0.0
    assert eta_s([10, 10], [10, 10], None, 0.0) == 0.0


def test_eta_skipped_units_cost_nothing_and_do_not_skew_the_ratio():
    assert eta_s([60, 60, 60], [0.0, 60, None], 2, 0.0) == pytest.approx(60.0)


def test_eta_without_plans_uses_the_mean_of_finished_units():
    assert eta_s([None] * 4, [None] * 4, 0, 5.0) is None  # nothing tells yet
    assert eta_s([None] * 4, [10, 30, None, None], 2, 5.0) == pytest.approx(20 + 15)


def test_progress_mode():
    tty, pipe = Tty(), io.StringIO()
    assert progress_mode(tty, {}) == "live"
    assert progress_mode(pipe, {}) == "lines"
    assert progress_mode(tty, {"CI": "true"}) == "lines"
    assert progress_mode(tty, {"PROBATORIUM_PROGRESS": "0"}) == "off"
    assert progress_mode(pipe, {"CI": "true"}, quiet=True) == "off"


def test_status_text_and_counts():
    s = Snapshot(command="validate", noun="cell", index=1, total=3, label="app/uvicorn", sub="tier 3 seed 4/30",
                 elapsed_s=60, eta_s=90, counts={"requests": 12345, "incidents": 1})
    assert status_text(s) == ("validate · cell 2/3 app/uvicorn · tier 3 seed 4/30 · 1m00s elapsed · ~1m30s left"
                              " · 12,345 requests · 1 incident")
    assert fmt_counts({"incidents": 0}) == "0 incidents"
    assert "time left unknown" in status_text(Snapshot("bench", "cell", 0, 2))


def test_lines_mode_end_lines_and_one_heartbeat_per_30s():
    clock, out = Clock(), io.StringIO()
    p = Progress("validate", mode="lines", stream=out, clock=clock)
    p.plan([60, 60])
    p.start("a/uvicorn")
    for _ in range(29):  # 29 s of ticks: no heartbeat yet
        clock.t += 1
        p.tick()
    assert out.getvalue() == ""
    clock.t += 1
    p.counts(requests=500, incidents=0)
    p.tick()
    clock.t += 1
    p.tick()  # 1 s later: nothing
    lines = out.getvalue().splitlines()
    assert lines == ["progress: validate · cell 1/2 a/uvicorn · 30s elapsed · ~1m30s left · 500 requests · 0 incidents"]
    clock.t += 35
    p.finish("ok")
    assert out.getvalue().splitlines()[-1] == "progress: cell 1/2 done (ok) in 1m06s · 1m06s elapsed · ~1m06s left"
    p.start("b/hypercorn")
    p.finish("failed", announce=False)  # the caller prints its own end line
    assert len(out.getvalue().splitlines()) == 2


def test_live_mode_redraws_one_line_and_messages_scroll_above_it():
    clock, out = Clock(), Tty()
    p = Progress("bench", mode="live", stream=out, clock=clock, width=lambda: 40)
    p.plan([None, None], noun="cell")
    p.start("granian / plaintext")
    p.tick()
    p.tick()
    p("[01] granian / plaintext")
    text = out.getvalue()
    assert "\n" not in text.split("[01]")[0]  # the status line was redrawn in place
    assert text.count("\r\x1b[2K") == 2 and "[01] granian / plaintext\n" in text
    assert all(len(seg) <= 39 for seg in text.replace("\n", "\r\x1b[2K").split("\r\x1b[2K"))  # never wraps
    p.close()
    assert out.getvalue().endswith("\r\x1b[2K")  # the live line is taken away at the end


def test_off_mode_prints_messages_only():
    clock, out = Clock(), Tty()
    p = Progress("fuzz", mode="off", stream=out, clock=clock)
    p.plan([60])
    p.start("x")
    clock.t += 100
    p.tick()
    p.finish("ok")
    p("a message")
    assert out.getvalue() == "a message\n"


def test_more_units_than_planned_grow_the_plan_and_null_progress_drops_everything():
    p = Progress("replay", mode="off", stream=io.StringIO(), clock=Clock())
    p.plan([], noun="attempt")
    p.start()
    p.finish()
    p.start()
    assert p.snapshot().total == 2 and p.snapshot().index == 1
    assert isinstance(reporter_of(p), Progress) and isinstance(reporter_of(print), NullProgress)
    null = reporter_of(None)
    null.plan([1]), null.start("x"), null.sub("y"), null.counts(requests=1), null.finish(), null.close()


def test_ticker_thread_starts_and_stops():
    out = io.StringIO()
    with Progress("validate", mode="lines", stream=out) as p:
        assert p._thread is not None and p._thread.is_alive()
    assert p._thread is None and out.getvalue() == ""


def test_live_requests_reads_what_each_tier_already_counts():
    from probatorium.validate.cell import live_requests

    assert live_requests("tier_1", {"requests_sent": 7, "requests": 99}) == 7
    assert live_requests("tier_2", {"requests": 5}) == 5 and live_requests("tier_3", {}) == 0
    assert live_requests("tier_1", {"requests_sent": "?"}) == 0


def test_a_unit_that_knows_its_time_left_overrides_its_plan():
    assert eta_s([60, 60], [None, None], 0, 59.0, current_left_s=100.0) == pytest.approx(160.0)
    assert eta_s([None, None], [None, None], 0, 5.0, current_left_s=10.0) == pytest.approx(10.0)
    clock = Clock()
    p = Progress("validate", mode="off", stream=io.StringIO(), clock=clock)
    p.plan([30])
    p.start("kv/cmd")
    clock.t += 40  # past its budget: explicit Tier 3 seeds run on
    assert p.snapshot().eta_s == 0.0
    p.unit_left(50.0)  # 5 seeds left x 10 s
    clock.t += 20
    assert p.snapshot().eta_s == pytest.approx(30.0)
    p.finish()
    p.start("next")  # a new unit forgets the old one's estimate
    assert p.snapshot().eta_s == pytest.approx(60.0)  # the mean of the finished unit, no leftover hint
