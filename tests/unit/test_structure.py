"""The house rules of the layout (README "Layout: one room per stage"), checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from readmit.settings import PROJECT_ROOT

LIBRARY = PROJECT_ROOT / "src" / "readmit"
FLOWS = PROJECT_ROOT / "flows"
MAX_TOP_LEVEL_MODULES = 8
MAX_FLOW_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: p.name)
def test_the_library_never_imports_flows(path: Path) -> None:
    imported = _imported_modules(_tree(path))
    assert not {m for m in imported if m == "flows" or m.startswith("flows.")}, path


def test_few_modules_sit_directly_in_the_package() -> None:
    modules = sorted(p.name for p in LIBRARY.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def _flow_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    def is_flow(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return isinstance(target, ast.Name) and target.id == "flow"

    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any(is_flow(d) for d in node.decorator_list)
    ]


def test_flow_functions_are_wiring_not_logic() -> None:
    found = {}
    for path in sorted(FLOWS.glob("*.py")):
        for function in _flow_functions(_tree(path)):
            assert function.end_lineno is not None
            found[f"{path.name}:{function.name}"] = function.end_lineno - function.lineno + 1
    assert len(found) >= 5, found  # the check must see the flows it guards
    too_long = {name: n for name, n in found.items() if n > MAX_FLOW_FUNCTION_LINES}
    assert not too_long, too_long
