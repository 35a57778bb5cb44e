"""No import cycles between the modules of lorascope, read from the source with ``ast``.

Every ``import`` and ``from … import`` statement counts, wherever it stands: at the top, inside a function,
under ``TYPE_CHECKING``. Relative imports are resolved against the importing module's package. The edge
goes to the module a statement names: ``from .delta.plan import Plan`` is an edge to ``lorascope.delta.plan``;
``from .delta import Plan`` is an edge to the package ``lorascope.delta`` (its ``__init__``), and that
``__init__`` has edges to every submodule it re-exports from — so a re-export is a real edge and a cycle
through an ``__init__`` is reported like any other. ``from . import peft`` naming a submodule is an edge to
that submodule. (Python also runs a package's ``__init__`` before any of its submodules; that implicit step
is not an edge here, or every package whose ``__init__`` re-exports its own submodules would be a cycle.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lorascope"


def modules(root: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every .py file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _known(name: str, mods: dict) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``a.b.attr`` -> ``a.b``)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, is_package: bool, mods: dict) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its file."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(t for a in node.names if (t := _known(a.name, mods)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                source = ".".join(parts + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                child = f"{source}.{alias.name}"
                target = child if child in mods else _known(source, mods)
                if target:
                    out.add(target)
    out.discard(module)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root)
    return {m: imports(m, path, is_package, mods) for m, (path, is_package) in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a closed path of modules) per strongly connected component larger than one module
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.add(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_closed_path(graph, c) for c in components]


def knots(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle as 'a -> b -> a', with every module tangled in it where there are more."""
    out = []
    for component in cycles(graph):
        line = " -> ".join(component)
        tangled = _component(graph, component[0])
        if len(tangled) > len(component) - 1:
            line += f"  (tangled with it: {', '.join(sorted(tangled - set(component)))})"
        out.append(line)
    return out


def _component(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules that reach ``start`` and are reached from it."""

    def reach(edges: dict[str, set[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for child in edges[todo.pop()]:
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen

    reverse: dict[str, set[str]] = {m: set() for m in graph}
    for m, children in graph.items():
        for child in children:
            reverse[child].add(m)
    return reach(graph) & reach(reverse)


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth first, inside it)."""
    first = min(component)
    came_from: dict[str, str] = {}
    frontier = [first]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), first]  # first -> … -> node -> first
                if child not in came_from:
                    came_from[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no path closes the component {sorted(component)}")  # a component always has one


def test_no_import_cycles():
    found = knots(import_graph())
    assert not found, "import cycles inside lorascope:\n" + "\n".join("  " + line for line in found)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The reader finds relative, absolute, function-level and re-exported imports, and a cycle through
    a package ``__init__`` (so the test above can fail)."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from .leaf import thing\n")
    (root / "sub" / "leaf.py").write_text("def thing():\n    from ..top import other\n")
    (root / "top.py").write_text("import pkg.alone\nfrom . import sub\n\nother = 1\n")
    (root / "alone.py").write_text("from pkg.sub import thing\n")
    graph = import_graph(root)
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.top"}
    assert graph["pkg.top"] == {"pkg.alone", "pkg.sub"}
    assert graph["pkg.alone"] == {"pkg.sub"}
    (found,) = cycles(graph)
    assert found == ["pkg.alone", "pkg.sub", "pkg.sub.leaf", "pkg.top", "pkg.alone"]
    for a, b in zip(found, found[1:]):
        assert b in graph[a]


@pytest.mark.parametrize(
    "text, edge",
    [
        ("from .. import errors\n", "pkg.errors"),  # a submodule named in the import list
        ("from ..errors import LorascopeError\n", "pkg.errors"),
        ("from . import helper\n", "pkg.sub"),  # not a submodule: the package's __init__
    ],
)
def test_relative_imports_resolve(tmp_path, text, edge):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    for name in ("__init__.py", "errors.py", "sub/__init__.py"):
        (root / name).write_text("")
    (root / "sub" / "mod.py").write_text(text)
    assert import_graph(root)["pkg.sub.mod"] == {edge}
