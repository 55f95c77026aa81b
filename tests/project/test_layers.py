"""The package's layers hold: checked on the source with ``ast``, no import needed.

The order comes from docs/architecture.md (the block after "Layers, lowest first"), so
the documented layering and the code cannot drift apart. Rules:

* a unit (a subpackage, or a top-level module) imports only from units on lower lines;
  units on one line are independent of each other;
* the one exception is a lazy import inside a function marked ``# layer exception:``
  with its reason on the line above it (``Client()`` starting a ``LocalCluster``);
* nothing imports another unit's ``_private`` names, or reaches into them through an
  imported module;
* no module imports itself through others, lazily (inside a function) or not, apart
  from through the one marked exception.

Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "tasknest"
DOC = ROOT / "docs" / "architecture.md"
MARK = "layer exception:"
ALLOWED_EXCEPTIONS = 1

pytestmark = pytest.mark.timeout(60)


def read_layers(text: str) -> list[list[str]]:
    """The lines of unit names of the documented layer block, lowest first."""
    head = text.index("Layers, lowest first")
    block = text[text.index("```", head) + 3:]
    block = block[:block.index("```")]
    layers = []
    for line in block.strip("\n").splitlines():
        match = re.match(r"\s*(\d+)\s+(.*?)\s*(?:#.*)?$", line)
        assert match, f"unreadable layer line in docs/architecture.md: {line!r}"
        assert int(match.group(1)) == len(layers), f"layer lines out of order at {line!r}"
        layers.append(match.group(2).split())
    return layers


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """tasknest.client.future -> client; tasknest.errors -> errors; tasknest -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


class Import:
    def __init__(self, source: str, path: Path, line: int, target: str, names: list[str],
                 lazy: bool, comment: str) -> None:
        self.source, self.path, self.line, self.target = source, path, line, target
        self.names, self.lazy, self.comment = names, lazy, comment

    def __repr__(self) -> str:
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.source} -> {self.target}{names}"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> tuple[list[Import], list[str]]:
    """The package-internal imports of one file, and its reaches into other units'
    private attributes through modules it imported."""
    source = module_name(path)
    is_package = path.name == "__init__.py"
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    out: list[Import] = []
    module_aliases: dict[str, str] = {}     # local name -> imported tasknest module

    def comment_near(lineno: int) -> str:
        return " ".join(lines[max(0, lineno - 2):lineno])

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub, lazy)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
                continue
            if isinstance(child, ast.ImportFrom):
                base = _resolve(source, is_package, child.level, child.module)
                if base == "tasknest" or base.startswith("tasknest."):
                    for alias in child.names:
                        sub = f"{base}.{alias.name}"
                        if sub in known:    # ``from . import nanny``: a module
                            out.append(Import(source, path, child.lineno, sub, [], lazy,
                                              comment_near(child.lineno)))
                            module_aliases[alias.asname or alias.name] = sub
                        else:
                            out.append(Import(source, path, child.lineno, base, [alias.name],
                                              lazy, comment_near(child.lineno)))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "tasknest" or alias.name.startswith("tasknest."):
                        out.append(Import(source, path, child.lineno, alias.name, [], lazy,
                                          comment_near(child.lineno)))
                        if alias.asname:
                            module_aliases[alias.asname] = alias.name
            visit(child, lazy)

    visit(tree, False)
    reaches = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and unit_of(module_aliases[node.value.id]) != unit_of(source)):
            reaches.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                           f"{node.value.id}.{node.attr} ({module_aliases[node.value.id]})")
    return out, reaches


def all_imports() -> tuple[list[Import], list[str]]:
    found = modules()
    known = set(found)
    imports: list[Import] = []
    reaches: list[str] = []
    for path in found.values():
        i, r = imports_of(path, known)
        imports += i
        reaches += r
    return imports, reaches


