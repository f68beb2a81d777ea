"""Issue 14 item 8: --url spelled without a scheme, --cmd on a fixed port without a ready line."""

from __future__ import annotations

import sys
import time

import pytest

from probatorium.errors import TargetStartError, UsageError
from probatorium.targets.launcher import (TargetSpec, free_port, parse_target_url, port_on_command_line,
                                          start_target)


@pytest.mark.parametrize("url", ["127.0.0.1:18081", "localhost:18081", "127.0.0.1:18081/"])
def test_url_without_scheme_says_so(url):
    with pytest.raises(UsageError, match=r"has no scheme: write it as http://(127\.0\.0\.1|localhost):18081$"):
        parse_target_url(url)


def test_url_parsing():
    assert parse_target_url("http://127.0.0.1:18081") == ("127.0.0.1", 18081)
    assert parse_target_url("http://[::1]:9/") == ("::1", 9)
    with pytest.raises(UsageError, match="only http://"):
        parse_target_url("https://127.0.0.1:1")
    with pytest.raises(UsageError, match="must be an origin"):
        parse_target_url("http://127.0.0.1:1/api")


@pytest.mark.parametrize("cmd, port", [
    ("python3 -m http.server 18081 --bind 127.0.0.1", 18081),
    ("./srv --port 9000 --workers 4", 9000),
    ("./srv --port=9001", 9001),
    ("gunicorn -b 127.0.0.1:9002 app:app", 9002),
    ("./srv --listen=[::1]:9003", 9003),
    ("./srv --timeout 3000", None),
    ("./srv", None),
])
def test_port_on_command_line(cmd, port):
    assert port_on_command_line(cmd.split()) == port


def test_fixed_port_cmd_without_ready_line_is_probed(tmp_path):
    port = free_port()
    lines: list[str] = []
    spec = TargetSpec(kind="cmd", cmd=f"{sys.executable} -m http.server {port} --bind 127.0.0.1", ready_timeout=15)
    t0 = time.monotonic()
    target = start_target(spec, tmp_path, progress=lines.append)
    try:
        assert (target.host, target.port) == ("127.0.0.1", port)
        assert time.monotonic() - t0 < 10
        assert any(f"or for port {port} (named on its command line)" in line for line in lines), lines
    finally:
        target.stop(grace=2)


def test_cmd_with_no_port_and_no_ready_line_says_why(tmp_path):
    spec = TargetSpec(kind="cmd", cmd=f"{sys.executable} -c \"import time; time.sleep(30)\"", ready_timeout=0.5)
    with pytest.raises(TargetStartError, match="has no {port} and names no port to probe"):
        start_target(spec, tmp_path)


def test_url_nobody_listens_on_says_what_it_waits_for(tmp_path):
    port = free_port()
    lines: list[str] = []
    spec = TargetSpec(kind="url", url=f"http://127.0.0.1:{port}", ready_timeout=0.3)
    with pytest.raises(TargetStartError, match=f"nothing accepts connections on 127.0.0.1:{port}"):
        start_target(spec, tmp_path, progress=lines.append)
    assert lines == [f"  url http://127.0.0.1:{port}: waiting up to 0.3 s for a server to accept connections on "
                     f"127.0.0.1:{port} (--url; start it first, or change --ready-timeout)"]
