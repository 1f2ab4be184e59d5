"""The import graph of ``src/poolbench`` has no cycle among the imports a module runs when it
is imported (module level); imports inside functions (deferred, to keep start-up light) may
point back only where listed in DEFERRED_BACK_EDGES, each with its reason."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# deferred imports (inside a function) that close a cycle with module-level ones
DEFERRED_BACK_EDGES = {
    # register_resolvers() registers rundir.run_subdir as an OmegaConf resolver; rundir
    # reads CONF_DIR and is_config_group from config at import
    ("poolbench.config", "poolbench.rundir"),
}


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_edges(src: Path, package: str = "poolbench") -> dict[str, dict[str, bool]]:
    """{module: {imported module: imported at module level?}} for imports within
    ``package``. ``from P import name`` counts as an import of ``P.name`` where that is a
    module (a submodule), else of ``P``; parent packages a dotted import runs first are not
    counted (their __init__ is what imports its submodules)."""
    files = {module_name(p, src): p for p in sorted((src / package).rglob("*.py"))}
    edges: dict[str, dict[str, bool]] = {m: {} for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        top_level |= {id(n) for stmt in tree.body if isinstance(stmt, (ast.If, ast.Try))
                      for n in ast.walk(stmt)}  # `if TYPE_CHECKING:` / try-except at top
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in files else origin
                           for a in node.names]
            for target in targets:
                if target in files and target != mod:
                    at_top = id(node) in top_level and not _type_checking_only(tree, node)
                    edges[mod][target] = edges[mod].get(target, False) or at_top
    return edges


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    for stmt in tree.body:
        if (isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
                and any(n is node for n in ast.walk(stmt))):
            return True
    return False


def find_cycle(edges: dict[str, dict[str, bool]], module_level_only: bool,
               allowed: set = frozenset()) -> list[str] | None:
    graph = {m: {t for t, top in ts.items() if (top or not module_level_only)
                 and (m, t) not in allowed} for m, ts in edges.items()}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def test_module_level_imports_are_acyclic():
    cycle = find_cycle(import_edges(SRC), module_level_only=True)
    assert cycle is None, f"import cycle at module level (A <- B: B imports A): {' <- '.join(cycle)}"


def test_deferred_imports_close_no_other_cycle():
    edges = import_edges(SRC)
    cycle = find_cycle(edges, module_level_only=False, allowed=DEFERRED_BACK_EDGES)
    assert cycle is None, f"import cycle through a deferred import (A <- B: B imports A): {' <- '.join(cycle)}"
    for a, b in DEFERRED_BACK_EDGES:  # still there, still deferred
        assert edges[a].get(b) is False, f"{a} -> {b} is listed but is not a deferred import"


def test_cycles_are_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import f\n")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from . import a\n")
    edges = import_edges(tmp_path, "pkg")
    assert edges["pkg.a"] == {"pkg.sub.b": True}
    assert edges["pkg.sub.b"] == {"pkg.a": False}
    assert edges["pkg.c"] == {"pkg.a": False}
    assert find_cycle(edges, module_level_only=True) is None
    assert set(find_cycle(edges, module_level_only=False)) == {"pkg.a", "pkg.sub.b"}
    (pkg / "sub" / "b.py").write_text("from ..a import x\n")
    assert set(find_cycle(import_edges(tmp_path, "pkg"), True)) == {"pkg.a", "pkg.sub.b"}
