"""The Python framework competitors: each started through the registry and verified (real servers, loopback)."""

import pytest

from probatorium.bench import competitors as reg
from probatorium.bench.cells import CELLS
from probatorium.bench.verify import verify_cell
from probatorium.targets.launcher import start_target

#: The framework entries with a bench app of their own, and the Go baseline (built by its prepare step).
FRAMEWORKS = ("fastapi-uvicorn", "litestar-uvicorn", "falcon-uvicorn", "blacksheep-uvicorn",
              "aiohttp", "sanic", "django-gunicorn", "go-nethttp")
HTTP_CELLS = ("plaintext", "json", "path-param", "post-4k")


def test_every_entry_names_an_existing_app_and_known_capabilities():
    known = {cap for cell in CELLS.values() for cap in cell.capabilities}
    for comp in reg.REGISTRY.values():
        assert set(comp.capabilities) <= known, comp.name
        if comp.app_file:
            assert (reg.apps_dir() / comp.app_file).is_file(), comp.name
        if comp.kind == "app":
            module = comp.app.split(":")[0]
            assert (reg.apps_dir() / f"{module}.py").is_file(), comp.name


@pytest.mark.e2e
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_framework_entry_starts_and_answers_the_bench_routes(name, tmp_path):
    comp = reg.REGISTRY[name]
    why = reg.not_applicable_reason(comp)
    if why:
        pytest.skip(why)
    subs = reg.prepare(comp, tmp_path / "work")
    target = start_target(reg.target_spec(comp, subs), tmp_path / "logs")
    try:
        cells = [CELLS[c] for c in HTTP_CELLS]
        # the streaming cells the entry declares must hold too (short loadgen sessions)
        cells += [CELLS[c] for c in ("ws-echo", "sse-fanout") if reg.serves(comp, CELLS[c]) is None]
        for cell in cells:
            verdict = verify_cell(cell, target.base_url)
            assert verdict.ok, f"{name} / {cell.name}: {verdict.reason}"
    finally:
        target.stop()
