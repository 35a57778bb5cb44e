"""Section registries: which sections a page has, in which order, and what data each one needs.

A section is a builder function registered under a key with a title and an order number. A section
that needs an optional file of the results folder (``sweep.csv``, ``selection.csv`` …) names it in
``needs`` and appears only where that file is present; a builder may also return ``None`` when its
data turns out to be empty. Later analyses add a section by registering one more builder; a module of
sections that is costly to import (it pulls in torch, say) is declared with ``plugin`` instead and
imported only for a results folder that holds one of its files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from .blocks import Block, Section


class HasFiles(Protocol):
    def has_file(self, name: str) -> bool: ...


Ctx = TypeVar("Ctx", bound=HasFiles)
Builder = Callable[[Any], "list[Block] | None"]


@dataclass(frozen=True)
class SectionSpec:
    key: str  # HTML anchor and registry key
    title: str
    order: int  # position on the page; the built-in sections use multiples of 10
    build: Builder
    needs: tuple[str, ...] = ()  # files of the results folder this section reads


class SectionRegistry(Generic[Ctx]):
    """An ordered set of section builders for one kind of page."""

    def __init__(self) -> None:
        self._specs: dict[str, SectionSpec] = {}
        self._plugins: dict[str, tuple[str, ...]] = {}  # module -> files, any of which makes it needed

    def plugin(self, module: str, files: tuple[str, ...]) -> None:
        """Import ``module`` (whose sections register themselves) only when one of ``files`` is present."""
        self._plugins[module] = tuple(files)

    def register(
        self, key: str, title: str, order: int, needs: tuple[str, ...] = ()
    ) -> Callable[[Builder], Builder]:
        """Decorator: register ``build(ctx) -> list[Block] | None`` as the section ``key``."""

        def decorate(build: Builder) -> Builder:
            if key in self._specs:
                raise ValueError(f"section {key!r} is registered twice")
            self._specs[key] = SectionSpec(key, title, order, build, tuple(needs))
            return build

        return decorate

    @property
    def specs(self) -> list[SectionSpec]:
        return sorted(self._specs.values(), key=lambda s: s.order)

    def build(self, ctx: Ctx) -> list[Section]:
        """Every section whose files are present and whose builder has something to show, in order."""
        for module, files in self._plugins.items():
            if any(ctx.has_file(name) for name in files):
                importlib.import_module(module)
        sections = []
        for spec in self.specs:
            if not all(ctx.has_file(name) for name in spec.needs):
                continue
            blocks = spec.build(ctx)
            if blocks:
                sections.append(Section(spec.key, spec.title, blocks))
        return sections


def folder_has(path: Path | None, name: str) -> bool:
    """Whether the folder holds ``name`` as lorascope wrote it: a file a user put there under that name (not
    in
    the folder's manifest, ``lorascope.outputs``) is not read into a report."""
    from ..outputs import read_manifest

    if path is None or not (Path(path) / name).is_file():
        return False
    manifest = read_manifest(Path(path))
    return manifest is None or name in manifest["files"]
