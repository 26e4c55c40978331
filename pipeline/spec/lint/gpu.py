"""RES001: code that requires a GPU, in an image whose spec has no accelerator."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from pipeline.spec.lint.cells import program
from pipeline.spec.lint.model import Cell, Context, Finding, found
from pipeline.spec.lint.names import dotted, string_arg

PROBES = {
    "torch.cuda.is_available",
    "torch.cuda.device_count",
    "tensorflow.test.is_gpu_available",
    "tensorflow.test.gpu_device_name",
    "tensorflow.config.list_physical_devices",
    "tensorflow.config.experimental.list_physical_devices",
    "tensorflow.config.get_visible_devices",
}
DEVICE_CALLS = {"torch.device", "tensorflow.device"}


def _probe(node: ast.AST, known: dict[str, str]) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = dotted(node.func, known)
    if name not in PROBES:
        return False
    kind = string_arg(node, 0, "device_type") or string_arg(node)
    return ("physical_devices" not in name and "visible" not in name) or (kind or "").upper() == "GPU"


def _probes(node: ast.AST, known: dict[str, str]) -> bool:
    return any(_probe(n, known) for n in ast.walk(node))


def _gpu_string(value: str) -> bool:
    lowered = value.lower()
    return lowered.startswith("cuda") or lowered.startswith("/gpu") or lowered.startswith("gpu:")


def _requires(node: ast.AST, known: dict[str, str]) -> str | None:
    """Why this node requires a GPU, when it does regardless of a check."""
    if isinstance(node, ast.Assert) and _probes(node.test, known):
        return "asserts that a GPU is present"
    raises = isinstance(node, ast.If) and any(isinstance(s, ast.Raise) for s in [*node.body, *node.orelse])
    if raises and isinstance(node, ast.If) and _probes(node.test, known):
        return "raises when no GPU is present"
    if isinstance(node, ast.Subscript) and _probe(node.value, known):
        return "takes the first GPU of the device list"
    if isinstance(node, ast.Call):
        name = dotted(node.func, known)
        target = string_arg(node, 0, "device") or string_arg(node)
        if name in DEVICE_CALLS and target and _gpu_string(target):
            return f"uses device {target!r}"
        last = name.rsplit(".", 1)[-1]
        if last == "to" and target and _gpu_string(target):
            return f"moves data to {target!r}"
        if last == "cuda" and not name.startswith("torch.cuda"):
            return "calls .cuda()"
    return None


def res001(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    if ctx.accelerator:
        return
    fix = None
    for cell in cells:
        for shell in cell.shell:
            if program(shell.words) == "nvidia-smi":
                yield found(ctx, "RES001", cell, shell.line, "runs nvidia-smi, which needs a GPU", fix)
        for unit in cell.units:
            guarded: set[int] = set()
            conditionals: list[ast.If | ast.IfExp] = [*unit.of(ast.If), *unit.of(ast.IfExp)]
            for node in conditionals:
                if _probes(node.test, known):
                    branches = (
                        [*node.body, *node.orelse] if isinstance(node, ast.If) else [node.body, node.orelse]
                    )
                    guarded.update(id(n) for b in branches for n in ast.walk(b))
            for candidate in unit.of(ast.Assert, ast.If, ast.Subscript, ast.Call):
                if id(candidate) in guarded and not isinstance(candidate, ast.Assert):
                    continue
                why = _requires(candidate, known)
                if why:
                    yield found(
                        ctx,
                        "RES001",
                        cell,
                        unit.line_of(candidate),
                        f"{why}; the spec has no accelerator",
                        fix,
                    )
