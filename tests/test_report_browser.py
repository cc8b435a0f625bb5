"""The report in a real browser: headless Chromium at 1280 CSS pixels, no horizontal scrolling
of the page or of any table, every figure loaded, and a screenshot to look at."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from entroguard.report.html import write_report

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (scripts/install.sh --dev installs them)",
)
WIDTH = 1280
#: Every defence a campaign can name: the widest defence table the report draws.
DEFENSES = ("object_tv", "tv", "lowpass", "jpeg", "gaussian_blur")
OVERFLOW = """
const page = document.documentElement;
const wide = [...document.querySelectorAll('.table-wrap')]
    .filter(w => w.scrollWidth > w.clientWidth + 1)
    .map(w => (w.querySelector('caption') || {textContent: '?'}).textContent.slice(0, 60));
const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
return {page: page.scrollWidth, viewport: window.innerWidth, wide: wide, broken: broken,
        images: document.images.length};
"""


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": 1000, "deviceScaleFactor": 1,
                            "mobile": False})  # fmt: skip
    yield driver
    driver.quit()


def _with_every_defence(src: Path, dst: Path) -> Path:
    """A copy of the campaign with each condition also measured behind every defence (the
    payload scaled, so the numbers differ): the report's widest tables."""
    dst.mkdir()
    shutil.copy(src / "results.sqlite", dst / "results.sqlite")
    with sqlite3.connect(dst / "results.sqlite") as db:
        keys = [k for (k,) in db.execute("SELECT key FROM conditions WHERE defense = 'none'")]
        for i, name in enumerate(DEFENSES):
            scale = 0.7 + 0.05 * i
            db.execute(
                f"INSERT INTO conditions SELECT substr(key, 1, length(key) - 4) || '{name}', "
                f"model, arch, prior, beta, threat, strength, '{name}', params, n, top1, "
                f"est_bytes * {scale}, payload_bytes * {scale}, packet_bytes * {scale}, seconds, "
                "finished_at FROM conditions WHERE defense = 'none'"
            )
            db.executemany(
                f"INSERT INTO images SELECT substr(key, 1, length(key) - 4) || '{name}', image, "
                f"est_bytes, payload_bytes * {scale}, packet_bytes, correct, predicted FROM "
                "images WHERE key = ?",
                [(k,) for k in keys],
            )
    return dst


def _measure(driver, html: Path) -> dict:
    driver.get(html.resolve().as_uri())
    return driver.execute_script(OVERFLOW)


def test_the_report_fits_1280_pixels_in_chromium(tiny_campaign, browser, tmp_path):
    out = _with_every_defence(tiny_campaign, tmp_path / "every-defence")
    html = write_report(out)
    seen = _measure(browser, html)
    assert seen["viewport"] == WIDTH
    assert seen["page"] <= WIDTH, f"the page scrolls sideways: {seen['page']} px wide"
    assert seen["wide"] == [], f"tables scroll sideways at {WIDTH} px: {seen['wide']}"
    assert seen["images"] >= 6 and seen["broken"] == 0
    shot = tmp_path / "report-1280.png"
    assert browser.save_screenshot(str(shot))
    assert struct.unpack(">I", shot.read_bytes()[16:20])[0] == WIDTH  # the PNG's own width


def test_the_overflow_check_catches_a_table_too_wide(tiny_campaign, browser, tmp_path):
    """The measurement is not vacuous: a table that cannot fit is reported."""
    html = write_report(_with_every_defence(tiny_campaign, tmp_path / "wide")).read_text("utf-8")
    cells = "".join(f"<td>column-{i}-of-a-table-that-cannot-fit</td>" for i in range(40))
    wide = html.replace("</main>", f'<div class="table-wrap"><table><caption>too wide'
                                   f"</caption><tr>{cells}</tr></table></div></main>")  # fmt: skip
    path = tmp_path / "too-wide.html"
    path.write_text(wide, encoding="utf-8")
    assert _measure(browser, path)["wide"] == ["too wide"]
