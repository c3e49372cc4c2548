"""Module and function sizes: ``python -m scripts.sizes [--top N]``.

Prints the largest modules (lines) and the longest functions and methods (lines, measured with
:mod:`ast` from the ``def`` line, decorators included, to the last line of the body) in ``core/``,
``workers/``, ``dashboard/`` and ``simulator/``, with the limits the project keeps (a module at most
600 lines, a function at most 100). ``tests/test_sizes.py`` enforces them.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "workers", "dashboard", "simulator")
MODULE_MAX_LINES = 600
FUNCTION_MAX_LINES = 100


@dataclass(frozen=True, slots=True)
class Size:
    """One measured module or function: ``where`` is ``path`` or ``path:qualified.name``."""

    where: str
    lines: int
    first_line: int = 1


def python_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def module_sizes(root: Path = ROOT) -> list[Size]:
    """Every module's line count, largest first."""
    sizes = [Size(str(p.relative_to(root)), len(p.read_text(encoding="utf-8").splitlines())) for p in python_files(root)]
    return sorted(sizes, key=lambda s: (-s.lines, s.where))


def _functions(tree: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def function_sizes(root: Path = ROOT) -> list[Size]:
    """Every function and method (nested ones too), longest first."""
    sizes: list[Size] = []
    for path in python_files(root):
        rel = str(path.relative_to(root))
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for name, node in _functions(tree, ""):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            end = node.end_lineno or node.lineno
            sizes.append(Size(f"{rel}:{name}", end - start + 1, start))
    return sorted(sizes, key=lambda s: (-s.lines, s.where))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.sizes", description=__doc__)
    parser.add_argument("--top", type=int, default=15, help="how many of each to print (default 15)")
    args = parser.parse_args(argv)
    modules, functions = module_sizes(), function_sizes()
    print(f"largest modules (limit {MODULE_MAX_LINES} lines):")
    for s in modules[: args.top]:
        print(f"  {s.lines:5d}  {s.where}{'  OVER' if s.lines > MODULE_MAX_LINES else ''}")
    print(f"longest functions (limit {FUNCTION_MAX_LINES} lines):")
    for s in functions[: args.top]:
        print(f"  {s.lines:5d}  {s.where} (line {s.first_line}){'  OVER' if s.lines > FUNCTION_MAX_LINES else ''}")
    over = sum(s.lines > MODULE_MAX_LINES for s in modules) + sum(s.lines > FUNCTION_MAX_LINES for s in functions)
    print(f"{len(modules)} modules, {len(functions)} functions, {over} over a limit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
