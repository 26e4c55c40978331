"""Test notebooks as read from a commit: their JSON, their parameters cell, their parameters.

Papermill injects parameters whether or not a notebook declares them; envctl warns
when a notebook has no `parameters` cell and when a name is not assigned in it.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pipeline.spec.model import Spec


class MalformedNotebook(ValueError):
    """The file is not a notebook papermill can read; the message says where."""


@dataclass(frozen=True)
class NotebookPlan:
    """One notebook to run: its path, parameters, kernel and the warnings found before running."""

    path: str
    parameters: dict[str, Any]
    kernel: str
    warnings: tuple[str, ...]


def source_of(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(str(s) for s in source) if isinstance(source, list) else str(source)


def load_notebook(data: bytes, path: str) -> dict[str, Any]:
    """The notebook as a dict, or `MalformedNotebook` naming the line and column."""
    try:
        notebook = json.loads(data)
    except UnicodeDecodeError as e:
        raise MalformedNotebook(f"{path} is not UTF-8 text: {e.reason}") from e
    except json.JSONDecodeError as e:
        raise MalformedNotebook(
            f"{path} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}"
        ) from e
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise MalformedNotebook(f"{path} is JSON but not a notebook: no 'cells' list")
    if notebook.get("nbformat") != 4:
        raise MalformedNotebook(f"{path} has nbformat {notebook.get('nbformat')!r}; papermill needs 4")
    for i, cell in enumerate(notebook["cells"]):
        if not isinstance(cell, dict) or "cell_type" not in cell:
            raise MalformedNotebook(f"{path}: cell {i} has no cell_type")
    return notebook


def parameters_for(spec: Spec, path: str) -> dict[str, Any]:
    """tests.parameters, overridden by tests.notebook_parameters by file name, then by path."""
    merged = dict(spec.tests.parameters)
    merged.update(spec.tests.notebook_parameters.get(PurePosixPath(path).name, {}))
    merged.update(spec.tests.notebook_parameters.get(path, {}))
    return merged


def parameters_cell(notebook: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cell in notebook.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and "parameters" in tags:
            return dict(cell)
    return None


def assigned_names(source: str) -> set[str] | None:
    """Names a parameters cell assigns at top level; None when it is not plain Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
    return names


def kernel_of(notebook: Mapping[str, Any]) -> str | None:
    name = notebook.get("metadata", {}).get("kernelspec", {}).get("name")
    return str(name) if name else None


def plan(spec: Spec, path: str, notebook: Mapping[str, Any]) -> NotebookPlan:
    parameters = parameters_for(spec, path)
    warnings: list[str] = []
    cell = parameters_cell(notebook)
    if parameters and cell is None:
        warnings.append(
            f"{path} has no cell tagged 'parameters'; papermill injects "
            f"{', '.join(sorted(parameters))} at the top: tag the cell that sets defaults"
        )
    elif parameters and cell is not None:
        names = assigned_names(source_of(cell))
        unknown = sorted(set(parameters) - names) if names is not None else []
        if unknown:
            known = ", ".join(sorted(names or ())) or "nothing"
            warnings.append(
                f"{path}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"(its parameters cell assigns {known}); check tests.parameters in the spec"
            )
    kernel = spec.tests.kernel or kernel_of(notebook)
    if kernel is None:
        warnings.append(f"{path} names no kernel and the spec sets no tests.kernel; using python3")
        kernel = "python3"
    return NotebookPlan(path=path, parameters=parameters, kernel=kernel, warnings=tuple(warnings))
