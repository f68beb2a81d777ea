"""The Markov model loader: a valid file loads; every mistake is ONE line naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.validate.openapi import load_operations
from probatorium.validate.tier1.markov.model import default_chain, kv_operations, load_markov

ROOT = Path(__file__).resolve().parents[3]
REFAPP = ROOT / "refapps" / "auth_session_ratelimit"

GOOD = """\
login: POST /login
start: me
states:
  me:
    request: GET /me
    list_users: 7.0
    me: 1.0
    logout: 0.5
  list_users:
    request: GET /api/users
    me: 1.0
  logout:
    request: POST /logout
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "markov.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(UsageError) as ei:
        load_markov(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(str(p) + ":"), msg
    return msg


def test_good_model_loads(tmp_path: Path) -> None:
    m = load_markov(write(tmp_path, GOOD))
    assert m.login == ("POST", "/login")
    assert m.start == "me"
    assert m.states["me"].transitions == (("list_users", 7.0), ("me", 1.0), ("logout", 0.5))
    assert m.states["logout"].terminal and not m.states["me"].terminal
    assert m.states["list_users"].line == 9


def test_refapp_model_loads_and_matches_its_openapi() -> None:
    m = load_markov(REFAPP / "markov.yaml")
    ops = {(o.method, o.path) for o in load_operations(REFAPP / "openapi.yaml")}
    assert m.login in ops
    for st in m.states.values():
        assert (st.method, st.path) in ops, st


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    text = GOOD.replace("    me: 1.0\n    logout", "    me: [1.0\n    logout", 1)
    msg = error_of(tmp_path, text)
    assert "invalid YAML" in msg
    assert ":8:" in msg or ":7:" in msg, msg


def test_tab_indentation_is_bad_yaml(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "start: a\nstates:\n  a:\n\trequest: GET /\n")
    assert "invalid YAML" in msg and ":4:" in msg, msg


def test_unknown_state_names_the_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("    list_users: 7.0", "    list_user: 7.0"))
    assert ":6:" in msg and "unknown state 'list_user'" in msg, msg


def test_unknown_start_state_names_the_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("start: me", "start: you"))
    assert ":2:" in msg and "'you'" in msg, msg


def test_missing_request_names_the_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("    request: GET /api/users\n", ""))
    assert ":9:" in msg and "no 'request'" in msg, msg


def test_bad_request_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("request: GET /me", "request: FETCH me"))
    assert ":5:" in msg and "METHOD /path" in msg, msg


def test_negative_weight_names_the_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("    me: 1.0\n  logout", "    me: -1\n  logout"))
    assert ":11:" in msg and ">= 0" in msg, msg


def test_non_numeric_weight(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("list_users: 7.0", "list_users: lots"))
    assert ":6:" in msg and "number" in msg, msg


def test_zero_sum_weights_names_the_state(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("    me: 1.0\n  logout", "    me: 0\n  logout"))
    assert ":9:" in msg and "sum to zero" in msg, msg


def test_duplicate_state(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD + "  me:\n    request: GET /me\n")
    assert ":14:" in msg and "duplicate" in msg, msg


def test_structure_errors(tmp_path: Path) -> None:
    assert "missing 'states'" in error_of(tmp_path, "start: me\n")
    assert "empty" in error_of(tmp_path, "")
    assert ":1:" in error_of(tmp_path, "- a\n- b\n")
    assert "unknown top-level key 'stats'" in error_of(tmp_path, "stats: {}\n")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_markov(tmp_path / "absent.yaml")


def test_default_chain_from_refapp_openapi() -> None:
    ops = load_operations(REFAPP / "openapi.yaml")
    m = default_chain(ops)
    assert m.login == ("POST", "/login")
    assert m.start == "createUser"  # creates come first: they produce the ids
    paths = {st.path for st in m.states.values()}
    assert "/api/users/{id}/posts/{post_id}" in paths
    assert not any(p.startswith(("/echo", "/events", "/ws", "/healthz", "/debug")) for p in paths)
    assert m.states["logout"].terminal
    assert all(not st.terminal for n, st in m.states.items() if n != "logout")
    assert kv_operations(ops) is None


def test_default_chain_without_operations() -> None:
    m = default_chain([])
    assert m.states == {} and m.notes
