"""ENV001 (installs from the notebook) and ENV002 (imports the image doesn't provide)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import PurePosixPath

from pipeline.modules import distribution_for, normalize
from pipeline.spec.lint.cells import commands, program
from pipeline.spec.lint.model import Cell, Context, Finding, Shell, found
from pipeline.spec.lint.names import dotted

PIP = {"pip", "pip3"}
CONDA = {"conda", "mamba", "micromamba"}
APT = {"apt", "apt-get"}
# Options of install commands that take a value (the value is no package).
VALUED = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f",
    "--find-links", "-t", "--target", "--prefix", "--root", "-n", "--name", "-p", "--channel",
    "--trusted-host", "--platform", "--python-version", "-o", "--option",
}  # fmt: skip
NAMESPACES = {"google", "google.cloud"}
RUNNERS = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
           "subprocess.Popen", "os.system"}  # fmt: skip


def installed(words: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """(installer, packages) when the command installs packages; None otherwise."""
    name = program(words)
    rest = list(words[1:])
    if name.startswith("python") and rest[:2] == ["-m", "pip"]:
        name, rest = "pip", rest[2:]
    kind = "pip" if name in PIP or name.startswith("pip3.") else name
    if kind not in PIP | CONDA | APT or not rest or rest[0] != "install":
        return None
    packages: list[str] = []
    skip = False
    for word in rest[1:]:
        if skip:
            skip = False
        elif word in VALUED:
            skip = True
        elif word.startswith("-"):
            continue
        else:
            packages.append(word)
    return kind, packages


def _python_commands(cell: Cell, known: dict[str, str]) -> Iterator[Shell]:
    """Installs run from Python: os.system("pip install x"), subprocess.run([sys.executable, "-m", ...])."""
    for unit in cell.units:
        for node in unit.of(ast.Call):
            if not node.args or dotted(node.func, known) not in RUNNERS:
                continue
            line = unit.line_of(node)
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield from commands(first.value, line)
            elif isinstance(first, ast.List | ast.Tuple):
                words = [
                    e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else "python"
                    for e in first.elts
                ]
                yield Shell(line=line, words=tuple(words), text=" ".join(words))


def env001(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    for cell in cells:
        for shell in [*cell.shell, *_python_commands(cell, known)]:
            result = installed(shell.words)
            if result is None:
                continue
            kind, packages = result
            what = ", ".join(packages) or "the packages"
            if kind in APT:
                fix = f"add `apt-get install -y {' '.join(packages)}` to {ctx.dockerfile or 'the Dockerfile'}"
            else:
                fix = ctx.add_to_image(what) + " and remove the install from the notebook"
            yield found(ctx, "ENV001", cell, shell.line, f"`{kind} install {what}` runs in the notebook", fix)


def _optional(cells: list[Cell]) -> set[int]:
    """ids of imports inside `try: ... except ImportError`: optional, not required."""
    inside: set[int] = set()
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Try):
                if node.handlers:
                    for statement in node.body:
                        inside.update(id(n) for n in ast.walk(statement))
    return inside


def _local(module: str, ctx: Context) -> bool:
    if ctx.files is None:
        return False
    folder = PurePosixPath(ctx.notebook).parent
    candidates = [folder / f"{module}.py", folder / module / "__init__.py"]
    return any(c.as_posix() in ctx.files for c in candidates) or any(
        f.startswith(f"{(folder / module).as_posix()}/") for f in ctx.files
    )


def env002(cells: list[Cell], ctx: Context, known: dict[str, str]) -> Iterator[Finding]:
    if ctx.modules is None:
        return
    optional = _optional(cells)
    installs = {
        normalize(p)
        for cell in cells
        for shell in cell.shell
        for p in (installed(shell.words) or ("", []))[1]
    }
    for cell in cells:
        for unit in cell.units:
            for node in unit.of(ast.Import, ast.ImportFrom):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                    if node.module in NAMESPACES:
                        names = [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top == "__future__":
                        continue
                    if top in ctx.modules and not (top in NAMESPACES and ctx.distributions is not None):
                        continue
                    if top in NAMESPACES and ctx.distributions is not None:
                        if normalize(distribution_for(name)) in ctx.distributions or name in NAMESPACES:
                            continue
                        top = ".".join(name.split(".")[:3])
                    if _local(top, ctx):
                        continue
                    distribution = distribution_for(name)
                    if normalize(distribution) in installs:
                        continue  # ENV001 names it already
                    differs = "." in top or normalize(distribution) != normalize(top)
                    named = f" (distribution {distribution})" if differs else ""
                    yield found(
                        ctx,
                        "ENV002",
                        cell,
                        unit.line_of(node),
                        f"`{top}` is not provided by the image{named}",
                        ctx.add_to_image(distribution),
                    )
