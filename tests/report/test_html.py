"""The rendered page: every section, every figure inlined as a PNG, the full modules table, nothing
external."""

from __future__ import annotations

import base64
import re
import struct

import pytest
from report.pageparse import parse_page

from lorascope.report.html import DPI
from lorascope.report.sections import SECTIONS
from lorascope.results import load_results

BUILT_IN = ["inputs", "headline", "heatmaps", "spectra", "energy", "magnitudes", "sweep", "modules"]
FIGURES = [
    "heatmaps",
    "spectra",
    "energy",
    "magnitude_distribution",
    "magnitude_profile",
    "sweep_error",
    "sweep_params",
]


@pytest.fixture(scope="module")
def page(adapter_report):
    return parse_page(adapter_report.read_text(encoding="utf-8"))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_every_section_is_present_in_order(page):
    assert page.sections == BUILT_IN
    keys = [
        s.key for s in SECTIONS.specs
    ]  # later analyses register more sections, which need their own files
    assert [k for k in keys if k in BUILT_IN] == BUILT_IN


def test_every_figure_is_inlined_as_a_png_and_written_at_150_dpi(page, adapter_report):
    assert [img["data-figure"] for img in page.images] == FIGURES
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(img["src"].split(",", 1)[1])
        width, height = png_size(data)
        assert width > 300 and height > 200
        assert img["alt"], "every figure has a caption as alt text"
        on_disk = (adapter_report.parent / "figures" / f"{img['data-figure']}.png").read_bytes()
        assert on_disk == data, "the inlined figure is the one written under figures/"
        # 150 dpi: the pHYs chunk holds pixels per metre
        ppm = struct.unpack(">I", data[data.index(b"pHYs") + 4 : data.index(b"pHYs") + 8])[0]
        assert round(ppm * 0.0254) == DPI


def test_modules_table_has_a_row_per_module_and_every_column(page, adapter_dir):
    modules = load_results(adapter_dir).modules
    table = page.table("sortable")
    assert len(table.rows) == len(modules) == 13
    assert table.header == list(modules.columns)
    assert [r[0] for r in table.rows] == list(modules["name"])
    fro = table.header.index("fro_norm")
    assert [float(r[fro]) for r in table.rows] == pytest.approx(list(modules["fro_norm"]), rel=1e-3)


def test_csv_download_holds_the_modules_table(page, adapter_dir):
    links = [u for t, k, u in page.urls if t == "a" and u.startswith("data:text/csv")]
    assert len(links) == 1
    csv = base64.b64decode(links[0].split(",", 1)[1]).decode()
    assert csv.splitlines()[0].split(",")[:3] == ["name", "layer", "module"]
    assert len(csv.splitlines()) == 1 + len(load_results(adapter_dir).modules)


def test_page_loads_nothing_from_anywhere(page, adapter_report):
    html = adapter_report.read_text(encoding="utf-8")
    for tag, attr, url in page.urls:
        assert url.startswith(("data:", "#")), f"<{tag} {attr}={url[:60]!r}> would load a resource"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    csp = next(m["content"] for m in page.meta if m.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "img-src data:" in csp
    assert page.scripts == 1


def test_unlayered_modules_get_their_own_table(page):
    table = next(
        t for t in page.tables if t.rows and t.rows[0][0] == "lm_head" and "sortable" not in t.classes
    )
    assert len(table.rows) == 1


def test_inputs_and_warnings_are_shown(adapter_report):
    html = adapter_report.read_text(encoding="utf-8")
    assert "/data/synthetic-adapter" in html
    assert "model.norm.weight" in html and "no partner in the base checkpoint" in html


def _figure_with_text_and_lines(dpi_figure: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), dpi=dpi_figure)
    ax = fig.add_subplot()
    ax.plot([0, 1], [1, 0], color="#D55E00")
    ax.set_title("a title")
    return fig


def test_figures_are_opaque_rgb_pngs_drawn_the_same_every_time():
    """On white every pixel is opaque, so the PNG is RGB (no alpha channel to carry); a figure drawn twice, or
    made at another resolution, gives the same bytes at DPI."""
    import io

    import numpy as np
    from PIL import Image

    from lorascope.report.html import PNG_SOFTWARE, png_bytes

    first = png_bytes(_figure_with_text_and_lines(100))
    again = png_bytes(_figure_with_text_and_lines(DPI))
    assert first.data == again.data
    assert (first.width, first.height) == (3 * DPI, 2 * DPI) == png_size(first.data)
    image = Image.open(io.BytesIO(first.data))
    assert image.mode == "RGB" and image.info["Software"] == PNG_SOFTWARE
    pixels = np.asarray(image)
    assert (pixels == 255).all(axis=2).mean() > 0.5  # mostly the white background
    assert ((pixels[..., 0] > 150) & (pixels[..., 2] < 80)).any()  # the orange line is there


def test_the_collector_is_paused_inside_and_left_as_it_was():
    import gc

    from lorascope.report.html import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("drawing failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's own pause is not undone
    finally:
        gc.enable()
