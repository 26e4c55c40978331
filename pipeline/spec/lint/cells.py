"""Reading notebook cells: IPython's input transformation, then the Python syntax tree.

Magics and shell escapes become `get_ipython()` calls; those calls are read back as
shell commands (`!cmd`, `%pip`, `%%bash` lines) and the bodies of `%%time`-like cell
magics are read as Python again. Every node keeps the line it came from in the cell.
"""

from __future__ import annotations

import ast
import difflib
import json
import shlex
from collections.abc import Iterator
from functools import cache
from typing import Any

from pipeline.errors import UsageError
from pipeline.spec.lint.model import Cell, Shell, Unit

SHELL_LINE_MAGICS = {"pip", "conda", "mamba", "micromamba"}
SHELL_CELL_MAGICS = {"bash", "sh", "script", "system"}
PYTHON_MAGICS = {"time", "timeit", "prun", "capture", "debug"}
SEPARATORS = {"&&", "||", ";", "|", "&", ";;", "(", ")"}
MARKER = "envctl: ignore["


@cache
def _transformer() -> Any:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()  # type: ignore[no-untyped-call]


def read_notebook(data: bytes, path: str) -> list[Cell]:
    """The code cells of a notebook, parsed; `UsageError` when it isn't a notebook."""
    try:
        document = json.loads(data)
    except ValueError as e:
        raise UsageError(f"{path}: not a notebook (invalid JSON: {e}); open it in Jupyter and save") from e
    cells = document.get("cells") if isinstance(document, dict) else None
    if not isinstance(cells, list):
        raise UsageError(f"{path}: not a notebook (no list of cells); open it in Jupyter and save")
    result = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        result.append(parse_cell(index, text))
    return result


def parse_cell(index: int, source: str) -> Cell:
    cell = Cell(index=index, source=source, ignored=_ignored(source))
    _read(cell, source, 1)
    return cell


def _ignored(source: str) -> frozenset[str]:
    rules: set[str] = set()
    for line in source.splitlines():
        at = line.find(MARKER)
        if at < 0 or "#" not in line[:at]:
            continue
        inside = line[at + len(MARKER) :].partition("]")[0]
        rules.update(part.strip().upper() for part in inside.split(",") if part.strip())
    return frozenset(rules)


def _line_map(original: str, transformed: str, first: int) -> tuple[int, ...]:
    """For each transformed line, the line of the original cell (offset by `first`)."""
    before, after = original.splitlines(), transformed.splitlines()
    if len(before) == len(after):
        return tuple(range(first, first + len(after)))
    lines = [first] * len(after)
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for j in range(j1, j2):
            i = i1 + (j - j1) if tag == "equal" else i1
            lines[j] = first + min(i, max(i2 - 1, i1))
    return tuple(lines)


def _read(cell: Cell, source: str, first: int) -> None:
    # Plain Python is its own transformation; only cells with IPython syntax go through it.
    try:
        transformed, tree = source, ast.parse(source)
    except (SyntaxError, ValueError):
        try:
            transformed = _transformer().transform_cell(source)
            tree = ast.parse(transformed)
        except (SyntaxError, ValueError) as e:
            cell.unparsed = cell.unparsed or f"not Python after IPython's transformation ({e})"
            return
    unit = Unit.of_tree(tree, _line_map(source, transformed, first))
    cell.units.append(unit)
    for node in unit.of(ast.Call):
        _ipython_call(cell, unit, node)


def _is_ipython(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "get_ipython"
        and not node.args
    )


def _strings(args: list[ast.expr]) -> list[str] | None:
    values = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return values if len(values) == len(args) else None


def _ipython_call(cell: Cell, unit: Unit, node: ast.Call) -> None:
    func = node.func
    if not isinstance(func, ast.Attribute) or not _is_ipython(func.value):
        return
    args = _strings(node.args)
    if args is None:
        return
    line = unit.line_of(node)
    match func.attr, args:
        case ("system" | "getoutput", [command]):
            cell.shell.extend(commands(command, line))
        case ("run_line_magic", [name, rest]) if name in SHELL_LINE_MAGICS:
            cell.shell.extend(commands(f"{name} {rest}", line))
        case ("run_line_magic", ["sx" | "system", rest]):
            cell.shell.extend(commands(rest, line))
        case ("run_line_magic", [name, rest]) if name in PYTHON_MAGICS:
            _read(cell, rest, line)
        case ("run_cell_magic", [name, _, body]) if name in SHELL_CELL_MAGICS:
            for offset, text in enumerate(body.splitlines()):
                cell.shell.extend(commands(text, line + 1 + offset))
        case ("run_cell_magic", [name, _, body]) if name in PYTHON_MAGICS:
            _read(cell, body, line + 1)


def commands(text: str, line: int) -> Iterator[Shell]:
    """The simple commands of a shell line, split at `&&`, `;`, `|`; comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = text.partition("#")[0].split()
    words: list[str] = []
    for token in [*tokens, ";"]:
        if token in SEPARATORS or set(token) <= set("&|;()"):
            if words:
                yield Shell(line=line, words=tuple(_strip_prefix(words)), text=text)
            words = []
        else:
            words.append(token)


def _strip_prefix(words: list[str]) -> list[str]:
    """`sudo`, `env`, `X=1` before the program."""
    i = 0
    while i < len(words) and (words[i] in {"sudo", "env", "exec", "time"} or _assignment(words[i])):
        i += 1
    return words[i:] or words


def _assignment(word: str) -> bool:
    name, equals, _ = word.partition("=")
    return bool(equals) and name.isidentifier()


def program(words: tuple[str, ...]) -> str:
    return words[0].rsplit("/", 1)[-1] if words else ""
