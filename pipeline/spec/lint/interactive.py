"""INT001: interactive input in a notebook that must run unattended."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from pipeline.spec.lint.model import Cell, Context, Finding, found
from pipeline.spec.lint.names import dotted

WAITS = {
    "input": "input() waits for someone to type",
    "getpass.getpass": "getpass() waits for someone to type",
    "breakpoint": "breakpoint() stops in the debugger",
    "pdb.set_trace": "pdb.set_trace() stops in the debugger",
    "ipdb.set_trace": "ipdb.set_trace() stops in the debugger",
    "IPython.embed": "IPython.embed() waits for someone to type",
    "click.prompt": "click.prompt() waits for someone to type",
}
# Last part of a called name from ipywidgets -> why it waits for a click.
WIDGETS = {
    "interact_manual": "interact_manual waits for a click on its button",
    "Button": "a Button runs its code only when clicked",
    "on_click": "on_click runs its code only when someone clicks",
}


def _why(name: str) -> str | None:
    if name in WAITS:
        return WAITS[name]
    last = name.rsplit(".", 1)[-1]
    if last in WIDGETS and (name.startswith("ipywidgets") or last != "Button"):
        return WIDGETS[last]
    return None


def int001(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Call):
                why = _why(dotted(node.func, known))
                if why:
                    yield found(ctx, "INT001", cell, unit.line_of(node), why)
