"""A response cut off because the target died during the exchange is the crash, not an I-RFC-1
framing bug — also when the target was already restarted (and answers again) when the slice
looks: the target's identity (pid + start time) changed across the exchange."""

from __future__ import annotations

import asyncio

from probatorium.validate.tier1.adversarial.runner import AdversarialSlice, sweep_case


async def _cut_response_server():
    """Answers every request with a head promising 100 bytes, sends 10, then closes."""
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _run(identities: list[str]):
    async def main():
        srv = await _cut_response_server()
        port = srv.sockets[0].getsockname()[1]
        seen = iter(identities)

        async def alive() -> bool:
            return True  # restarted already: it accepts connections again

        sl = AdversarialSlice("127.0.0.1", port, quiet_timeout=1.0, alive=alive,
                              identity=lambda: next(seen))
        try:
            _, outcome, verdict, _ = await sl.run_case(sweep_case("GET", "/x"), "n0")
        finally:
            srv.close()
        return outcome, verdict
    return asyncio.run(main())


def test_a_cut_response_across_a_restart_is_the_crash_not_a_framing_violation():
    outcome, verdict = _run(["pid 10 start 1", "pid 11 start 2"])
    assert not outcome.target_alive
    assert verdict.verdict == "crash"
    assert not any(v.predicate == "I-RFC-1" for v in verdict.violations)


def test_a_cut_response_from_a_target_that_kept_running_is_i_rfc_1():
    outcome, verdict = _run(["pid 10 start 1", "pid 10 start 1"])
    assert outcome.target_alive
    assert any(v.predicate == "I-RFC-1" and "truncated" in v.detail for v in verdict.violations)
