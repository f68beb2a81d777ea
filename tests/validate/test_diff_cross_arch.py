"""validate-diff across arches, as the multi-host drivers leave it: one stored 5.1 matrix document per host.

server-a (amd64) and server-b (aarch64) ran the same refapp x engine cells; one property
failed on aarch64 only. The diff must call that a cross-arch divergence, and
`validate-diff` with no arguments must compare the newest document of each host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from probatorium.results import (Cell, PropertyResult, ValidateDocument, ValidationResults, cell_folder_name,
                                 run_folder, write_json_atomic)
from probatorium.results.store import newest_matrix_documents
from probatorium.validate.diff import compute_diff, diff_exit_code, load_documents

SRC = Path(__file__).resolve().parents[2] / "src"
REFAPP = "auth_session_ratelimit"
ENGINES = ("uvicorn", "hypercorn")
T0 = datetime(2026, 12, 4, 1, 0, 0, tzinfo=timezone.utc)
PROPS = ("I-ADV-ACCEPTED", "I-ADV-HANG", "I-WS-ACCEPTED", "I-WS-HANG")


def matrix_cell(index: int, engine: str, arch: str, failed: str | None = None) -> Cell:
    """One ok cell; `failed` names the one property that failed in it (its HIGH counter set)."""
    adversarial = {"adv_sent": 200, "adv_wrong_accepted": 2 if failed == "I-ADV-ACCEPTED" else 0,
                   "adv_hang_until_timeout": 0}
    properties = {p: PropertyResult(status="failed" if p == failed else "passed", evaluations=1) for p in PROPS}
    return Cell(refapp=REFAPP, engine=engine, arch=arch, status="ok", folder=cell_folder_name(index, REFAPP, engine),
                tier_1={"requests_sent": 1000, "requests_2xx": 990, "adversarial": adversarial,
                        "ws_torture": {"ws_sent": 10, "ws_accepted_bad_frame": 0, "ws_hang_no_close": 0}},
                properties=properties)


def store_matrix(root: Path, host: str, arch: str, when: datetime, failed: dict[str, str] | None = None) -> Path:
    """A ``<ts>-validate-matrix-<host>-<arch>`` folder as a host's run writes it; `failed`: engine -> property."""
    folder = run_folder(root, "validate-matrix", f"{host}-{arch}", now=when)
    cells = [matrix_cell(i + 1, e, arch, (failed or {}).get(e)) for i, e in enumerate(ENGINES)]
    doc = ValidateDocument(host_arch_pair=f"{host}-{arch}", kind="matrix", probatorium_version="0.1.0",
                           validation_results=ValidationResults(started_at=when.isoformat(), cells=cells))
    write_json_atomic(folder / "validate-results.json", doc)
    return folder / "validate-results.json"


def test_a_property_failed_on_one_arch_only_is_a_cross_arch_divergence(tmp_path: Path):
    amd = store_matrix(tmp_path, "server-a", "amd64", T0)
    arm = store_matrix(tmp_path, "server-b", "aarch64", T0, failed={"uvicorn": "I-ADV-ACCEPTED"})
    diff = compute_diff(load_documents([amd, arm]))
    assert [d["host_arch_pair"] for d in diff["documents"]] == ["server-a-amd64", "server-b-aarch64"]
    cross_arch = [f for f in diff["findings"] if f["kind"] == "cross-arch"]
    assert [(f["predicate"], f["refapp"], f["engine"]) for f in cross_arch] == [("I-ADV-ACCEPTED", REFAPP, "uvicorn")]
    [finding] = cross_arch
    assert finding["severity"] == "HIGH"
    assert [b["label"] for b in finding["bad"]] == ["server-b-aarch64"]
    assert [g["label"] for g in finding["good"]] == ["server-a-amd64"]
    # within aarch64 the same failure also splits the engines; amd64 has nothing to report
    assert [(f["arch"], f["predicate"]) for f in diff["findings"] if f["kind"] == "cross-engine"] == [
        ("aarch64", "I-ADV-ACCEPTED")]
    assert diff_exit_code(diff) == 1


def test_validate_diff_without_arguments_takes_each_hosts_newest_document(tmp_path: Path):
    root = tmp_path / "results"
    # server-a's older run failed on hypercorn; its newest run is clean and must be the one compared
    store_matrix(root, "server-a", "amd64", T0, failed={"hypercorn": "I-ADV-ACCEPTED"})
    newest_a = store_matrix(root, "server-a", "amd64", T0 + timedelta(hours=1))
    newest_b = store_matrix(root, "server-b", "aarch64", T0 + timedelta(minutes=30), failed={"uvicorn": "I-ADV-ACCEPTED"})
    assert newest_matrix_documents(root) == [newest_a, newest_b]
    out = tmp_path / "diff"
    done = subprocess.run([sys.executable, "-m", "probatorium.cli", "validate-diff", "--results-dir", str(root),
                           "--out", str(out)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 1, done.stderr
    data = json.loads((out / "diff.json").read_text())
    assert [d["path"] for d in data["documents"]] == [str(newest_a), str(newest_b)]
    cross_arch = [(f["engine"], [b["label"] for b in f["bad"]]) for f in data["findings"] if f["kind"] == "cross-arch"]
    assert cross_arch == [("uvicorn", ["server-b-aarch64"])]  # nothing from server-a's older hypercorn failure
