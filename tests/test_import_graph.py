"""The package reads top-down: methods never import the command line or the benchmark harness, and no two modules
import each other, even lazily inside a function (a cycle there is still two modules that only work together).

The graph is read from the source with ``ast`` (nothing is imported): an edge ``a -> b`` for every ``import b`` or
``from b import name`` in module ``a`` (``from package import submodule`` points at the submodule), outside
``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import thrifty

ROOT = Path(thrifty.__file__).resolve().parent
# Layers on top of the library, lowest first: a module may import a layer only from within it or a layer above it.
TOP_LAYERS = ("thrifty.bench", "thrifty.cli")
ENTRY_POINT = "thrifty.__main__"  # ``python -m thrifty`` runs the command line


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (packages as their ``__init__.py``)."""
    found = {"thrifty": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix="thrifty."):
        parts = info.name.split(".")[1:]
        base = ROOT.joinpath(*parts)
        found[info.name] = base / "__init__.py" if info.ispkg else base.with_suffix(".py")
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(t for alias in node.names if (t := resolve(alias.name)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                target = full if full in modules else resolve(source)
                if target:
                    targets.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    targets.discard(name)
    return targets


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """The package's import graph, read once for the tests below (parsing every module takes about a second)."""
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _in_layer(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


def test_the_graph_sees_the_package(graph):
    assert {"thrifty.cli", "thrifty.cli.train", "thrifty.bench.runner", "thrifty.optim.soap"} <= set(graph)
    assert (
        "thrifty.schedules" in graph["thrifty.cli.train"] or "thrifty.schedules.factory" in graph["thrifty.cli.train"]
    )
    assert "thrifty.bench.claims" in graph["thrifty.cli.bench"]


def test_the_library_never_imports_the_cli_or_the_bench(graph):
    offenders = []
    for module, targets in graph.items():
        if module == ENTRY_POINT:
            continue
        allowed = next((TOP_LAYERS[: i + 1] for i, layer in enumerate(TOP_LAYERS) if _in_layer(module, (layer,))), ())
        offenders += [
            f"{module} imports {t}" for t in targets if _in_layer(t, TOP_LAYERS) and not _in_layer(t, allowed)
        ]
    assert not sorted(offenders), "\n".join(sorted(offenders))


def test_no_import_cycles(graph):
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)
