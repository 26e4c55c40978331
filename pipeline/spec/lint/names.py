"""What a name in a cell refers to, from the notebook's imports.

`bq.Client` -> `google.cloud.bigquery.Client` after `from google.cloud import bigquery as bq`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from pipeline.spec.lint.model import Cell


class Names(dict[str, str]):
    """Local name -> imported dotted name, remembering what each node resolved to."""

    def __init__(self) -> None:
        super().__init__()
        self.memo: dict[int, str] = {}


def aliases(cells: Iterable[Cell]) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, over every cell of a notebook."""
    found = Names()
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Import, ast.ImportFrom):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.asname:
                            found[alias.asname] = alias.name
                        else:
                            top = alias.name.split(".")[0]
                            found[top] = top
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    for alias in node.names:
                        found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def dotted(node: ast.AST, known: dict[str, str]) -> str:
    """`a.b.c` for Name/Attribute chains, with the first name resolved; "" otherwise."""
    memo = known.memo if isinstance(known, Names) else None
    if memo is not None:
        hit = memo.get(id(node))
        if hit is None:
            hit = memo[id(node)] = _dotted(node, known)
        return hit
    return _dotted(node, known)


def _dotted(node: ast.AST, known: dict[str, str]) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Call):
        inner = dotted(node.func, known)
        return ".".join([inner + "()", *reversed(parts)]) if inner else ""
    if not isinstance(node, ast.Name):
        return ""
    parts.append(known.get(node.id, node.id))
    return ".".join(reversed(parts))


def called(node: ast.Call, known: dict[str, str]) -> str:
    return dotted(node.func, known)


def string_arg(node: ast.Call, index: int = 0, keyword: str | None = None) -> str | None:
    if keyword is not None:
        for kw in node.keywords:
            if kw.arg == keyword:
                return (
                    kw.value.value
                    if isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)
                    else None
                )
    if len(node.args) > index:
        value = node.args[index]
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
    return None


def has_keyword(node: ast.Call, name: str) -> bool:
    return any(kw.arg == name or kw.arg is None for kw in node.keywords)
