"""billing's modules import each other one way only: no module imports one that imports it back.

Read from the source with `ast` (every import statement, also those inside functions), so a
cycle hidden in a function body (as `db.init_db` once imported `models`, which imported `db`)
is found without importing anything. The package `__init__` re-exports the public names and
is left out: it imports every module, and no module imports it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import billing

PACKAGE = Path(billing.__file__).parent


def billing_imports(path: Path) -> set[str]:
    """The billing modules `path` imports (as dotted names, e.g. 'billing.models')."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("billing.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "billing":  # from billing import models
                found |= {f"billing.{a.name}" for a in node.names
                          if (PACKAGE / f"{a.name}.py").exists()}
            elif node.module.startswith("billing."):
                found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {f"billing.{p.stem}": billing_imports(p) for p in sorted(PACKAGE.glob("*.py"))
            if p.stem != "__init__"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the path that closes it (depth-first search)."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from billing import models\n"
                      "def f():\n    from billing.db import Base\n    import billing.money\n")
    assert billing_imports(module) == {"billing.models", "billing.db", "billing.money"}


def test_billing_has_no_import_cycle():
    graph = import_graph()
    assert {"billing.db", "billing.models", "billing.service", "billing.gateway"} <= set(graph)
    assert cycles(graph) == []


def test_the_tables_do_not_import_the_engine_module():
    graph = import_graph()
    assert graph["billing.models"] == {"billing.base"}
    assert "billing.models" in graph["billing.db"]
