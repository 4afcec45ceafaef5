"""The house rules of the package's layout, read from the source (the AST of every module of
handler/chatgw), so that a change that breaks one fails here rather than in a review:

- no import circle among chatgw's modules (every import counts: in a function, or for type checking);
- no module over 400 lines, no function over 80;
- nothing under `backends/` imports `api/`: a backend speaks to its upstream, not to a front door;
- only `api/` imports the web framework (fastapi, starlette); an import for type checking only
  loads nothing and does not count (compose.py names the type of the app it builds);
- a package's `__init__.py` only hands names on: imports, `__all__` and a docstring.

The allow-lists name what is known to break a rule today, in modules being rewritten; an entry
that no longer breaks its rule fails too, so that the lists only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3] / "handler"
PACKAGE = ROOT / "chatgw"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
WEB_FRAMEWORKS = ("fastapi", "starlette")

LONG_FUNCTIONS_ALLOWED: set[str] = set()
BACKENDS_IMPORTING_API_ALLOWED: set[str] = set()
INIT_FILES_WITH_CODE_ALLOWED: set[str] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _for_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(tree: ast.AST, *, type_checking: bool = True) -> Iterator[str]:
    """The modules an AST imports, anywhere in it (`from p import m` names p.m when m is a module);
    without the `if TYPE_CHECKING:` blocks when `type_checking` is off."""
    known = modules()
    for node in ast.iter_child_nodes(tree):
        if _for_type_checking(node) and not type_checking:
            assert isinstance(node, ast.If)
            for child in node.orelse:
                yield from imported(child, type_checking=type_checking)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in known else node.module
        yield from imported(node, type_checking=type_checking)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imported(tree) if m in known and m != name} for name, tree in known.items()}


def long_functions(trees: dict[str, ast.Module] | None = None) -> set[str]:
    found = set()

    def visit(node: ast.AST, prefix: str, module: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualified = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    assert child.end_lineno is not None
                    if child.end_lineno - child.lineno + 1 > MAX_FUNCTION_LINES:
                        found.add(f"{module}:{qualified}")
                visit(child, qualified + ".", module)
            else:
                visit(child, prefix, module)

    for name, tree in (modules() if trees is None else trees).items():
        visit(tree, "", name)
    return found


def backends_importing_api() -> set[str]:
    return {
        name
        for name, tree in modules().items()
        if name.startswith("chatgw.backends")
        and any(m == "chatgw.api" or m.startswith("chatgw.api.") for m in imported(tree))
    }


def web_framework_outside_api() -> dict[str, set[str]]:
    found = {}
    for name, tree in modules().items():
        if name == "chatgw.api" or name.startswith("chatgw.api."):
            continue
        web = {m for m in imported(tree, type_checking=False) if m.split(".")[0] in WEB_FRAMEWORKS}
        if web:
            found[name] = web
    return found


def init_files_with_code() -> set[str]:
    def hands_on(statement: ast.stmt) -> bool:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            return True
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            return isinstance(statement.value.value, str)  # a docstring
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        return [ast.unparse(t) for t in targets] == ["__all__"]

    return {
        module_name(path)
        for path in PACKAGE.rglob("__init__.py")
        if not all(hands_on(s) for s in modules()[module_name(path)].body)
    }


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_no_module_is_over_400_lines() -> None:
    long = {
        module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_80_lines() -> None:
    found = long_functions()
    assert found - LONG_FUNCTIONS_ALLOWED == set()
    assert LONG_FUNCTIONS_ALLOWED - found == set(), "shorter now: take it off LONG_FUNCTIONS_ALLOWED"


def test_no_backend_imports_a_front_door() -> None:
    found = backends_importing_api()
    assert found - BACKENDS_IMPORTING_API_ALLOWED == set()
    assert BACKENDS_IMPORTING_API_ALLOWED - found == set(), "fixed now: take it off BACKENDS_IMPORTING_API_ALLOWED"


def test_only_the_api_imports_the_web_framework() -> None:
    assert web_framework_outside_api() == {}


def test_package_init_files_only_hand_names_on() -> None:
    found = init_files_with_code()
    assert found - INIT_FILES_WITH_CODE_ALLOWED == set()
    assert INIT_FILES_WITH_CODE_ALLOWED - found == set(), "fixed now: take it off INIT_FILES_WITH_CODE_ALLOWED"


def test_the_rules_see_what_they_judge() -> None:
    """The rules read real code: a circle, a long function, an import inside a function and one for
    type checking only are all found in a made-up module."""
    made_up = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import starlette.types\n"
        "def f():\n    import fastapi\n" + "    x = 1\n" * 90
    )
    assert set(imported(made_up)) == {"typing", "starlette.types", "fastapi"}
    assert set(imported(made_up, type_checking=False)) == {"typing", "fastapi"}
    assert long_functions({"m": made_up}) == {"m:f"}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
