"""Read a report page back with the standard library's HTML parser: sections, images, tables, links."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Table:
    id: str
    classes: str
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class ParsedPage:
    sections: list[str] = field(default_factory=list)  # data-section keys in page order
    images: list[dict[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    urls: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # (tag, attribute, value) of every src / href
    meta: list[dict[str, str]] = field(default_factory=list)
    scripts: int = 0

    def table(self, classes: str) -> Table:
        return next(t for t in self.tables if classes in t.classes.split())


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = ParsedPage()
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href"):
            if key in a:
                self.page.urls.append((tag, key, a[key]))
        if tag == "section" and "data-section" in a:
            self.page.sections.append(a["data-section"])
        elif tag == "img":
            self.page.images.append(a)
        elif tag == "meta":
            self.page.meta.append(a)
        elif tag == "script":
            self.page.scripts += 1
        elif tag == "table":
            self.page.tables.append(Table(a.get("id", ""), a.get("class", "")))
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.page.tables:
            t = self.page.tables[-1]
            if self._in_head:
                t.header = self._row
            else:
                t.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_page(html: str) -> ParsedPage:
    p = _Parser()
    p.feed(html)
    return p.page
