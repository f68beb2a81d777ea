"""run_load against real sockets on 127.0.0.1: error classes, open-loop scheduling, merging."""

from __future__ import annotations

import pytest

from loadgen_servers import Server
from probatorium.loadgen import LoadConfig, NoConnectionError, run_load
from probatorium.loadgen.cli import run_loadgen_command
from probatorium.loadgen import hist

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(request):
    s = Server(*getattr(request, "param", ("ok",)))
    yield s
    s.close()


def _free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_closed_loop_two_workers_merge(server):
    r = run_load(LoadConfig(url=server.url, connections=4, duration=1.0, warmup=0.3, workers=2))
    assert r.mode == "closed" and r.workers == 2
    assert r.requests > 100
    assert sum(r.errors.values()) == 0
    assert r.requests == sum(w["requests"] for w in r.per_worker)
    assert hist.decode(r.histogram).get_total_count() == r.requests
    assert r.warmup is not None and r.warmup.requests > 0
    assert sum(t["rps"] for t in r.timeseries) == pytest.approx(r.requests, rel=0.01)
    assert r.latency_us["p50"] <= r.latency_us["p99"] <= r.latency_us["max"]
    d = r.to_dict()
    for key in ("requests", "errors", "duration_s", "requests_per_sec", "latency_us", "histogram", "mode",
                "target_rps", "achieved_rps", "unsent", "timeseries", "client_cpu", "client_bound", "warmup"):
        assert key in d


def test_refused_port_gives_connect_errors_and_clear_error():
    port = _free_port()
    with pytest.raises(NoConnectionError) as ei:
        run_load(LoadConfig(url=f"http://127.0.0.1:{port}/", connections=2, duration=5.0, workers=1,
                            give_up_after=1.0))
    assert ei.value.result.errors["connect"] > 0
    assert "no connection" in str(ei.value)
    assert run_loadgen_command(f"http://127.0.0.1:{port}/", connections=1, duration=1.0, workers=1) == 2


@pytest.mark.parametrize("server", [("reset",)], indirect=True)
def test_reset_class(server):
    r = run_load(LoadConfig(url=server.url, connections=2, duration=1.0, workers=1))
    assert r.errors["reset"] > 0
    assert r.errors["protocol"] == r.errors["status"] == r.errors["timeout"] == 0


@pytest.mark.parametrize("server", [("status500",)], indirect=True)
def test_status_class(server):
    r = run_load(LoadConfig(url=server.url, connections=2, duration=1.0, workers=1))
    assert r.errors["status"] == r.requests > 0
    assert r.errors["reset"] == r.errors["protocol"] == 0
    ok = run_load(LoadConfig(url=server.url, connections=2, duration=0.5, workers=1,
                             expected_statuses=frozenset({500})))
    assert ok.errors["status"] == 0 and ok.requests > 0


@pytest.mark.parametrize("server", [("garbage",)], indirect=True)
def test_protocol_class(server):
    r = run_load(LoadConfig(url=server.url, connections=2, duration=1.0, workers=1))
    assert r.errors["protocol"] > 0
    assert r.errors["status"] == 0 and r.requests == 0


def test_close_mode_new_connection_per_request(server):
    r = run_load(LoadConfig(url=server.url, connections=2, duration=1.0, workers=1, close=True))
    assert r.requests > 20 and sum(r.errors.values()) == 0
    assert r.per_worker[0]["connects_ok"] >= r.requests


@pytest.mark.parametrize("server", [("stall", 60, 0.5)], indirect=True)
def test_open_loop_latency_grows_from_intended_time(server):
    # 200 rps; after the 60th request the server stalls 0.5 s. Requests intended during the
    # stall wait for it: their latency, measured from the INTENDED time, runs from ~500 ms
    # down to ~0 -> about 100 of ~400 requests are slow, p90 is far above the service time.
    r = run_load(LoadConfig(url=server.url, connections=4, rate=200, duration=2.0, workers=1))
    assert r.mode == "open" and r.target_rps == 200
    assert r.requests + r.unsent + sum(r.errors.values()) == 400
    assert r.latency_us["max"] >= 400_000
    assert r.latency_us["p90"] >= 150_000
    assert r.latency_us["p50"] < 50_000


@pytest.mark.parametrize("server", [("stall", 60, 0.5)], indirect=True)
def test_closed_loop_hides_the_same_stall(server):
    # the same stall seen by a closed loop: only the few requests in flight see it
    r = run_load(LoadConfig(url=server.url, connections=4, duration=2.0, workers=1))
    assert r.latency_us["max"] >= 400_000
    assert r.latency_us["p90"] < 50_000


@pytest.mark.parametrize("server", [("stall", 100, 30.0)], indirect=True)
def test_open_loop_unsent_when_server_stalls_to_the_end(server):
    # the server stalls for good after request 100 (0.5 s into a 2 s run at 200 rps):
    # 2 requests are in flight (they time out at the end), the rest wait in the queue
    # and are reported unsent; every slot is accounted for.
    r = run_load(LoadConfig(url=server.url, connections=2, rate=200, duration=2.0, workers=1,
                            timeout=30.0, grace=0.3))
    assert r.requests == 99
    assert r.errors["timeout"] == 1 + 1  # the stalled 100th request and the other in flight
    assert r.unsent == 400 - 99 - 2
    assert r.unsent > 250


@pytest.mark.parametrize("server", [("ws",)], indirect=True)
def test_websocket_echo(server):
    r = run_load(LoadConfig(url=server.url, connections=4, duration=1.0, workers=1, kind="ws"))
    assert r.kind == "ws"
    assert r.requests > 100 and sum(r.errors.values()) == 0
    assert 0 < r.latency_us["p50"] < 100_000


@pytest.mark.parametrize("server", [("sse",)], indirect=True)
def test_sse_fanout(server):
    # 4 subscribers, ~90 timed events/s each (every 10th event is a comment): ~360 events/s
    r = run_load(LoadConfig(url=server.url, connections=4, duration=1.5, warmup=0.3, workers=1, kind="sse"))
    assert r.kind == "sse" and sum(r.errors.values()) == 0
    assert 200 < r.requests_per_sec < 500
    assert 0 < r.latency_us["p50"] < 50_000  # delivery lag
