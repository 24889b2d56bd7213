"""The package's modules import each other without a cycle.

A cycle works only as long as nobody reorders an import, and it hides which module depends
on which: ``cli`` and ``demo`` once imported each other for one helper. The graph is read
from the source with ``ast``: every import that runs when a module is loaded (module and
class bodies, ``if`` and ``try`` blocks), not imports inside functions, which run later,
nor ``if TYPE_CHECKING:`` blocks, which never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import electric_proxy

PACKAGE = Path(electric_proxy.__file__).parent
ROOT = "electric_proxy"


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(file): file for file in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def load_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when a module is loaded."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from load_time_imports(node.body)
            yield from load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from load_time_imports(block)
            for handler in node.handlers:
                yield from load_time_imports(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from load_time_imports(node.body)


def imported_modules(name: str, file: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports when loaded (not their parent packages,
    which Python loads first and which are only an edge when named themselves)."""
    is_package = file.name == "__init__.py"
    found: set[str] = set()
    for node in load_time_imports(ast.parse(file.read_text(), str(file)).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            anchor = name.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        found.add(base)
        # ``from . import x`` imports the submodule x when there is one.
        found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in known}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imported_modules(name, file, known) - {name} for name, file in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (depth-first, three colours)."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target in on_stack:
                return [*stack[stack.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_reader_sees_imports_and_ignores_late_ones() -> None:
    graph = import_graph()
    assert {"electric_proxy.config", "electric_proxy.shapes"} <= graph["electric_proxy.server"]
    # The subcommands import their modules inside functions, so --help loads none of them.
    assert graph["electric_proxy.cli"] == {"electric_proxy._version"}
    assert "electric_proxy.labels" in graph["electric_proxy.metrics"]
    # The exports are imported on first use; only the TYPE_CHECKING block names them.
    assert graph[ROOT] == {"electric_proxy._version"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_the_command_line_is_the_top() -> None:
    """Nothing imports ``cli`` but ``python -m electric_proxy``: what the demo or an embedder
    needs lives below it."""
    importers = [name for name, targets in import_graph().items() if f"{ROOT}.cli" in targets]
    assert importers == [f"{ROOT}.__main__"]


def test_config_is_data_only() -> None:
    """``config`` reaches none of the assembly (the server, the command line, operations),
    and imports no endpoint or server module itself."""
    graph = import_graph()
    assembly = {"electric_proxy.server", "electric_proxy.cli"}
    assert graph_reach(graph, "electric_proxy.config") & assembly == set()
    endpoints = {"electric_proxy.endpoint", "electric_proxy.streams", "electric_proxy.http_server"}
    assert graph["electric_proxy.config"] & endpoints == set()


def graph_reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen
