"""The config file (probatorium.toml / [tool.probatorium]): flags > env knobs > file > defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from probatorium.cli import app
from probatorium.config import default_map, find_config
from probatorium.errors import UsageError

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = typer.main.get_command(app)


def test_tables_become_the_default_map(tmp_path):
    (tmp_path / "probatorium.toml").write_text(
        '[validate]\nduration = "30s"\nslices = ["adversarial", "ws"]\nconcurrency = 4\nmatrix = true\n'
        'results-dir = "out"\nservices = "redis"\n[bench]\ncells = "json"\n')
    path, table = find_config(tmp_path)
    assert path.name == "probatorium.toml"
    assert default_map(ROOT, path, table, env={}) == {
        "validate": {"duration": "30s", "slices": "adversarial,ws", "concurrency": "4", "matrix": True,
                     "results_dir": "out", "services_opt": "redis"},
        "bench": {"cells": "json"}}
    # an environment knob that is set wins over the file
    assert default_map(ROOT, path, table, env={"VALIDATE_DURATION": "9s", "BENCH_CELLS": "all"}) == {
        "validate": {"slices": "adversarial,ws", "concurrency": "4", "matrix": True, "results_dir": "out",
                     "services_opt": "redis"}}


def test_pyproject_table_and_no_config(tmp_path, monkeypatch):
    monkeypatch.delenv("PROBATORIUM_CONFIG", raising=False)
    assert find_config(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.probatorium.fuzz]\nmode = "lean"\n')
    path, table = find_config(tmp_path)
    assert default_map(ROOT, path, table, env={}) == {"fuzz": {"mode": "lean"}}


@pytest.mark.parametrize("text, message", [
    ('[validate]\ndurration = "7s"\n', "[validate] unknown key 'durration'; keys: allow-remote"),
    ('[nope]\nx = 1\n', "unknown table [nope]; commands: bench"),
    ('[validate]\nmatrix = "yes"\n', "matrix must be true or false"),
    ('[validate]\nduration = true\n', "duration takes a value like its flag --duration"),
    ('[validate\n', "not a valid TOML file"),
])
def test_bad_config_is_one_usage_error(tmp_path, text, message):
    (tmp_path / "probatorium.toml").write_text(text)
    with pytest.raises(UsageError) as info:
        default_map(ROOT, *find_config(tmp_path), env={})
    assert message in str(info.value)


def test_precedence_end_to_end(tmp_path):
    """One short run of the real CLI: the file sets duration and C; env beats the file; a flag beats both."""
    (tmp_path / "probatorium.toml").write_text(
        f'[validate]\nduration = "7s"\nconcurrency = 3\nslices = "adversarial"\nready-timeout = 0.3\n'
        f'results-dir = "{tmp_path / "res"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VALIDATE_", "PROBATORIUM_"))}
    env.update(PYTHONPATH=str(SRC), VALIDATE_DURATION="9s")
    r = subprocess.run([sys.executable, "-m", "probatorium.cli", "validate", "--url", "http://127.0.0.1:9", "-c", "2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    first = r.stderr.splitlines()[0]
    assert ": 1 cell(s), 9s, C=2, tiers=1, slices=adversarial" in first, r.stderr
    assert str(tmp_path / "res") in first and r.returncode == 2  # nothing listens on :9: not_run
    (tmp_path / "probatorium.toml").write_text('[validate]\nbogus = 1\n')
    bad = subprocess.run([sys.executable, "-m", "probatorium.cli", "refapps"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown key 'bogus'" in bad.stderr
