"""A real bisect over real h11 releases from the package index: the adversarial case
chunk_data_missing_crlf (bytes after chunk-data are not CRLF, RFC 9112 §7.1) is acted on by
uvicorn-h11 with h11 0.13.0-0.15.0 and rejected with 400 from h11 0.16.0 (the fix of
CVE-2025-43859). --good is the newer release, so the search looks for the first good one.
Skipped with the reason when the index cannot be reached; warm pip cache: about 15 s."""

from __future__ import annotations

import json
import sys

import pytest

from probatorium.bisect.releases import fetch_index
from probatorium.errors import InfraError

pytestmark = pytest.mark.e2e


def test_bisect_h11_chunked_fix(capsys, monkeypatch):
    try:
        fetch_index("h11", timeout=10)
    except InfraError as e:
        pytest.skip(f"the package index is unreachable: {e}")
    from probatorium.cli import main

    monkeypatch.setattr(sys, "argv", [
        "probatorium", "bisect", "--package", "h11", "--good", "0.16.0", "--bad", "0.13.0",
        "--predicate", "I-ADV-ACCEPTED", "--case", "chunk_data_missing_crlf", "--quiet-timeout", "1", "--json"])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    doc = json.loads(out.out)
    assert doc["releases"] == ["0.13.0", "0.14.0", "0.15.0", "0.16.0"]
    assert (doc["direction"], doc["first"], doc["last"], doc["undecided"]) == ("fixed", "0.16.0", "0.15.0", [])
    states = {p["version"]: p["state"] for p in doc["probes"]}
    assert states == {"0.13.0": "bad", "0.16.0": "good", "0.14.0": "bad", "0.15.0": "bad"}
    for p in doc["probes"]:
        assert p["imported"]["h11"] == p["version"]  # the probe really imported that release
        assert ("verdict wrong_accepted" if p["state"] == "bad" else "verdict well_rejected") in p["evidence"]
    assert "probe h11 0.15.0: BAD" in out.err
