"""Copy real run folders into tests/data/report/, trimmed to a few dozen KB (see PROVENANCE.md).

Usage: python tests/data/report/trim_fixture.py VALIDATE_MATRIX_RUN BENCH_RUN DIFF_FOLDER
Keeps the documents' shape and every field; trims only list/dict lengths (incidents, cases,
seeds, findings) and recomputes the counts that summarise what was kept.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _dump(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def trim_validate(src: Path, dst: Path) -> None:
    doc = json.loads((src / "validate-results.json").read_text())
    kept = []
    for cell in doc["validation_results"]["cells"]:
        # the HIGH and MED findings first, then one LOW: every severity stays represented
        incs = sorted(cell["incidents"], key=lambda i: ("HIGH", "MED", "LOW").index(i["severity"]))
        cell["incidents"] = incs[:4] + [i for i in incs[4:] if i["severity"] == "LOW"][:1]
        kept += cell["incidents"]
        side = src / cell["folder"]
        t1 = json.loads((side / "tier1_tally.json").read_text())
        cases = t1["adversarial"]["cases"]
        order = ("wrong_accepted", "crash", "hang_until_timeout", "refused_valid", "lenient_accepted", "well_rejected")
        interesting = sorted((k for k, v in cases.items() if v["verdict"] in order),
                             key=lambda k: order.index(cases[k]["verdict"]))
        keep = set(interesting[:12]) | set(list(cases)[:4])
        t1["adversarial"]["cases"] = {k: v for k, v in cases.items() if k in keep}
        _dump(dst / cell["folder"] / "tier1_tally.json", t1)
        shutil.copy(side / "tier2_tally.json", dst / cell["folder"] / "tier2_tally.json")
        t3 = json.loads((side / "tier3_tally.json").read_text())
        t3["seeds"] = t3["seeds"][:3]
        for seed in t3["seeds"]:
            seed["timeline"]["requests"] = seed["timeline"]["requests"][:4]  # the rest: same shape
        _dump(dst / cell["folder"] / "tier3_tally.json", t3)
    doc["incidents"] = kept
    _dump(dst / "validate-results.json", doc)


def trim_bench(src: Path, dst: Path) -> None:
    shutil.copy(src / "results.json", dst / "results.json")
    for cell in json.loads((src / "results.json").read_text())["cells"]:
        (dst / cell["folder"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / cell["folder"] / "observer.sqlite", dst / cell["folder"] / "observer.sqlite")


def trim_diff(src: Path, dst: Path) -> None:
    d = json.loads((src / "diff.json").read_text())
    d["findings"] = [f for f in d["findings"] if f["severity"] != "LOW"] + \
        [f for f in d["findings"] if f["severity"] == "LOW"][:6]
    d["summary"] = {s: sum(1 for f in d["findings"] if f["severity"] == s) for s in ("HIGH", "MED", "LOW")}
    _dump(dst / "diff.json", d)


if __name__ == "__main__":
    vm, bench, vd = map(Path, sys.argv[1:4])
    for name in ("validate-matrix", "bench", "validate-diff"):
        shutil.rmtree(HERE / name, ignore_errors=True)
        (HERE / name).mkdir()
    trim_validate(vm, HERE / "validate-matrix")
    trim_bench(bench, HERE / "bench")
    trim_diff(vd, HERE / "validate-diff")
