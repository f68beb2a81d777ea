"""The key/value contract checked from outside (I-DRV-1): a lossy store is caught, a correct one is not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from servers import KV_OPENAPI, KVStore, Server

from probatorium.validate.tier1.markov.slice import MarkovSlice


def run_kv(tmp_path: Path, store: KVStore, seconds: float = 1.5, walkers: int = 3):
    spec = tmp_path / "openapi.yaml"
    spec.write_text(KV_OPENAPI)
    evidence: list = []

    async def main():
        async with Server(store) as srv:
            s = MarkovSlice("127.0.0.1", srv.port, openapi=spec, seed=99, report=evidence.append)
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(s.walker(i, deadline, lambda: False) for i in range(walkers)))
            return s

    return asyncio.run(main()), evidence


def test_lossy_store_is_i_drv_1(tmp_path: Path) -> None:
    store = KVStore(lose_every=10)
    s, evidence = run_kv(tmp_path, store)
    c = s.counters()
    assert c["kv_contract"] == 1 and store.lost > 0
    assert c["drv_checks"] > 50
    assert c["drv_read_after_write_mismatch"] > 0
    assert evidence and {e.predicate for e in evidence} == {"I-DRV-1"}
    ev = evidence[0]
    assert b"PUT /kv/pw-" in ev.sent and b"GET /kv/pw-" in ev.sent and ev.extra["key"].startswith("pw-")
    assert ev.extra["trace"][-1][2] == 404  # the lost write reads back as absent


def test_repro_reproduces_the_lost_write(tmp_path: Path) -> None:
    import sys

    store = KVStore(lose_every=10)
    _, evidence = run_kv(tmp_path, store, seconds=0.5, walkers=1)
    script = tmp_path / "repro.py"
    script.write_text(evidence[0].repro)

    async def main():
        async with Server(KVStore(lose_every=10)) as srv:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), f"127.0.0.1:{srv.port}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            raw = await asyncio.create_subprocess_exec(
                sys.executable, str(script), f"127.0.0.1:{srv.port}", "--raw",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            rout, _ = await asyncio.wait_for(raw.communicate(), 60)
            return proc.returncode, out.decode(), raw.returncode, rout.decode()

    rc, out, rrc, rout = asyncio.run(main())
    assert rc == 1 and "REPRODUCED" in out and "I-DRV-1" in out, out
    # --raw replays the recorded bytes and judges read-after-write by itself
    assert rrc == 1 and "PUT /kv/pw-" in rout and "-> HTTP/1.1 200" in rout and "I-DRV-1" in rout, rout


def test_correct_store_has_no_evidence(tmp_path: Path) -> None:
    store = KVStore()
    s, evidence = run_kv(tmp_path, store)
    c = s.counters()
    assert c["drv_checks"] > 50 and c["drv_read_after_write_mismatch"] == 0
    assert c["drv_after_delete_mismatch"] == 0 and c["errors"] == 0 and c["5xx"] == 0
    assert evidence == []
    assert store.data == {}  # every walker-owned key was deleted again
    assert s.per_operation()["PUT /kv/{key}"]["2xx"] > 0


def test_delete_that_does_not_delete(tmp_path: Path) -> None:
    class Sticky(KVStore):
        def __call__(self, method, target, headers, body):
            if method == "DELETE":
                from servers import response

                return response(204), False  # acknowledges, deletes nothing
            return super().__call__(method, target, headers, body)

    s, evidence = run_kv(tmp_path, Sticky(), seconds=0.5, walkers=1)
    c = s.counters()
    assert c["drv_after_delete_mismatch"] > 0
    assert c["drv_read_after_write_mismatch"] >= c["drv_after_delete_mismatch"]
    assert {e.case for e in evidence} == {"markov kv read-after-delete"}
