"""ENVV001: environment variables read without a default that no run sets."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from pipeline.spec.lint.model import Cell, Context, Finding, found
from pipeline.spec.lint.names import dotted, string_arg

# Set in every container a run starts.
ALWAYS = frozenset({"HOME", "PATH", "HOSTNAME", "PWD", "LANG", "TERM", "JPY_PARENT_PID"})
ENVIRON = "os.environ"


def _reads(node: ast.AST, known: dict[str, str]) -> str | None:
    """The variable a node reads without a default, if it does."""
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and dotted(node.value, known) == ENVIRON
    ):
        key = node.slice
        return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
    if isinstance(node, ast.Call):
        name = dotted(node.func, known)
        if name in {"os.getenv", f"{ENVIRON}.get"} and len(node.args) == 1 and not node.keywords:
            return string_arg(node)
    return None


def _sets(cells: list[Cell], known: dict[str, str]) -> set[str]:
    """Variables the notebook sets itself: os.environ["X"] = ..., setdefault, %env X=..."""
    names: set[str] = set()
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Subscript, ast.Call):
                if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                    if dotted(node.value, known) == ENVIRON and isinstance(node.slice, ast.Constant):
                        names.add(str(node.slice.value))
                elif isinstance(node, ast.Call):
                    name = dotted(node.func, known)
                    if name in {f"{ENVIRON}.setdefault", "os.putenv"}:
                        names.add(string_arg(node) or "")
                    elif name == "get_ipython().run_line_magic" and string_arg(node) == "env":
                        names.add((string_arg(node, 1) or "").replace("=", " ").split(" ")[0])
    return names


def envv001(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    set_here = _sets(cells, known) | ALWAYS | ctx.environment
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Subscript, ast.Call):
                name = _reads(node, known)
                if name is None or name in set_here:
                    continue
                yield found(
                    ctx,
                    "ENVV001",
                    cell,
                    unit.line_of(node),
                    f"{name} is read without a default and set neither by tests.env nor by the image",
                    f"set {name} in the spec's tests.env or with ENV in "
                    f"{ctx.dockerfile or 'the Dockerfile'}, or give a default: os.getenv({name!r}, ...)",
                )
