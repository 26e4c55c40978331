"""Absolute folders notebooks write to: the image check IMG004 makes sure the image's user can."""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Iterable

from pipeline.errors import UsageError
from pipeline.spec.lint.cells import read_notebook
from pipeline.spec.lint.model import Cell
from pipeline.spec.lint.names import aliases, dotted, string_arg

# Last part of a called name whose first argument is a file written.
WRITERS = {
    "to_csv", "to_parquet", "to_json", "to_pickle", "to_excel", "to_feather", "savefig", "save",
    "save_model", "dump", "write_text", "write_bytes", "imwrite", "savetxt",
}  # fmt: skip
MAKERS = {"os.makedirs", "os.mkdir"}


def _folder(path: str) -> str | None:
    if not path.startswith("/") or "\n" in path or "{" in path:
        return None
    return posixpath.normpath(path)


def written_folders(cells: Iterable[Cell]) -> set[str]:
    cells = list(cells)
    known = aliases(cells)
    found: set[str] = set()
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Call):
                name = dotted(node.func, known)
                value = string_arg(node)
                if value is None or _folder(value) is None:
                    continue
                last = name.rsplit(".", 1)[-1]
                mode = string_arg(node, 1, "mode") or string_arg(node, 1) or ""
                if name in MAKERS:
                    found.add(posixpath.normpath(value))
                elif (last == "open" and any(c in mode for c in "wax+")) or last in WRITERS:
                    found.add(posixpath.dirname(posixpath.normpath(value)) or "/")
    return found


def notebook_folders(notebooks: Iterable[tuple[str, bytes]]) -> list[str]:
    """The absolute folders a set of notebooks writes to; unreadable notebooks are skipped."""
    folders: set[str] = set()
    for path, data in notebooks:
        try:
            folders |= written_folders(read_notebook(data, path))
        except UsageError:  # the test stage reports a malformed notebook itself
            continue
    return sorted(folders)
