"""The layers the code obeys: every import of `src/latentlab`, parsed with `ast` (function-level
imports included), mapped to its package, must point down the stack of `docs/architecture.md`,
and no two packages (or modules) may import each other, directly or around a loop.

`python tests/test_layers.py [SRC]` prints the package import graph (so does `pytest -s`).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import latentlab

STACK: tuple[tuple[str, ...], ...] = (
    ("errors", "io", "nn"),
    ("config", "pixels"),
    ("data", "tokenizers", "generators", "metrics"),
    ("training",),
    ("generation",),
    ("recipes",),
    ("codec", "evaluation"),
    ("study",),
    ("commands",),
    ("cli",),
)
"""Layer 0 first. A package may import packages of lower layers only: not its own layer's
others, never a higher one. The same table is in docs/architecture.md (a test checks)."""

SRC = Path(latentlab.__file__).parent
DOC = Path(__file__).parents[1] / "docs" / "architecture.md"

Graph = dict[str, dict[str, list[str]]]
"""{importer: {imported: ["module:line", ...]}}, packages or modules."""


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, is_package: bool, known: set[str]):
    """(imported module, line) for every import statement anywhere in `tree`; `from a import b`
    names module `a.b` when that is a module, else `a`; relative imports are resolved."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here[:len(here) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in known else base), node.lineno


def module_graph(src: Path = SRC) -> Graph:
    """Imports between the modules of the package at `src` (its own modules only)."""
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    graph: Graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        for target, line in imported(tree, name, path.name == "__init__.py", set(files)):
            while target not in files and "." in target:  # latentlab.x.Name -> latentlab.x
                target = target.rpartition(".")[0]
            if target in files and target != name:
                graph.setdefault(name, {}).setdefault(target, []).append(f"{name}:{line}")
    return graph


def package_of(module: str) -> str | None:
    """`latentlab.data.base` -> data; the entry point `__main__` belongs to cli; the root
    (`__version__`) to none."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return "cli" if parts[1] == "__main__" else parts[1]


def package_graph(modules: Graph) -> Graph:
    """The module graph folded onto packages (imports inside a package dropped)."""
    graph: Graph = {}
    for a, targets in modules.items():
        for b, where in targets.items():
            pa, pb = package_of(a), package_of(b)
            if pa and pb and pa != pb:
                graph.setdefault(pa, {}).setdefault(pb, []).extend(where)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layer_of(stack=STACK) -> dict[str, int]:
    return {package: i for i, layer in enumerate(stack) for package in layer}


def against_stack(graph: Graph, stack=STACK) -> list[str]:
    """Every arrow that does not point to a lower layer, with where it is made."""
    layer = layer_of(stack)
    bad = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a not in layer or b not in layer:
                bad.append(f"{a} -> {b}: {a if a not in layer else b} is in no layer")
            elif layer[b] >= layer[a]:
                kind = "within layer" if layer[b] == layer[a] else "upward"
                bad.append(f"{a} -> {b} ({kind} {layer[a]} -> {layer[b]}): "
                           f"{', '.join(graph[a][b][:3])}")
    return bad


def format_graph(graph: Graph, stack=STACK) -> str:
    """The package graph, top layer first: `layer package -> imported packages`."""
    layer = layer_of(stack)
    names = sorted(set(graph) | {b for t in graph.values() for b in t} | set(layer),
                   key=lambda p: (-layer.get(p, len(stack)), p))
    lines = [f"{layer.get(p, '?'):>2} {p:<11} -> {', '.join(sorted(graph.get(p, {}))) or '-'}"
             for p in names]
    problems = [f"cycle: {' <-> '.join(c)}" for c in cycles(graph)] + against_stack(graph, stack)
    return "\n".join(lines + problems)


def import_graph(src: Path = SRC) -> str:
    """The package import graph of the code at `src` and every problem found (cycles between
    packages or modules, arrows against the stack), as text to paste in a note."""
    modules = module_graph(src)
    return "\n".join([format_graph(package_graph(modules))] +
                     [f"module cycle: {' <-> '.join(c)}" for c in cycles(modules)])


def documented_stack(text: str) -> tuple[tuple[str, ...], ...]:
    """The layer table of docs/architecture.md: rows `| N | `a`, `b` | ... |`, layer 0 first."""
    rows = re.findall(r"^\| *(\d+) *\| *((?:`\w+`(?:, *)?)+) *\|", text, re.MULTILINE)
    return tuple(tuple(re.findall(r"`(\w+)`", names)) for _, names in
                 sorted(rows, key=lambda r: int(r[0])))


def test_no_import_cycle_between_packages():
    print("\n" + import_graph())
    assert cycles(package_graph(module_graph())) == []


def test_no_import_cycle_between_modules():
    assert cycles(module_graph()) == []


def test_every_arrow_points_down_the_stack():
    assert against_stack(package_graph(module_graph())) == []


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p, SRC)) for p in SRC.rglob("*.py")} - {None}
    assert packages == set(layer_of())


def test_the_stack_is_the_documented_one():
    assert documented_stack(DOC.read_text()) == STACK


def test_the_checks_report_a_cycle_and_an_upward_arrow():
    fake: Graph = {"data": {"training": ["latentlab.data.x:3"]},  # upward
                   "training": {"data": ["latentlab.training.y:5"]},  # with it, a cycle
                   "codec": {"evaluation": ["latentlab.codec.z:7"]},  # within a layer
                   "cli": {"errors": ["latentlab.cli:1"]}}  # fine
    assert cycles(fake) == [["data", "training"]]
    bad = against_stack(fake)
    assert len(bad) == 2
    assert bad[0].startswith("codec -> evaluation (within layer 6 -> 6): latentlab.codec.z:7")
    assert bad[1].startswith("data -> training (upward 2 -> 3): latentlab.data.x:3")
    text = format_graph(fake)
    assert "cycle: data <-> training" in text and " 3 training    -> data" in text


def test_relative_and_function_level_imports_are_seen(tmp_path):
    src = tmp_path / "latentlab"
    (src / "data").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "data" / "__init__.py").write_text("from . import base\n")
    (src / "data" / "base.py").write_text("def f():\n    from ..cli import main\n")
    (src / "cli.py").write_text("from latentlab.data.base import f\n")
    graph = module_graph(src)
    assert graph["latentlab.data"] == {"latentlab.data.base": ["latentlab.data:1"]}
    assert graph["latentlab.data.base"] == {"latentlab.cli": ["latentlab.data.base:2"]}
    assert cycles(package_graph(graph)) == [["cli", "data"]]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else SRC
    print(import_graph(root))
