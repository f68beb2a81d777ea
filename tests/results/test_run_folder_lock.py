"""The run-folder lock (SPEC §9 "Run folders"): one live run per folder, no stale results mixed in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from probatorium.results.store import (
    LOCK_NAME,
    RunFolderLocked,
    RunFolderNotEmpty,
    lock_run_folder,
)

_HOLDER = """
import sys, time
from probatorium.results.store import lock_run_folder
lock = lock_run_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""

_TRY = """
import sys
from probatorium.errors import ProbatoriumError
from probatorium.results.store import lock_run_folder
try:
    lock_run_folder(sys.argv[1])
except ProbatoriumError as e:
    print(e)
    sys.exit(e.exit_code)
print("got it")
"""


def _try_lock(folder) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _TRY, str(folder)], capture_output=True, text=True, timeout=30)


def test_second_run_into_a_locked_folder_fails_with_one_line(tmp_path):
    with lock_run_folder(tmp_path / "run"):
        res = _try_lock(tmp_path / "run")
    assert res.returncode == 2
    assert "another probatorium run is writing this folder" in res.stdout
    assert len(res.stdout.strip().splitlines()) == 1


def test_lock_dies_with_a_sigkilled_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderLocked):
            lock_run_folder(tmp_path)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    assert (tmp_path / LOCK_NAME).exists()  # the file stays behind, the lock does not
    lock_run_folder(tmp_path).release()


def test_earlier_results_refused_without_force(tmp_path):
    (tmp_path / "validate-results.json").write_text("{}")
    with pytest.raises(RunFolderNotEmpty, match="--force"):
        lock_run_folder(tmp_path)
    # Refusing released the lock: a later attempt is refused for the results, not the lock.
    with pytest.raises(RunFolderNotEmpty):
        lock_run_folder(tmp_path)


def test_cell_folder_alone_is_an_earlier_result(tmp_path):
    (tmp_path / "cell-01-x-uvicorn" / "incidents").mkdir(parents=True)
    with pytest.raises(RunFolderNotEmpty):
        lock_run_folder(tmp_path)


def test_force_clears_only_results(tmp_path):
    (tmp_path / "validate-results.json").write_text("{}")
    (tmp_path / "cell-01-x-uvicorn" / "incidents").mkdir(parents=True)
    (tmp_path / "cell-02-y-granian").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "cellar").mkdir()
    with lock_run_folder(tmp_path, force=True):
        left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([LOCK_NAME, "notes.txt", "cellar"])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_empty_or_missing_folder_is_fine(tmp_path):
    lock_run_folder(tmp_path).release()
    missing = tmp_path / "a" / "b"
    with lock_run_folder(missing) as lock:
        assert missing.is_dir() and lock.run_dir == missing
    # Released: the same process (or another) may lock it again.
    assert _try_lock(missing).stdout.strip() == "got it"


def test_cli_exits_2_on_stale_results(tmp_path):
    (tmp_path / "validate-results.json").write_text("{}")
    probatorium = os.path.join(os.path.dirname(sys.executable), "probatorium")
    start = time.monotonic()
    res = subprocess.run([probatorium, "validate", "--url", "http://127.0.0.1:9", "--out", str(tmp_path),
                          "--duration", "1s"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "earlier run's results" in res.stderr
    assert time.monotonic() - start < 30
