"""The harness itself: the reproducer command in the run document, exit-code reading, part checks."""

from __future__ import annotations

import json

import pytest

from probatorium.validate import repro as R
from probatorium.validate.incidents import Evidence, IncidentRecorder
from probatorium.validate.reprocheck import repro_outcome


def _recorder(tmp_path):
    return IncidentRecorder(tmp_path, "cell-01-app-eng", refapp="app", engine="eng", arch="amd64", versions={})


def test_incident_reproducer_names_the_command_relative_to_the_run_folder(tmp_path):
    rec = _recorder(tmp_path)
    inc = rec.record(Evidence(predicate="I-ADV-ACCEPTED", detail="d", case="c1", repro="print('x')\n"))
    assert inc.reproducer == f"python3 {inc.dossier}/repro.py"
    assert (tmp_path / inc.dossier / "repro.py").is_file()
    assert json.loads((tmp_path / inc.dossier / "incident.json").read_text())["reproducer"] == inc.reproducer
    bare = rec.record(Evidence(predicate="I-HANG", detail="watchdog"))
    assert bare.reproducer == ""


def test_amended_crash_reproducer_is_the_command_then_the_status(tmp_path):
    rec = _recorder(tmp_path)
    rec.record(Evidence(predicate="I-LIVENESS", detail="died"))
    inc = rec.amend("I-LIVENESS", reproducer="confirmed: GET /x", details={"status": "confirmed"}, repro="pass\n")
    assert inc.reproducer == f"python3 {inc.dossier}/repro.py  # confirmed: GET /x"
    inc = rec.amend("I-LIVENESS", reproducer="unconfirmed: none left", details={"status": "unconfirmed"})
    assert inc.reproducer == "unconfirmed: none left" and not (tmp_path / inc.dossier / "repro.py").exists()


@pytest.mark.parametrize("code,out,want", [
    (1, "x\nREPRODUCED\n", "REPRODUCED"), (0, "NOT REPRODUCED\n", "NOT REPRODUCED"),
    (2, "UNREACHABLE: nothing accepts connections on h:1\n", "ERROR: UNREACHABLE: nothing accepts connections on h:1"),
    (0, "REPRODUCED\n", "ERROR: no verdict (exit 0): REPRODUCED"),
])
def test_repro_outcome_reads_exit_code_and_last_line(code, out, want):
    assert repro_outcome(code, out) == want


def _judge(host, port, addr, payload):
    return False, "never"


def test_build_repro_refuses_parts_that_define_a_name_twice():
    def connect(host, port):  # the runtime's name, redefined by a kind's helper
        return None

    with pytest.raises(ValueError, match="connect"):
        R.build_repro("k", {}, _judge, predicate="P", detail="d", addr="h:1", version="t", helpers=(connect,))
    src = R.build_repro("k", {"x": b"\x00".hex()}, _judge, predicate="P", detail='a """ b', addr="h:1",
                        version="t")
    compile(src, "repro.py", "exec")
    assert "probatorium" not in "".join(ln for ln in src.splitlines() if ln.startswith(("import", "from")))


@pytest.mark.parametrize("data,method,done", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"GET", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok", b"GET", False),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"POST", True),
    (b"HTTP/1.1 100 Continue\r\n\r\n", b"POST", False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"GET", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"HEAD", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", True),
    (b"HTTP/1.1 200 OK\r\n\r\nclose-delimited", b"GET", False),
])
def test_response_complete_follows_http1_framing(data, method, done):
    assert R.response_complete(data, method) is done
