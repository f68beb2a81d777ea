"""Refapps declare Tier 3 durability in their folder (durability.txt); the profile of a --refapp
target reads it, and --durable keeps working for every other target."""

from __future__ import annotations

import shutil

import pytest

from probatorium.errors import UsageError
from probatorium.targets import refapps
from probatorium.validate.plan import TargetArgs, plan_cells
from probatorium.validate.replay import ReplayRequest, dry_run_plan
from probatorium.validate.tier3.session import Tier3Options


def test_every_refapp_declares_its_durability():
    declared = {slug: refapps.refapp_durable(slug) for slug in refapps.list_refapps()}
    assert all((refapps.refapp_dir(s) / refapps.DURABILITY_FILE).is_file() for s in declared)
    assert {s for s, d in declared.items() if d} == {"driver_postgres", "driver_redis"}
    assert declared["driver_memcached"] is False and declared["auth_session_ratelimit"] is False


@pytest.mark.parametrize("text,ok", [("durable\n", True), ("# c\nvolatile  # in memory\n", False),
                                     ("yes\n", None), ("durable volatile\n", None), ("# only a comment\n", None)])
def test_durability_file_is_one_word(tmp_path, monkeypatch, text, ok):
    shutil.copytree(refapps.refapp_dir("driver_redis"), tmp_path / "r", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "r" / refapps.DURABILITY_FILE).write_text(text)
    monkeypatch.setenv(refapps.REFAPPS_DIR_ENV, str(tmp_path))
    if ok is None:
        with pytest.raises(UsageError, match="durability.txt: expected one word"):
            plan_cells(TargetArgs(refapp="r", engine="uvicorn"), None)
    else:
        assert plan_cells(TargetArgs(refapp="r", engine="uvicorn"), None)[0].durable is ok
    (tmp_path / "r" / refapps.DURABILITY_FILE).unlink()
    assert refapps.refapp_durable("r") is False  # no file: volatile


@pytest.mark.parametrize("slug,flag,want", [("driver_postgres", False, True), ("driver_redis", False, True),
                                            ("driver_memcached", False, False), ("driver_memcached", True, True)])
def test_refapp_profile_reads_the_declaration(slug, flag, want):
    req = ReplayRequest(TargetArgs(refapp=slug, engine="uvicorn"), Tier3Options(faults=("target-kill",), durable=flag),
                        seed=0x1)
    profile = dry_run_plan(req).profile
    assert profile.durable is want
    assert profile.services == tuple(refapps.refapp_services(slug))


def test_cmd_target_is_durable_only_with_the_flag(tmp_path):
    spec = refapps.refapp_dir("driver_redis") / "openapi.yaml"
    for flag in (False, True):
        req = ReplayRequest(TargetArgs(cmd="true {port}", spec=spec), Tier3Options(faults=("target-kill",),
                                                                                   durable=flag), seed=0x1)
        assert dry_run_plan(req).profile.durable is flag


def test_the_tally_names_the_faults_no_write_is_judged_across():
    from probatorium.validate.tier3.profile import TargetProfile
    from probatorium.validate.tier3.tier import not_judged_across

    kinds = ("target-kill", "target-term", "target-stop", "service-kill", "service-stop", "net-reset")
    cache = TargetProfile(faults=kinds, durable=False, services=("memcached",), durable_services=())
    assert not_judged_across(cache) == ["target-kill", "target-term", "service-kill memcached"]
    db = TargetProfile(faults=kinds, durable=True, services=("postgres",), durable_services=("postgres",))
    assert not_judged_across(db) == []
