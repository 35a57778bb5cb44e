"""Section registries: page order, sections that need an optional file, builders with nothing to show."""

from __future__ import annotations

import pytest

from lorascope.report.blocks import NoteBlock
from lorascope.report.registry import SectionRegistry


class Ctx:
    def __init__(self, files=()):
        self.files = set(files)

    def has_file(self, name):
        return name in self.files


def registry():
    reg = SectionRegistry()
    reg.register("late", "Late", order=90)(lambda ctx: [NoteBlock("late")])
    reg.register("early", "Early", order=10)(lambda ctx: [NoteBlock("early")])
    reg.register("sweep", "Sweep", order=50, needs=("sweep.csv",))(lambda ctx: [NoteBlock("sweep")])
    reg.register("empty", "Empty", order=60)(lambda ctx: None)
    return reg


def test_sections_come_in_order_and_optional_ones_only_with_their_file():
    reg = registry()
    assert [s.key for s in reg.build(Ctx())] == ["early", "late"]
    built = reg.build(Ctx({"sweep.csv"}))
    assert [s.key for s in built] == ["early", "sweep", "late"]
    assert built[1].title == "Sweep" and built[1].blocks[0].text == "sweep"


def test_a_key_registers_once():
    reg = registry()
    with pytest.raises(ValueError, match="'early' is registered twice"):
        reg.register("early", "Again", order=1)(lambda ctx: None)


def test_a_plugin_module_is_imported_only_where_its_file_is(tmp_path, monkeypatch):
    (tmp_path / "late_sections.py").write_text(
        "from lorascope.report.blocks import NoteBlock\n"
        "from test_registry_target import REG\n"
        "REG.register('extra', 'Extra', order=70)(lambda ctx: [NoteBlock('extra')])\n"
    )
    (tmp_path / "test_registry_target.py").write_text("REG = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import test_registry_target

    reg = registry()
    test_registry_target.REG = reg
    reg.plugin("late_sections", ("extra.csv",))
    assert [s.key for s in reg.build(Ctx())] == ["early", "late"]
    assert [s.key for s in reg.build(Ctx({"extra.csv"}))] == ["early", "extra", "late"]
