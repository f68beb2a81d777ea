"""probatorium.report on real (trimmed) run folders: what each view shows, bad input, history."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from probatorium.errors import UsageError
from probatorium.loadgen import hist
from probatorium.report import build_report, history, load_run, svg, write_report
from probatorium.report.bench_view import probe_verdict, spectrum_points

DATA = Path(__file__).resolve().parents[1] / "data" / "report"
VM, BENCH, DIFF = DATA / "validate-matrix", DATA / "bench", DATA / "validate-diff"
SRC = Path(__file__).resolve().parents[2] / "src"


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def test_run_kinds_are_recognised():
    assert [load_run(p).kind for p in (VM, BENCH, DIFF)] == ["validate", "bench", "validate-diff"]
    assert load_run(VM / "validate-results.json").path == VM  # a document names its folder


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "nope", "no such run folder"),
    (lambda d: d, "not a run folder (no validate-results.json, results.json or diff.json)"),
    (lambda d: (d / "results.json").write_text('{"schema": "other"}') and d, "not a bench/1 bench document"),
    (lambda d: (d / "diff.json").write_text("[1]") and d, "not a validate-diff document"),
    (lambda d: (d / "diff.json").write_text("{oops") and d, "invalid JSON at line 1"),
    (lambda d: (d / "validate-results.json").write_text("{}") and d, "not a schema 5.1 validate document"),
    (lambda d: (d / "x.txt").write_text("x") and d / "x.txt", "not a run folder or a validate-results.json"),
])
def test_bad_input_is_one_usage_error(tmp_path, make, needle):
    with pytest.raises(UsageError) as exc:
        load_run(make(tmp_path))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_validate_view_grid_drilldown_and_incidents():
    run = load_run(VM)
    html = build_report([run])
    p = parse(html)
    cells = run.document.validation_results.cells
    buttons = [a for t, a in p.tags if t == "button" and "gridcell" in a.get("class", "")]
    assert len(buttons) == len(cells) == 2
    for b, c in zip(buttons, cells):  # coloured by status; each opens its own hidden drill-down
        assert ("bad" if c.status == "failed" else "ok") in b["class"]
        detail = [a for t, a in p.tags if a.get("id") == b["data-detail"]]
        assert detail and "hidden" in detail[0]
        for pid, prop in c.properties.items():
            assert re.search(rf"<td>{re.escape(pid)}</td><td><span class=\"badge [a-z]+\">{prop.status}</span></td>"
                             rf"<td>{prop.evaluations}</td>", html)
    for inc in run.document.incidents:  # every finding with its reproducer command
        assert f"cd {VM} &amp;&amp; {inc.reproducer}" in html
    t2 = json.loads((VM / cells[0].folder / "tier2_tally.json").read_text())
    assert f'{t2["tally"]["operations_covered"]}/{t2["tally"]["operations_total"]} operations' in html
    for op in t2["unreached"]:
        assert f"<td>{op}</td><td><span class=\"badge na\">unreached</span>" in html
    t3 = json.loads((VM / cells[0].folder / "tier3_tally.json").read_text())
    assert t3["seeds"] and all(f"<code>{s['seed']}</code>" in html for s in t3["seeds"])
    t1 = json.loads((VM / cells[0].folder / "tier1_tally.json").read_text())
    wrong = [k for k, v in t1["adversarial"]["cases"].items() if v["verdict"] == "wrong_accepted"]
    assert wrong and all(f'<td>{k}</td><td><span class="badge bad">wrong_accepted</span>' in html for k in wrong)


def test_bench_view_every_probe_bar_and_spectrum():
    run = load_run(BENCH)
    doc = run.document
    html = build_report([run])
    ok = [c for c in doc.cells if c.status == "ok"]
    for c in ok:  # one bar per competitor x cell, its value in its tooltip
        assert f"<title>{c.cell} / {c.competitor}: {svg.fmt_num(c.saturation.rps)}</title>" in html
        for pr in c.rate_search["probes"]:
            assert f"<td>{c.competitor}</td><td>{pr['rate']:.1f}</td><td>{pr['achieved_rps']:.1f}</td>" in html
        pts = spectrum_points(c.saturation.histogram)
        h = hist.decode(c.saturation.histogram)
        assert pts[-1] == (100.0, h.get_max_value() / 1000.0)
        assert [ms for _, ms in pts] == sorted(ms for _, ms in pts)
        assert f"{c.competitor}: {svg.fmt_num(svg.spectrum_x(99.0))}, {svg.fmt_num(pts[5][1])}" in html
    assert html.count("<polyline") >= 2 * len({c.cell for c in ok}) + 1  # rate search + spectra + CPU lines
    assert "Server CPU over each cell" in html and run.extra[ok[0].folder]  # the observer's samples were read


def test_probe_verdict_follows_the_search_rule():
    slos = [10, 50, 100]
    assert probe_verdict({"rate": 100, "achieved_rps": 100, "p99_ms": 40, "requests": 1000}, slos, 0.001) == "50, 100"
    assert probe_verdict({"rate": 100, "achieved_rps": 90, "p99_ms": 1}, slos, 0.001) == "none: not sustained"
    assert probe_verdict({"rate": 100, "achieved_rps": 100, "p99_ms": 400, "requests": 9}, slos, 0.001) \
        == "none: p99 above every SLO"


def test_diff_view_lists_every_divergence():
    run = load_run(DIFF)
    html = build_report([run])
    rows = re.findall(r"<tr><td><span class=\"badge [a-z]+\">(HIGH|MED|LOW)</span></td><td>([a-z-]+)</td><td>([^<]*)</td>",
                      html)
    assert [(f["severity"], f["kind"], f.get("predicate") or f["case"]) for f in run.document["findings"]] == rows
    assert 'class="sevfilter" data-sev="HIGH"' in html


def test_page_is_self_contained():
    html = build_report([load_run(p) for p in (VM, BENCH, DIFF)])
    p = parse(html)
    for tag, attrs in p.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value == "data:,", (tag, attrs)
        assert not (tag == "link" and attrs.get("rel") == "stylesheet")
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html.split("<main>")[0] + html.split("</main>")[1])
    views = [a["data-view"] for t, a in p.tags if t == "section" and a.get("class") == "view"]
    assert views == ["view-1", "view-2", "view-3"]


def test_history_appends_once_and_trends(tmp_path):
    f = tmp_path / "h" / "history.jsonl"
    out = write_report([VM, BENCH, DIFF], tmp_path / "r.html", f)
    write_report([VM, BENCH], tmp_path / "r.html", f)  # the same runs again: not appended twice
    lines = history.load(f)
    assert [x["kind"] for x in lines] == ["validate", "bench", "validate-diff"]
    incs = load_run(VM).document.incidents
    assert lines[0]["findings"] == {s: sum(1 for i in incs if i.severity == s) for s in ("HIGH", "MED", "LOW")}
    assert lines[2]["findings"] == load_run(DIFF).document["summary"]
    html = out.read_text()
    assert 'id="view-trends"' in html and "Bench saturation throughput per run" in html
    f.write_text(f.read_text() + "not json\n")
    with pytest.raises(UsageError, match=r"history.jsonl:4: not a JSON history line"):
        history.load(f)


def test_default_out_is_in_the_first_run_folder(tmp_path):
    run = tmp_path / "diffcopy"
    shutil.copytree(DIFF, run)
    assert write_report([run]) == run / "report.html" and (run / "report.html").stat().st_size > 5000


def test_svg_charts():
    assert "no data" in svg.bar_chart("t", [], [], {}, "y") and "no data" in svg.line_chart("t", {}, "x", "y")
    axis = svg._Axis(1, 1000, 0, 300, log=True)
    assert (axis(1), axis(10), axis(1000)) == (0, 100, 300)
    assert svg.spectrum_x(99.0) == pytest.approx(100) and svg.spectrum_x(100.0) == pytest.approx(1e6)
    chart = svg.line_chart("a<b", {"s&1": [(1, 2), (2, 4)]}, "x", "y", hlines={"SLO": 3})
    assert "a&lt;b" in chart and "s&amp;1" in chart and 'class="ref"' in chart


def test_cli_report_and_its_errors(tmp_path):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "probatorium.cli", "report", str(DIFF), "--out", str(tmp_path / "r.html")],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith(f"report: {tmp_path / 'r.html'} (")
    bad = subprocess.run([sys.executable, "-m", "probatorium.cli", "report", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"probatorium: error: {tmp_path}: not a run folder (no validate-results.json, results.json or diff.json)"]
