"""What a notebook shows for a ``Results``: the headline cards and the main figures, as one HTML fragment.

Built from the same section builders as report.html (``sections.py``), drawn at a lower resolution so a
notebook stays small. Used by ``Results._repr_html_``; nothing here reads checkpoints or writes files.
"""

from __future__ import annotations

import html

from ..results import Results
from .blocks import CardsBlock, FigureBlock

INLINE_FIGURES = (
    "training_spectra",
    "heatmaps",
    "energy",
)  # the main figures, in this order, where a run has them
DPI = 80


def results_html(results: Results) -> str:
    """An HTML fragment: title, headline cards, the main figures, and where the tables are."""
    from . import build_page
    from .html import png_bytes

    page = build_page(results)
    blocks = [b for s in page.sections for b in s.blocks]
    parts = [
        f"<div style='font-family:sans-serif;max-width:1100px'><h3 style='margin:0.2em 0'>"
        f"{html.escape(page.title)}</h3><div style='color:#555;margin-bottom:0.6em'>"
        f"{html.escape(page.subtitle)}</div>"
    ]
    cards = next((b for b in blocks if isinstance(b, CardsBlock)), None)
    if cards is not None:
        parts.append("<div style='display:flex;flex-wrap:wrap;gap:8px;margin-bottom:0.8em'>")
        for label, value, detail in cards.items:
            parts.append(
                "<div style='border:1px solid #ccd;border-radius:6px;padding:6px 10px;min-width:150px'>"
                f"<div style='color:#555;font-size:85%'>{html.escape(label)}</div>"
                f"<div style='font-size:140%;font-weight:600'>{html.escape(value)}</div>"
                f"<div style='color:#777;font-size:80%'>{html.escape(detail)}</div></div>"
            )
        parts.append("</div>")
    figures = {b.key: b for b in blocks if isinstance(b, FigureBlock)}
    for key in INLINE_FIGURES:
        block = figures.get(key)
        if block is None:
            continue
        fig = block.draw()
        png = png_bytes(fig, dpi=DPI)
        fig.clear()
        parts.append(
            f"<figure style='margin:0 0 0.8em 0'><img src='{png.data_uri}' alt='{key}' "
            f"style='max-width:100%'><figcaption style='color:#555;font-size:85%'>"
            f"{html.escape(block.caption)}</figcaption></figure>"
        )
    others = [k for k in figures if k not in INLINE_FIGURES]
    parts.append(
        "<div style='color:#555;font-size:85%'><code>.modules</code>: a DataFrame of "
        f"{len(results.modules)} rows; <code>.spectra</code>: a Series of σ per module; "
        "<code>.figure(name)</code>"
        + (f" draws {', '.join(html.escape(k) for k in others)} too" if others else "")
        + (f"; saved in {html.escape(str(results.path))}" if results.path is not None else "")
        + ".</div></div>"
    )
    return "".join(parts)
