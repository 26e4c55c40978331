"""PATH001: paths into a person's home or a Workbench VM, and relative files not in the repository."""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterator
from pathlib import PurePosixPath

from pipeline.spec.lint.auth import CREDENTIAL_FOLDER
from pipeline.spec.lint.model import Cell, Context, Finding, found
from pipeline.spec.lint.names import dotted, string_arg

HOMES = ("/home/", "/Users/", "~/", "/content/drive/", "/root/")
# Functions whose first argument is a file the notebook reads.
READERS = {
    "open", "read_csv", "read_json", "read_parquet", "read_excel", "read_table", "read_pickle",
    "read_feather", "read_orc", "read_hdf", "load", "loadtxt", "genfromtxt", "load_model", "imread",
    "read_text", "read_bytes", "load_workbook",
}  # fmt: skip


def _personal(value: str) -> bool:
    return value.startswith(HOMES) and "\n" not in value and CREDENTIAL_FOLDER not in value


def _writes(node: ast.Call) -> bool:
    mode = string_arg(node, 1, "mode") or string_arg(node, 1)
    return mode is not None and any(c in mode for c in "wax+")


def _relative_file(node: ast.Call, known: dict[str, str]) -> str | None:
    name = dotted(node.func, known).rsplit(".", 1)[-1]
    value = string_arg(node)
    if name not in READERS or value is None or (name == "open" and _writes(node)):
        return None
    if value.startswith(("/", "~")) or "://" in value or "\n" in value or "{" in value:
        return None
    if "." not in PurePosixPath(value).name:
        return None  # not visibly a file name (a model id, a dataset name)
    return value


def path001(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    folder = posixpath.dirname(ctx.notebook)
    for cell in cells:
        for shell in cell.shell:
            for word in shell.words:
                if _personal(word):
                    yield found(ctx, "PATH001", cell, shell.line, f"{word} exists only on one machine")
                    break
        for unit in cell.units:
            docstrings = {id(n.value) for n in unit.of(ast.Expr) if isinstance(n.value, ast.Constant)}
            for node in unit.of(ast.Constant, ast.Call):
                line = unit.line_of(node)
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    if _personal(node.value):
                        yield found(ctx, "PATH001", cell, line, f"{node.value} exists only on one machine")
                elif isinstance(node, ast.Call) and ctx.files is not None:
                    relative = _relative_file(node, known)
                    if relative is None:
                        continue
                    target = posixpath.normpath(posixpath.join(folder, relative))
                    if target not in ctx.files:
                        yield found(
                            ctx,
                            "PATH001",
                            cell,
                            line,
                            f"{relative} is not in the repository (looked for {target})",
                            f"commit {target} or read the file from Cloud Storage",
                        )
