"""Releases between two versions, from an index document (the JSON API's shape); pure."""

from __future__ import annotations

import pytest

from probatorium.bisect.releases import releases_between
from probatorium.errors import UsageError

FILE = [{"packagetype": "bdist_wheel", "yanked": False}]
YANKED = [{"packagetype": "bdist_wheel", "yanked": True}]
DOC = {"releases": {"0.0.1": [], "1.0": FILE, "1.1.0": FILE, "1.2.0rc1": FILE, "1.2.0": YANKED,
                    "1.10.0": FILE, "1.3.0": FILE, "not-a-version!": FILE, "2.0.0": FILE}}


def versions(good, bad, **kw):
    rel, g, b = releases_between(DOC, "pkg", good, bad, **kw)
    return [r.version for r in rel], g.version, b.version


def test_version_order_skips_prerelease_yanked_and_empty():
    assert versions("1.0.0", "2.0") == (["1.0", "1.1.0", "1.3.0", "1.10.0", "2.0.0"], "1.0", "2.0.0")


def test_reversed_endpoints_give_the_same_range_oldest_first():
    assert versions("2.0.0", "1.1")[0] == ["1.1.0", "1.3.0", "1.10.0", "2.0.0"]


def test_pre_and_yanked_on_request_and_endpoints_kept():
    assert versions("1.1.0", "1.3.0", prereleases=True, yanked=True)[0] == ["1.1.0", "1.2.0rc1", "1.2.0", "1.3.0"]
    assert versions("1.2.0rc1", "1.3.0")[0] == ["1.2.0rc1", "1.3.0"]


@pytest.mark.parametrize("good, bad, needle", [
    ("1.1", "1.1.0", "name the same release (1.1.0)"),
    ("9.9", "1.0", "pkg has no release '9.9' on the index (--good)"),
    ("1.0", "0.0.1", "has no files on the index"),
    ("1.0", "x!", "--bad 'x!' is not a version"),
])
def test_bad_endpoints_are_one_usage_line(good, bad, needle):
    with pytest.raises(UsageError, match=None) as e:
        releases_between(DOC, "pkg", good, bad)
    assert needle in str(e.value)
