"""`probatorium bisect` bad input (one prefixed line, exit 2; the index is a local file:// copy of
the JSON API's shape, no network) and the --cmd-check exit-code convention on real processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from probatorium.bisect.checks import CmdCheck
from probatorium.bisect.probeenv import ProbeEnv

REPO = Path(__file__).resolve().parents[2]
FILE = [{"packagetype": "bdist_wheel", "yanked": False}]


def cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """The console entry point in-process: (exit status, stdout, stderr)."""
    from probatorium.cli import main

    monkeypatch.setattr(sys, "argv", ["probatorium", "bisect", *args])
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("index")
    (root / "pkg").mkdir()
    (root / "pkg" / "json").write_text(json.dumps({"releases": {"1.0.0": FILE, "1.1.0": FILE, "2.0.0": FILE}}))
    return root.as_uri()


@pytest.mark.parametrize("args, needle", [
    (["--good", "1.0.0", "--bad", "1.0", "--cmd-check", "true"], "--good and --bad name the same release (1.0.0)"),
    (["--good", "1.0.0", "--bad", "3.0", "--cmd-check", "true"], "pkg has no release '3.0' on the index (--bad)"),
    (["--good", "1.0.0", "--bad", "2.0.0", "--predicate", "I-NOPE"], "unknown predicate 'I-NOPE'"),
    (["--good", "1.0.0", "--bad", "2.0.0", "--predicate", "I-ADV-ACCEPTED", "--case", "chunk_data_missing"],
     "unknown adversarial case 'chunk_data_missing'; did you mean chunk_data_missing_crlf"),
    (["--good", "1.0.0", "--bad", "2.0.0"], "give exactly one of --predicate P [--case C], --cmd-check"),
])
def test_bad_input_is_one_line_exit_2(capsys, monkeypatch, index, args, needle):
    code, out, err = cli(capsys, monkeypatch, "--package", "pkg", "--index", index, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("probatorium: error: ") and needle in lines[0], err
    assert out == ""


@pytest.mark.parametrize("command, state, evidence", [
    ("echo fine", "good", "exit 0"), ("echo broken >&2; exit 3", "bad", "exit 3"),
    ("exit 125", "skip", "exit 125"), ('test "$PROBATORIUM_BISECT_PYTHON" = "$(command -v python)"', "good", "exit 0"),
])
def test_cmd_check_exit_codes(tmp_path, command, state, evidence):
    probe = ProbeEnv(tmp_path, "pkg", "1.0.0")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    out = CmdCheck(command, timeout=10).run(probe)
    assert out.state == state and out.evidence.startswith(evidence), out
    if "broken" in command:
        assert out.evidence.endswith(": broken")


def test_cmd_check_timeout_stops_it_and_skips(tmp_path):
    out = CmdCheck("sleep 30", timeout=0.5).run(ProbeEnv(tmp_path, "pkg", "1.0.0"))
    assert out.state == "skip" and "--check-timeout 0.5s" in out.evidence
