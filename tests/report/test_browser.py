"""The report in a real browser: Debian's headless Chromium, driven by Playwright, from file://.

No console error, no page error, no request leaves file:// (no network); each view is switched
to by its tab, its key element is visible and has content, and its screenshot is not blank
(decoded here: enough pixels unlike the white page, enough distinct colours). The drill-down
and the severity filter are pressed too. Skipped where Chromium or Playwright is missing,
unless PROBATORIUM_REQUIRE_BROWSER=1 or PROBATORIUM_REQUIRE_SERVICES=1 (CI): then it fails.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from probatorium.report import write_report

import report_png as png  # tests/report/ is on sys.path (rootdir-relative import)

DATA = Path(__file__).resolve().parents[1] / "data" / "report"
CHROMIUM = next((p for p in (os.environ.get("PROBATORIUM_CHROMIUM"), "/usr/bin/chromium",
                              shutil.which("chromium") or "") if p and os.path.exists(p)), None)
REQUIRED = os.environ.get("PROBATORIUM_REQUIRE_BROWSER") == "1" or os.environ.get("PROBATORIUM_REQUIRE_SERVICES") == "1"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if CHROMIUM is None or sync_playwright is None:
    why = "chromium not installed (scripts/install-debian-packages.sh)" if CHROMIUM is None else \
        "playwright not installed (requirements/test.in)"
    if REQUIRED:
        pytest.fail(f"the browser test is required here but {why}", pytrace=False)
    pytestmark = pytest.mark.skip(reason=why)

# view tab -> (a CSS selector of its key element, the text that element must contain)
VIEWS = {
    "view-1": ("section#view-1 table.matrix", "auth_session_ratelimit"),
    "view-2": ("section#view-2 svg.chart", "plaintext"),
    "view-3": ("section#view-3 table.diff", "HIGH"),
    "view-trends": ("section#view-trends svg.chart", "HIGH"),
}


def _not_blank(shot: bytes, min_fraction: float) -> tuple[int, int, int]:
    pixels, unlike, colours = png.content_stats(shot)
    assert unlike >= min_fraction * pixels and colours >= 16, (pixels, unlike, colours)
    return pixels, unlike, colours


@pytest.mark.timeout(60)
def test_report_in_headless_chromium(tmp_path):
    report = write_report([DATA / "validate-matrix", DATA / "bench", DATA / "validate-diff"],
                          tmp_path / "report.html", tmp_path / "history.jsonl")
    errors, foreign = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("request", lambda r: r.url.startswith(("file:", "data:")) or foreign.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            for view, (selector, text) in VIEWS.items():
                page.click(f'nav button[data-view="{view}"]')
                key = page.locator(selector).first
                key.wait_for(state="visible", timeout=5000)
                assert text in key.text_content()
                box = key.bounding_box()
                assert box and box["width"] > 200 and box["height"] > 40, (view, box)
                assert page.locator("section.view:visible").count() == 1
                shot = page.screenshot()
                (tmp_path / f"{view}.png").write_bytes(shot)
                _not_blank(shot, 0.03)
            _drill_down(page)
            _severity_filter(page)
        finally:
            browser.close()
    assert errors == [] and foreign == []


def _drill_down(page) -> None:
    """Pressing a matrix cell shows its properties; pressing it again hides them."""
    page.click('nav button[data-view="view-1"]')
    button = page.locator("section#view-1 button.gridcell").first
    detail = page.locator(f"#{button.get_attribute('data-detail')}")
    assert detail.is_hidden()
    button.click()
    assert detail.is_visible() and "Properties" in detail.text_content()
    assert detail.locator("table.props tbody tr").count() > 5
    _not_blank(detail.screenshot(), 0.03)
    button.click()
    assert detail.is_hidden()


def _severity_filter(page) -> None:
    """Unticking LOW hides exactly the LOW rows of the divergences."""
    page.click('nav button[data-view="view-3"]')
    rows = page.locator("section#view-3 table.diff tbody tr")
    low = rows.filter(has=page.locator("td:first-child", has_text=re.compile(r"^LOW$")))
    total, n_low = rows.count(), low.count()
    assert 0 < n_low < total
    page.uncheck('section#view-3 input.sevfilter[data-sev="LOW"]')
    assert page.locator("section#view-3 table.diff tbody tr:visible").count() == total - n_low
