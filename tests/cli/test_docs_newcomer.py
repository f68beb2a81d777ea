"""Issue 14 item 8: the README and docs a new user reads (no dangling SPEC.md, the contracts written down)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
USER_DOCS = {p.name: p.read_text() for p in (REPO / "docs").glob("*.md")}


def test_no_reference_to_a_spec_users_do_not_have():
    texts = {"README.md": README, **USER_DOCS}
    offenders = [name for name, text in texts.items() if re.search(r"SPEC\.md|SPEC §", text)]
    assert not offenders
    cli = (REPO / "src" / "probatorium" / "cli.py").read_text()
    assert "SPEC" not in cli


def test_contracts_doc_covers_every_contract():
    doc = USER_DOCS["contracts.md"]
    for heading in ("Debug endpoint", "Key/value contract", "Invariant tag", "Login", "Echo route", "Ready line",
                    "Results and exit status"):
        assert f"## {heading}" in doc
    for name in ("/debug/vars", "sse_open", "ws_open", "tasks", "requests", "PUT /kv/{key}", "x-invariant",
                 '"username"', "body_sha256", "ready addr=HOST:PORT", "validation_results.cells", "first_seen"):
        assert name in doc, name
    assert "docs/contracts.md" in README


def test_readme_paragraphs_are_not_spliced_and_knobs_are_documented():
    dossier = README[README.index("Each finding has a dossier"):].split("\n\n", 1)[0]
    assert "probatorium bench" not in dossier and "repro-check RUN_DIR` re-runs them all" in dossier
    loadgen = README[README.index("- **Load generator**"):].split("\n\n", 1)[0]
    assert "bench-since" not in loadgen and "probatorium loadgen URL` — raw uvloop" in loadgen
    for knob in ("PROBATORIUM_TARGET_VERSION", "CELERIS_VERSION", "validation_results.cells", "probatorium.toml",
                 "[tool.probatorium]"):
        assert knob in README, knob


def test_target_version_knob_and_its_alias(tmp_path, monkeypatch):
    from probatorium.validate.plan import TargetArgs, choose_run_dir, plan_cells

    plans = plan_cells(TargetArgs(url="http://127.0.0.1:9"), ["adversarial"])
    monkeypatch.setenv("CELERIS_VERSION", "v-alias")
    assert choose_run_dir(None, tmp_path, plans, False).name.endswith("-validate-v-alias")
    monkeypatch.setenv("PROBATORIUM_TARGET_VERSION", "v2.0")
    assert choose_run_dir(None, tmp_path, plans, False).name.endswith("-validate-v2.0")