def rank_table() -> dict[str, int]:
    rank = {}
    for i, units in enumerate(read_layers(DOC.read_text())):
        for unit in units:
            assert unit not in rank, f"{unit} is on two layer lines"
            rank[unit] = i
    return rank


def layer_violations(imports: list[Import], rank: dict[str, int]) -> tuple[list, list]:
    """(imports that go up or sideways, those of them marked as the exception)."""
    bad, excepted = [], []
    for imp in imports:
        src, dst = unit_of(imp.source), unit_of(imp.target)
        if src == dst:
            continue
        if rank[dst] < rank[src]:
            continue
        (excepted if imp.lazy and MARK in imp.comment else bad).append(imp)
    return bad, excepted


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Cycles among modules (a DFS reports one per back edge)."""
    known = set(modules())
    graph: dict[str, set[str]] = {}
    for imp in imports:
        targets = {imp.target}
        for name in imp.names:     # ``from .client import client``-style is a module
            if f"{imp.target}.{name}" in known:
                targets = {f"{imp.target}.{name}"}
        for t in targets:
            if t in known and t != imp.source and t != "tasknest":
                graph.setdefault(imp.source, set()).add(t)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return cycles


# -- the tests ---------------------------------------------------------------------------
def test_every_unit_is_placed_in_a_layer():
    rank = rank_table()
    units = {unit_of(name) for name in modules()}
    assert units <= set(rank), f"not in docs/architecture.md's layers: {sorted(units - set(rank))}"
    assert set(rank) <= units, f"documented but absent: {sorted(set(rank) - units)}"


def test_imports_only_point_down():
    imports, _ = all_imports()
    bad, excepted = layer_violations(imports, rank_table())
    assert not bad, "imports against the layers:\n" + "\n".join(map(repr, bad))
    assert len(excepted) <= ALLOWED_EXCEPTIONS, "\n".join(map(repr, excepted))
    for imp in excepted:       # the one: Client() with no address starts a LocalCluster
        assert (imp.source, imp.target) == ("tasknest.client.client", "tasknest.deploy.local")


def test_no_private_names_across_units():
    imports, reaches = all_imports()
    private = [imp for imp in imports if unit_of(imp.source) != unit_of(imp.target) and (
        any(n.startswith("_") and not n.startswith("__") for n in imp.names)
        or any(part.startswith("_") and not part.startswith("__")
               for part in imp.target.split(".")))]
    assert not private, "private names imported across units:\n" + "\n".join(map(repr, private))
    assert not reaches, "private attributes reached across units:\n" + "\n".join(reaches)


def test_no_import_cycles():
    imports, _ = all_imports()
    _, excepted = layer_violations(imports, rank_table())
    cycles = import_cycles([imp for imp in imports if imp not in excepted])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# -- the checker itself catches what it must -------------------------------------------------
def _synthetic(source: str, target: str, names: list[str], lazy: bool = False,
               comment: str = "") -> Import:
    return Import(source, SRC / "x.py", 1, target, names, lazy, comment)


def test_checker_rejects_an_upward_import_and_a_cycle():
    rank = rank_table()
    up = _synthetic("tasknest.protocol.comm", "tasknest.deploy.local", ["LocalCluster"])
    assert layer_violations([up], rank)[0] == [up]
    unmarked = _synthetic("tasknest.client.client", "tasknest.deploy.local", ["LocalCluster"],
                          lazy=True)
    assert layer_violations([unmarked], rank)[0] == [unmarked]
    sideways = _synthetic("tasknest.scheduler.state", "tasknest.client.future", ["Future"])
    assert layer_violations([sideways], rank)[0] == [sideways]
    a = _synthetic("tasknest.client.future", "tasknest.client.client", ["Client"])
    b = _synthetic("tasknest.client.client", "tasknest.client.future", ["Future"])
    assert import_cycles([a, b])
    lazy = _synthetic("tasknest.client.client", "tasknest.client.future", [], lazy=True)
    assert import_cycles([a, lazy])     # a lazy import closes a cycle all the same
    assert not import_cycles([a])
