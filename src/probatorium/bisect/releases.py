"""Released versions of a package, from the package index's JSON API, in version order.

`fetch_index` reads ``<index>/<name>/json`` (PyPI's JSON API); `releases_between` is pure: it
turns that document into the releases from one version to another, oldest first, with
pre-releases, yanked releases and releases without files left out unless asked for (an
endpoint the user names is always kept, whatever it is).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from ..errors import InfraError, UsageError

#: The JSON API root; ``PROBATORIUM_BISECT_INDEX`` or ``--index`` override it.
DEFAULT_INDEX = "https://pypi.org/pypi"
# PEP 508 distribution names: what may go into the index URL.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Release:
    """One release on the index: its version string as published, and why it may be unusual."""

    version: str
    prerelease: bool = False
    yanked: bool = False
    files: int = 1

    @property
    def key(self) -> Version:
        return Version(self.version)


def parse_version(text: str, what: str) -> Version:
    """`text` as a PEP 440 version; one UsageError line when it is not one."""
    try:
        return Version(text)
    except InvalidVersion:
        raise UsageError(f"{what} {text!r} is not a version (PEP 440), e.g. 0.14.0") from None


def fetch_index(name: str, index: str = DEFAULT_INDEX, timeout: float = 20.0) -> dict:
    """The index's JSON document for `name`; UsageError for an unknown package, InfraError when
    the index cannot be reached."""
    if not _NAME.match(name):
        raise UsageError(f"--package {name!r} is not a package name")
    url = f"{index.rstrip('/')}/{urllib.parse.quote(name)}/json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - an https/file URL we built
            return json.load(resp)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise UsageError(f"unknown package {name!r}: {url} answers 404") from None
        raise InfraError(f"the package index answered {e.code} for {url}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise InfraError(f"cannot read the package index at {url}: {reason}") from None


def releases_of(doc: dict) -> list[Release]:
    """Every release in an index document, oldest first; versions that are not PEP 440 are dropped."""
    out = []
    for version, files in (doc.get("releases") or {}).items():
        try:
            v = Version(version)
        except InvalidVersion:
            continue
        files = files or []
        out.append(Release(version, prerelease=v.is_prerelease or v.is_devrelease,
                           yanked=bool(files) and all(f.get("yanked") for f in files), files=len(files)))
    return sorted(out, key=lambda r: r.key)


def find_release(releases: list[Release], text: str, flag: str, name: str) -> Release:
    """The release `text` names (0.14 finds 0.14.0); one UsageError line when the index has none."""
    want = parse_version(text, flag)
    for r in releases:
        if r.key == want:
            if r.files == 0:
                raise UsageError(f"{name} {r.version} ({flag}) has no files on the index: it cannot be installed")
            return r
    near = ", ".join(r.version for r in releases[-5:])
    raise UsageError(f"{name} has no release {text!r} on the index ({flag}); newest: {near}")


def releases_between(doc: dict, name: str, good: str, bad: str, *, prereleases: bool = False,
                     yanked: bool = False) -> tuple[list[Release], Release, Release]:
    """The releases from the older of `good`/`bad` to the newer one, oldest first, plus the two
    endpoints. Pre-releases, yanked releases and releases without files in between are left out
    unless asked for; the endpoints stay whatever they are."""
    releases = releases_of(doc)
    g = find_release(releases, good, "--good", name)
    b = find_release(releases, bad, "--bad", name)
    if g.key == b.key:
        raise UsageError(f"--good and --bad name the same release ({g.version}): nothing to bisect")
    lo, hi = sorted((g, b), key=lambda r: r.key)
    inside = [r for r in releases if lo.key < r.key < hi.key and r.files
              and (prereleases or not r.prerelease) and (yanked or not r.yanked)]
    return [lo, *inside, hi], g, b
