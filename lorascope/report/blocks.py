"""What a report page is made of: sections holding figures, tables, facts and notes.

This is the structure step between computing (``data.py``) and rendering (``html.py``): a section
builder returns these plain objects, and nothing here draws or writes. A figure is kept as a
deferred ``draw`` call so that building a page's structure needs no matplotlib and the renderer
holds one figure in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class FigureBlock:
    """A figure, written as ``figures/<key>.png`` and inlined into the page with its caption."""

    kind: ClassVar[str] = "figure"
    key: str  # file stem under figures/, unique within a page
    caption: str  # one sentence: how to read the figure
    draw: Callable[[], Figure]
    width: str = "full"  # 'full' (page width) or 'half' (two side by side)


@dataclass
class TableBlock:
    """A table of values; ``interactive`` tables sort by any column, filter by name and download as CSV."""

    kind: ClassVar[str] = "table"
    data: pd.DataFrame
    caption: str = ""
    interactive: bool = False
    csv_name: str | None = None  # offer the full table as a CSV download under this file name
    collapsed: bool = False  # shown inside a closed <details> with the caption as its summary


@dataclass
class FactsBlock:
    """Label / value pairs (a definition list), e.g. options or library versions."""

    kind: ClassVar[str] = "facts"
    items: list[tuple[str, str]]
    title: str = ""
    collapsed: bool = False


@dataclass
class CardsBlock:
    """A row of headline numbers: (label, value, detail)."""

    kind: ClassVar[str] = "cards"
    items: list[tuple[str, str, str]]


@dataclass
class NoteBlock:
    """A paragraph of text; level 'warn' is shown highlighted."""

    kind: ClassVar[str] = "note"
    text: str
    level: str = "info"  # 'info' or 'warn'


Block = FigureBlock | TableBlock | FactsBlock | CardsBlock | NoteBlock


@dataclass
class Section:
    key: str  # the HTML anchor
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def figures(self) -> list[FigureBlock]:
        return [b for b in self.blocks if isinstance(b, FigureBlock)]


@dataclass
class Page:
    """One report page: a title, a subtitle line and its sections in order."""

    title: str
    subtitle: str
    sections: list[Section]

    @property
    def figures(self) -> list[FigureBlock]:
        return [f for s in self.sections for f in s.figures]
