"""The end-of-cell drain check that decides whether a mid-run leak signal was a leak."""

from __future__ import annotations

from probatorium.validate.resources import drained_after_traffic


def series(values, start=0.0, segment=0):
    return [{"t": start + i, "fds": v, "tasks": v, "rss_bytes": 10_000_000, "segment": segment}
            for i, v in enumerate(values)]


def test_pile_up_that_drains_is_no_leak():
    traffic = series([8, 8, 9] + [40 + i % 20 for i in range(80)])
    settle = series([12, 9, 8, 8, 8, 8, 8, 8, 8, 8], start=83)
    assert "went back to 8" in drained_after_traffic("I-FD-1", traffic, settle)
    assert "went back to 8" in drained_after_traffic("I-TASK-1", traffic, settle)


def test_leak_stays_after_traffic_stops():
    traffic = series([8, 8, 9] + [10 + i for i in range(80)])
    settle = series([89] * 10, start=83)
    assert drained_after_traffic("I-FD-1", traffic, settle) == ""


def test_leak_above_a_pile_up_that_starts_high():
    # hypercorn h2c: ~1000 tasks in flight from the first seconds, leaked ones stay (984 of them)
    traffic = series([9, 9, 9] + [1000 + 10 * i for i in range(80)])
    settle = series([1500, 1200, 984, 984, 984, 984, 984, 984, 984, 984], start=83)
    assert drained_after_traffic("I-TASK-1", traffic, settle) == ""


def test_small_remainder_within_margin_counts_as_drained():
    traffic = series([8, 8, 8] + [60] * 80)
    settle = series([17] * 10, start=83)  # 9 above idle: under half a minute of a 20 fds/min leak
    assert drained_after_traffic("I-FD-1", traffic, settle)
    settle = series([19] * 10, start=83)  # 11 above: over the margin
    assert drained_after_traffic("I-FD-1", traffic, settle) == ""


def test_rss_is_never_excused_and_short_windows_cannot_tell():
    traffic = series([8, 8, 8] + [60] * 80)
    assert drained_after_traffic("I-MEM-1", traffic, series([8] * 10, start=83)) == ""
    assert drained_after_traffic("I-FD-1", traffic, series([8] * 3, start=83)) == ""  # no settle window
    assert drained_after_traffic("I-FD-1", [], series([8] * 10)) == ""


def test_idle_level_is_the_last_segments():
    # a restart: the new segment's idle level is what the settle is compared with
    traffic = series([8, 8, 8] + [300] * 20) + series([8, 8, 8] + [50] * 40, start=30, segment=1)
    settle = series([8] * 10, start=80, segment=1)
    assert drained_after_traffic("I-FD-1", traffic, settle)
