"""The I-LIVENESS reproducer stands alone: it replays the suspect and watches the port."""

from __future__ import annotations

from repro_helpers import assert_outcome, free_port, run_repro, server

from probatorium.validate.crash import SentRequest, crash_repro


def _source(addr: str, path: str) -> str:
    raw = f"GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode()
    req = SentRequest(slice="markov", walker="w0", seed="0x1", signature=f"GET {path}", request=f"GET {path}",
                      raw=raw, host_header=addr, sent_at=0.0)
    return crash_repro([req], status=f"confirmed: GET {path}", addr=addr, version="test")


def test_crash_path_reproduces_only_with_the_planted_bug(tmp_path):
    with server("h1server", "crash-path") as addr:
        assert_outcome(run_repro(tmp_path, _source(addr, "/chunked"), addr), 1)
    with server("h1server") as addr:
        assert_outcome(run_repro(tmp_path, _source(addr, "/chunked"), addr), 0)


def test_unreachable_target_exits_2(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    assert_outcome(run_repro(tmp_path, _source(addr, "/chunked"), addr), 2)
