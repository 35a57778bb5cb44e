"""The report in a real browser: headless Chromium opens it from file://, with nothing else reachable.

No console errors, no network requests, every figure decoded, a click on a column header re-sorts the table,
the filter box hides rows, and the page does not render blank. Skips only where no Chromium can be found.
"""

from __future__ import annotations

import io

import pytest
from report.chromium import Browser, find_chromium

pytestmark = pytest.mark.browser
TABLE = "table.sortable"


@pytest.fixture(scope="module")
def tab(adapter_report, tmp_path_factory):
    exe = find_chromium()
    if exe is None:
        pytest.skip(
            "no headless Chromium found: install Debian's `chromium` package (.ci/run does) "
            "or point LORASCOPE_CHROMIUM at a Chrome/Chromium binary"
        )
    browser = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    try:
        tab = browser.tab()
        tab.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        )
        tab.goto(adapter_report.as_uri())
        yield tab
    finally:
        browser.close()


def column(tab, name: str) -> list[str]:
    return tab.evaluate(
        f"(() => {{ const t = document.querySelector('{TABLE}');"
        f" const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent === '{name}');"
        " return Array.from(t.tBodies[0].rows).map(r => r.cells[i].textContent); })()"
    )


def header_selector(tab, name: str) -> str:
    index = tab.evaluate(
        f"Array.from(document.querySelector('{TABLE}').tHead.rows[0].cells)"
        f".findIndex(c => c.textContent === '{name}')"
    )
    assert index >= 0
    return f"{TABLE} thead th:nth-child({index + 1})"


def test_no_console_errors_and_no_network_requests(tab, adapter_report):
    assert tab.problems() == []
    loaded = [u for u in tab.requests() if not u.startswith("data:")]
    assert loaded == [adapter_report.as_uri()], "the page may load itself and data: URIs, nothing else"


def test_every_figure_decodes(tab):
    sizes = tab.evaluate(
        "Promise.all(Array.from(document.images).map("
        "i => i.decode().then(() => [i.naturalWidth, i.naturalHeight, i.complete])))"
    )
    assert len(sizes) == 7
    assert all(w > 0 and h > 0 and done for w, h, done in sizes)


def test_screenshot_is_not_blank(tab, tmp_path_factory):
    from PIL import Image

    png = tab.screenshot()
    (tmp_path_factory.getbasetemp() / "report-screenshot.png").write_bytes(png)
    im = Image.open(io.BytesIO(png)).convert("L")
    assert im.size == (1280, 1000)
    lo, hi = im.getextrema()
    assert lo < 60 and hi > 240, "text and background should both be visible"
    assert sum(1 for n in im.histogram() if n) > 40, "more than a few grey levels"


def test_clicking_a_column_header_sorts_the_table(tab):
    original = column(tab, "fro_norm")
    tab.click(header_selector(tab, "fro_norm"))
    ascending = [float(v) for v in column(tab, "fro_norm")]
    assert ascending == sorted(ascending) and ascending != [float(v) for v in original]
    assert (
        tab.evaluate(
            f"document.querySelector('{header_selector(tab, 'fro_norm')}').getAttribute('aria-sort')"
        )
        == "ascending"
    )
    tab.click(header_selector(tab, "fro_norm"))
    descending = [float(v) for v in column(tab, "fro_norm")]
    assert descending == sorted(ascending, reverse=True)
    tab.click(header_selector(tab, "name"))
    names = column(tab, "name")
    assert names == sorted(names, key=str.lower)
    # empty cells (lm_head has no layer) sort last in both directions
    tab.click(header_selector(tab, "layer"))
    assert column(tab, "layer")[-1] == ""
    tab.click(header_selector(tab, "layer"))
    assert column(tab, "layer")[-1] == ""


def test_filter_box_hides_rows_by_name(tab):
    shown = tab.evaluate(
        "(() => { const f = document.querySelector('input.filter'); f.value = 'layers.2 q_proj';"
        " f.dispatchEvent(new Event('input')); const t = document.querySelector('table.sortable');"
        " return [Array.from(t.tBodies[0].rows).filter(r => !r.hidden).map(r => r.cells[0].textContent),"
        " document.getElementById(f.dataset.count).textContent]; })()"
    )
    assert shown == [["model.layers.2.self_attn.q_proj"], "1 of 13"]
    assert tab.problems() == []
