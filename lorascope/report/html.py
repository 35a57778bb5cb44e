"""Rendering: a ``Page`` of sections to PNG figures and one self-contained HTML file.

Figures are drawn one at a time (each ``FigureBlock.draw`` is called once), encoded as 150 dpi PNGs,
written under ``figures/`` and inlined into the page as base64 data URIs. The page loads nothing:
no CDN, no web font, and a Content-Security-Policy that forbids every request a mistake could add.
"""

from __future__ import annotations

import base64
import gc
import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .blocks import Page, TableBlock
from .formatting import cell

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 150  # figures are laid out (figure_layout) and drawn at this resolution
PNG_LEVEL = 3  # zlib level of the figures' PNGs
CSS_PX_PER_INCH = 96  # a figure is shown at its size in inches, so its fonts read at their point size
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Png:
    data: bytes
    width: int
    height: int

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.data).decode("ascii")

    @property
    def css_width(self) -> int:
        return round(self.width * CSS_PX_PER_INCH / DPI)


def png_bytes(fig: Figure, dpi: int = DPI) -> Png:
    """Draw a figure with Agg at ``dpi`` on white and encode it as an RGB PNG (no timestamp metadata, so
    identical figures give identical files).

    The figure is drawn once (a layout engine, where it has one, runs inside that draw), and the pixels go to
    PIL as RGB at zlib level 3: on white every pixel is opaque, so the alpha channel ``savefig`` would write
    carries nothing, and level 3 encodes about a third faster than the default 6 for files of the same size.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    if fig.dpi != dpi:
        fig.set_dpi(dpi)
    fig.patch.set_facecolor("white")
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")  # (height, width, 4) -> RGB
    info = PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=PNG_LEVEL, pnginfo=info, dpi=(dpi, dpi))
    return Png(buf.getvalue(), *image.size)


@contextmanager
def collector_paused():
    """Pause Python's automatic garbage collection for the block, restoring it after.

    A figure allocates tens of thousands of objects, most of them alive until it is drawn; the collector
    would walk them again and again (and the whole heap of imported modules at each full collection), about
    a tenth of a report's drawing time. ``draw_figures`` collects each figure's garbage itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def draw_figures(page: Page) -> dict[str, Png]:
    """Draw every figure of the page once, in page order, keeping only its PNG."""
    pngs: dict[str, Png] = {}
    for block in page.figures:
        if block.key in pngs:
            raise ValueError(f"two figures of the page are keyed {block.key!r}")
        pngs[block.key] = png_bytes(block.draw())
        gc.collect(0)  # the figure's cycles, all young: the rest of the heap is not walked
    return pngs


@dataclass(frozen=True)
class TableView:
    """A table as the template renders it: header, cell strings and which columns are numeric."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    csv_uri: str | None


def table_view(block: TableBlock) -> TableView:
    df = block.data
    numeric = [
        pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns
    ]
    rows = [[cell(v) for v in rec] for rec in df.itertuples(index=False, name=None)]
    csv_uri = None
    if block.csv_name:
        csv = df.to_csv(index=False).encode("utf-8")
        csv_uri = "data:text/csv;charset=utf-8;base64," + base64.b64encode(csv).decode("ascii")
    return TableView([str(c) for c in df.columns], rows, numeric, csv_uri)


def render_html(page: Page, pngs: dict[str, Png], footer: str = "") -> str:
    """The page as one HTML document with every figure inlined."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(table_view=table_view, pngs=pngs)
    return env.get_template(TEMPLATE).render(page=page, footer=footer)


GENERATOR_TAG = '<meta name="generator" content="lorascope">'  # in every page the template writes
PNG_SOFTWARE = "lorascope"  # the Software text chunk of every figure written


def check_writable(out: Path) -> None:
    """Refuse to replace a file that is not a page lorascope wrote (no generator tag in its head)."""
    from ..errors import LorascopeError

    if out.is_file() and GENERATOR_TAG not in _head(out):
        raise LorascopeError(
            f"--out {out} is an existing file that lorascope did not write (no lorascope page header in it); "
            "refusing to overwrite it. Give a new file name or a folder."
        )


def check_figures_writable(figures: list[Path]) -> None:
    """Refuse to replace, among the PNG files about to be written, one without lorascope's Software chunk."""
    from ..errors import LorascopeError

    foreign = [
        f
        for f in figures
        if f.exists() and (not f.is_file() or f"Software\x00{PNG_SOFTWARE}" not in _head(f))
    ]
    if foreign:
        raise LorascopeError(
            f"the report's figures would replace {', '.join(map(str, foreign[:3]))}"
            f"{f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''}, which lorascope did not write; "
            "refusing to overwrite them. Give --out a new file name or an empty folder."
        )


def _head(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read(4096).decode("latin-1")


def write_page(page: Page, out: Path, figures_dir: Path | None, footer: str = "") -> Path:
    """Draw, write ``figures_dir/<key>.png`` (unless None) and the HTML file ``out``; return ``out``.

    Raises:
        LorascopeError: ``out`` is an existing file that is not a lorascope page, or a PNG about to be written
            exists and is not a lorascope figure.
    """
    from ..outputs import atomic_file

    check_writable(out)
    with collector_paused():
        pngs = draw_figures(page)
        text = render_html(page, pngs, footer)
    if figures_dir is not None:
        check_figures_writable([figures_dir / f"{key}.png" for key in pngs])
    out.parent.mkdir(parents=True, exist_ok=True)
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        for key, png in pngs.items():
            (figures_dir / f"{key}.png").write_bytes(png.data)
    atomic_file(out, text.encode("utf-8"))
    return out
