"""End-to-end: a driver refapp cell starts its service itself, judges I-DRV-1 with a positive
number of evaluations, and leaves no service process or data directory behind."""

from __future__ import annotations

import json
import os

from e2e_helpers import load_doc, run_cli


def _processes_under(root: str) -> list[str]:
    """Command lines of live processes whose argv mentions root (our private service dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie holds nothing
        except OSError:
            continue
        if root in cmd:
            found.append(cmd)
    return found


def test_driver_refapp_cell_runs_and_leaves_nothing(tmp_path, monkeypatch):
    import shutil
    import tempfile
    from pathlib import Path

    # The servers run as unprivileged users: their root must be reachable (pytest's tmp is 0700).
    base = Path(tempfile.mkdtemp(prefix="probatorium-e2e-svc-"))
    base.chmod(0o755)
    svc_root = base / "services"
    try:
        _run_and_check(tmp_path, monkeypatch, svc_root)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_and_check(tmp_path, monkeypatch, svc_root):
    state = tmp_path / "state"
    monkeypatch.setenv("PROBATORIUM_SERVICES_TMPDIR", str(svc_root))
    monkeypatch.setenv("PROBATORIUM_STATE_DIR", str(state))
    out = tmp_path / "run"
    res = run_cli(["validate", "--refapp", "driver_redis", "--engine", "uvicorn", "--slices", "markov",
                   "--duration", "8s", "--concurrency", "3", "--out", str(out)], timeout=180)
    cell = load_doc(out)["validation_results"]["cells"][0]
    assert cell["status"] == "ok", (cell["reason"], res.stderr[-2000:])
    assert res.returncode == 0
    drv = cell["properties"]["I-DRV-1"]
    assert drv["status"] == "passed" and drv["evaluations"] > 0, drv
    assert cell["tier_1"]["markov"]["5xx"] == 0
    # nothing left: no server process on our private directory, no directory, no live manifest entry
    assert _processes_under(str(svc_root)) == []
    assert not svc_root.exists() or not any(svc_root.iterdir())
    manifest = state / "manifest.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text()).get("entries", [])
        assert all(e.get("stopped_at") or e.get("state") in ("stopped", "cleaned") for e in entries), entries
