"""probatorium soak: the state, the merge of the rounds, resume, hourly rows and the clean stretch.

Pure unit tests on documents written to tmp_path (the end-to-end kill/resume is
tests/e2e/test_soak_resume.py).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.results.schema import Cell, Incident, ValidateDocument, ValidationResults
from probatorium.results.store import write_json_atomic
from probatorium.validate import soak as S

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def incident(cell: str, n: int, at: float, severity: str = "HIGH", predicate: str = "I-ADV-ACCEPTED") -> Incident:
    return Incident(predicate=predicate, severity=severity, refapp="cmd", engine="cmd", arch="amd64", cell=cell,
                    first_seen=iso(at), dossier=f"{cell}/incidents/x-{n:03d}-{predicate}",
                    reproducer=f"python3 {cell}/incidents/x-{n:03d}-{predicate}/repro.py")


def round_doc(folder: Path, cells: list[Cell], partial: bool = False) -> None:
    doc = ValidateDocument(host_arch_pair="h-amd64", kind="single", probatorium_version="0", partial=partial,
                           validation_results=ValidationResults(started_at=iso(0), cells=cells),
                           incidents=[i for c in cells for i in c.incidents])
    write_json_atomic(folder / "validate-results.json", doc)


def cell(incidents: list[Incident], requests: int = 100, partial: bool = False) -> Cell:
    return Cell(refapp="cmd", engine="cmd", arch="amd64", status="failed" if incidents else "ok",
                folder="cell-01-cmd-cmd", tier_1={"requests_sent": requests}, incidents=incidents, partial=partial)


def state_with(rounds: list[dict], duration: float = 30.0, every: float = 10.0) -> dict:
    st = S.new_state(duration, every, 7, ["--cmd", "x"])
    st["started_at"] = iso(0)
    st["rounds"] = rounds
    return st


def rnd(index: int, offset: float, start: float, seconds: float, status: str = "done", planned: float = 10.0) -> dict:
    return {"index": index, "folder": f"round-{index:03d}", "status": status, "planned_s": planned,
            "soak_offset_s": offset, "started_at": iso(start), "last_seen": iso(start + seconds),
            "seconds": seconds, "exit_code": 1}


def test_rounds_are_the_checkpoint_interval_and_the_last_is_shortened():
    st = state_with([])
    assert S.next_round_s(st) == 10.0
    st["rounds"] = [rnd(1, 0, 0, 10.0), rnd(2, 10, 10, 10.0)]
    assert S.next_round_s(st) == 10.0
    st["rounds"].append(rnd(3, 20, 20, 3.0, planned=3.0))
    assert S.next_round_s(st) == 7.0  # 30 - 23, no overhead measured (every round ended on time)
    st["rounds"][-1]["seconds"] = 8.0
    assert S.next_round_s(st) == 0.0  # 2 s left: below a round's minimum


def test_last_round_budget_leaves_room_for_the_measured_overhead():
    st = state_with([rnd(1, 0, 0, 14.0), rnd(2, 14, 14, 14.0)], duration=60.0)
    assert S.round_overhead_s(st) == 4.0
    assert S.next_round_s(st) == 10.0
    st["rounds"].append(rnd(3, 28, 28, 24.0))  # 8 s left, overhead 4 (median 4): a 5 s round ends at 61 s
    assert S.next_round_s(st) == 5.0
    st["rounds"][-1]["seconds"] = 28.0  # 4 s left: stop
    assert S.next_round_s(st) == 0.0


def test_new_state_refuses_bad_values():
    with pytest.raises(UsageError):
        S.new_state(0, 60, 1, [])
    with pytest.raises(UsageError):
        S.new_state(60, 1, 1, [])
    with pytest.raises(UsageError, match="sets --force"):
        S.check_validate_args(["--cmd", "x", "--force"])


def test_killed_round_counts_to_its_last_checkpoint_or_heartbeat(tmp_path):
    r = rnd(2, 10, 10, 0.0, status="running")
    r["last_seen"] = iso(14)
    folder = tmp_path / "round-002"
    round_doc(folder, [cell([])], partial=True)
    doc = folder / "validate-results.json"
    when = (T0 + timedelta(seconds=16)).timestamp()
    os.utime(doc, (when, when))
    st = state_with([rnd(1, 0, 0, 10.0), r])
    S.adopt_killed_rounds(st, tmp_path)
    assert r["status"] == "killed" and r["seconds"] == 6.0  # the checkpoint at 16 s is later than the heartbeat
    assert S.spent_s(st) == 16.0
    assert S.killed_round_seconds({"started_at": iso(0), "last_seen": iso(10_000), "planned_s": 10}, None) == 195.0


def test_merge_keeps_every_cell_and_each_incident_once(tmp_path):
    a = [incident("cell-01-cmd-cmd", 1, 2), incident("cell-01-cmd-cmd", 2, 4, "LOW")]
    round_doc(tmp_path / "round-001", [cell(a)])
    b = [incident("cell-01-cmd-cmd", 1, 12)]  # the same dossier name in another round is another incident
    round_doc(tmp_path / "round-002", [cell(b, partial=True)], partial=True)
    st = state_with([rnd(1, 0, 0, 10.0), rnd(2, 10, 10, 5.0, status="killed")])
    doc = S.write_all(st, tmp_path)
    assert [c.folder for c in doc.validation_results.cells] == ["round-001/cell-01-cmd-cmd",
                                                               "round-002/cell-01-cmd-cmd"]
    dossiers = [i.dossier for i in doc.incidents]
    assert len(dossiers) == 3 == len(set(dossiers))
    assert all(d.startswith("round-00") for d in dossiers)
    assert doc.incidents[0].reproducer.startswith("python3 round-001/cell-01-cmd-cmd/incidents/")
    again = S.write_all(st, tmp_path)  # rewriting changes nothing
    assert [i.dossier for i in again.incidents] == dossiers
    on_disk = json.loads((tmp_path / "validate-results.json").read_text())
    assert on_disk["schema_version"] == "5.1" and on_disk["partial"] is True and len(on_disk["incidents"]) == 3


def test_killed_round_dossiers_and_cells_past_its_last_checkpoint_are_kept(tmp_path):
    folder = tmp_path / "round-001"
    round_doc(folder, [], partial=True)  # killed before the cell's first checkpoint
    inc = incident("cell-01-cmd-uvicorn-h11", 1, 3)
    write_json_atomic(folder / inc.dossier / "incident.json", {**inc.model_dump(mode="json"), "seed": 12345})
    (folder / "cell-02-kitchen_sink-uvicorn-h11").mkdir()
    st = state_with([rnd(1, 0, 0, 6.0, status="killed")])
    doc = S.write_all(st, tmp_path)
    cells = {c.folder: c for c in doc.validation_results.cells}
    assert set(cells) == {"round-001/cell-01-cmd-uvicorn-h11", "round-001/cell-02-kitchen_sink-uvicorn-h11"}
    first = cells["round-001/cell-01-cmd-uvicorn-h11"]
    assert first.status == "failed" and first.partial and len(first.incidents) == 1
    second = cells["round-001/cell-02-kitchen_sink-uvicorn-h11"]
    assert (second.refapp, second.engine, second.status) == ("kitchen_sink", "uvicorn-h11", "not_run")
    assert [i.dossier for i in doc.incidents] == ["round-001/" + inc.dossier]
    assert S.soak_exit_code(st, doc, False) == 1


def test_soak_time_skips_the_gap_between_kill_and_resume():
    # round 1 ran 0–10 s of soak time; killed; resumed 1000 s later as round 2 (soak time 10–20 s)
    st = state_with([rnd(1, 0, 0, 10.0, status="killed"), rnd(2, 10, 1010, 10.0)])
    assert S.soak_time(st, iso(4)) == 4.0
    assert S.soak_time(st, iso(1013)) == 13.0
    assert S.soak_time(st, iso(500)) is None


def test_clean_stretch():
    assert S.clean_stretch(100.0, []) == {"start_s": 0.0, "end_s": 100.0, "seconds": 100.0, "high_incidents": 0}
    got = S.clean_stretch(100.0, [10.0, 30.0, 90.0])
    assert (got["start_s"], got["end_s"], got["seconds"], got["high_incidents"]) == (30.0, 90.0, 60.0, 3)


def test_hourly_rows_split_requests_and_incidents_by_soak_hour(tmp_path):
    # two rounds of 1 h each (3600 s), the second resumed after a gap; 3000 + 6000 requests
    round_doc(tmp_path / "round-001", [cell([incident("cell-01-cmd-cmd", 1, 100)], requests=3000)])
    round_doc(tmp_path / "round-002", [cell([incident("cell-01-cmd-cmd", 1, 9000 + 1800, "MED", "I-X")],
                                            requests=6000)])
    st = state_with([rnd(1, 0, 0, 3600.0, planned=3600), rnd(2, 3600, 9000, 1800.0, planned=3600)],
                    duration=5400, every=3600)
    S.write_all(st, tmp_path)
    rows = st["summary"]["hourly"]
    assert [r["hour"] for r in rows] == [0, 1]
    assert [r["requests"] for r in rows] == [3000, 6000]
    assert rows[0]["incidents"]["HIGH"] == 1 and rows[1]["incidents"]["MED"] == 1
    clean = st["summary"]["longest_clean_stretch"]
    assert (clean["start_s"], clean["end_s"]) == (100.0, 5400.0)
    table = S.hourly_rows(st)
    assert [row[:6] for row in table] == [("0", "0m00s–1h00m00s", "3000", "1", "0", "0"),
                                          ("1", "1h00m00s–1h30m00s", "6000", "0", "1", "0")]


def test_series_slopes_of_a_leaking_series():
    samples = [{"t": float(t), "rss_bytes": 1_000_000 + 1000 * t, "fds": 10, "tasks": 3, "segment": 0}
               for t in range(0, 120, 2)]
    got = S.series_slopes(samples)
    assert got["I-MEM-1"] == pytest.approx(60_000.0)  # 1000 bytes/s
    assert got["I-FD-1"] == 0.0 and got["I-TASK-1"] == 0.0
    assert S.series_slopes(samples[:2]) == {}


def test_resume_refuses_what_is_not_a_resumable_soak(tmp_path):
    with pytest.raises(UsageError, match="no soak.json"):
        S.load_state(tmp_path)
    (tmp_path / "soak.json").write_text("{nope")
    with pytest.raises(UsageError, match="unreadable"):
        S.load_state(tmp_path)
    (tmp_path / "soak.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(UsageError, match="not a soak/1"):
        S.load_state(tmp_path)
    with pytest.raises(UsageError, match="already finished"):
        S.check_resumable({**state_with([]), "finished": True})


def test_parallel_round_children_and_their_merge(tmp_path):
    st = S.new_state(60, 10, 7, ["--matrix", "--refapps", "kitchen_sink,auth_jwt_csrf", "--engines=uvicorn",
                                 "--slices", "adversarial"], cells=[("kitchen_sink", "uvicorn"),
                                                                    ("auth_jwt_csrf", "uvicorn")])
    assert S.strip_matrix_flags(st["validate_args"]) == ["--slices", "adversarial"]
    r = {**rnd(1, 0, 0, 10.0), "parts": ["part-01-kitchen_sink-uvicorn", "part-02-auth_jwt_csrf-uvicorn"]}
    st["rounds"] = [r]
    argvs = S.SoakRunner(tmp_path, st, python="py").round_argvs(r)
    assert [f for f, _ in argvs] == ["round-001/part-01-kitchen_sink-uvicorn",
                                     "round-001/part-02-auth_jwt_csrf-uvicorn"]
    first, second = (a for _, a in argvs)
    assert first[first.index("--cells") + 1] == "kitchen_sink:uvicorn" and "--matrix" not in first
    assert second[second.index("--cells") + 1] == "auth_jwt_csrf:uvicorn"
    assert first[first.index("--seed") + 1] != second[second.index("--seed") + 1]
    for folder, _ in argvs:
        round_doc(tmp_path / folder, [cell([incident("cell-01-cmd-cmd", 1, 3)])])
    doc = S.write_all(st, tmp_path)
    assert [c.folder for c in doc.validation_results.cells] == [f"{f}/cell-01-cmd-cmd" for f, _ in argvs]
    assert len({i.dossier for i in doc.incidents}) == 2 == len(doc.incidents)
    assert st["summary"]["incidents_by_severity"] == {"HIGH": 2}


def test_round_exit_from_its_children():
    assert S.combine_exit_codes([0, 0]) == 0
    assert S.combine_exit_codes([0, 2, 1]) == 1
    assert S.combine_exit_codes([0, -9]) == 2
    assert S.combine_exit_codes([]) == 2


@pytest.mark.parametrize("args,needle", [
    (["soak", "--refapp", "kitchen_sink"], "soak needs --duration"),
    (["soak", "-d", "1m", "--refapp", "kitchen_sink", "--engine", "nope"], "unknown engine 'nope'"),
    (["soak", "--resume", "/nonexistent-soak"], "no soak.json"),
])
def test_bad_soak_input_is_one_error_line(tmp_path, args, needle):
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    env = {k: v for k, v in os.environ.items() if k != "SOAK_DURATION"}
    r = subprocess.run([sys.executable, "-m", "probatorium.cli", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env={**env, "PYTHONPATH": str(src)})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("probatorium: error: "), r.stderr
    assert needle in lines[0] and not list(tmp_path.iterdir())  # nothing started, no folder written
