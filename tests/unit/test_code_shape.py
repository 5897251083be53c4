"""Small modules with one job: no module over 500 lines and no function or method over 80 lines
in the product and its benchmarks (migrations and tests are exempt).

A function's length runs from its ``def`` (decorators excluded) to its last line, nested
functions included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("app", "worker", "models_store", "bench")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def python_files() -> Iterator[Path]:
    for top in CHECKED:
        yield from sorted((REPO / top).rglob("*.py"))


def long_functions(tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, line count) of every function over the limit."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    assert child.end_lineno is not None
                    lines = child.end_lineno - child.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        yield name, child.lineno, lines
                yield from walk(child, f"{name}.")
            else:
                yield from walk(child, prefix)

    return walk(tree, "")


def shape_problems() -> list[str]:
    problems = []
    for path in python_files():
        rel = path.relative_to(REPO)
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            problems.append(f"{rel}: module of {lines} lines (max {MAX_MODULE_LINES})")
        for name, lineno, length in long_functions(ast.parse(source, filename=str(rel))):
            problems.append(f"{rel}:{lineno}: {name} is {length} lines (max {MAX_FUNCTION_LINES})")
    return problems


def test_the_walk_sees_every_checked_package() -> None:
    files = list(python_files())
    for top in CHECKED:
        assert any(f.relative_to(REPO).parts[0] == top for f in files), top


def test_long_functions_are_found_nested_and_in_classes() -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"class C:\n    def method(self):\n{body}\n\ndef short():\n    pass\n"
    assert [(n, ln) for n, ln, _ in long_functions(ast.parse(source))] == [("C.method", 2)]


def test_no_module_or_function_is_too_long() -> None:
    problems = shape_problems()
    assert not problems, "too long:\n" + "\n".join(problems)
