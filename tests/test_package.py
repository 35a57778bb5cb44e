"""The package's shape: every module says in its first docstring line what it owns, has a test file named for
it (``tests/<package>/test_<module>.py``; a package's ``__init__`` is ``test_<package>.py``), and stays under
400 lines. audit/ and report/ keep their own rules."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lorascope"
OWN_RULES = ("audit", "report")  # packages whose tests and sizes are kept by their own owners
MAX_LINES = 400


def modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in OWN_RULES]


def mirror(path: Path) -> Path:
    parts = path.relative_to(PACKAGE).parts
    folder = ROOT / "tests" / Path(*parts[:-1])
    name = path.stem if path.stem != "__init__" else (parts[-2] if len(parts) > 1 else "lorascope")
    return folder / f"test_{name}.py"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_has_its_mirror_test_and_says_what_it_owns(path):
    test = mirror(path)
    assert test.is_file(), f"{path.relative_to(ROOT)} has no test file {test.relative_to(ROOT)}"
    tree = ast.parse(test.read_text(encoding="utf-8"))
    assert any(isinstance(n, ast.FunctionDef) and n.name.startswith("test_") for n in tree.body), test
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and len(doc.splitlines()[0]) >= 20, (
        f"{path.relative_to(ROOT)}: no first line saying what it owns"
    )
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, (
        f"{path.relative_to(ROOT)} has {lines} lines; split it into rooms of one job each"
    )


def test_the_mirror_rule_names_files_as_the_package_does():
    assert mirror(PACKAGE / "checkpoint" / "peft.py") == ROOT / "tests" / "checkpoint" / "test_peft.py"
    assert mirror(PACKAGE / "rank" / "__init__.py") == ROOT / "tests" / "rank" / "test_rank.py"
    assert mirror(PACKAGE / "__init__.py") == ROOT / "tests" / "test_lorascope.py"
