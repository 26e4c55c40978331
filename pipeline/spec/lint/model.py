"""The data of a lint run: a finding, a parsed cell, and what a rule may know of the image."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.spec.lint.catalog import RULES, Severity

N = TypeVar("N", bound=ast.AST)


@dataclass(frozen=True, kw_only=True)
class Finding:
    rule: str
    severity: Severity
    notebook: str
    cell: int  # 0-based index of the cell in the notebook
    line: int  # 1-based line within the cell
    source: str
    message: str
    fix: str

    def where(self) -> str:
        return f"{self.notebook}: cell {self.cell}, line {self.line}"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "notebook": self.notebook,
            "cell": self.cell,
            "line": self.line,
            "source": self.source,
            "message": self.message,
            "fix": self.fix,
            "title": RULES[self.rule].title,
        }


@dataclass(frozen=True)
class Unit:
    """One piece of Python of a cell (the cell, or the body of `%%time`), after IPython's transformation."""

    tree: ast.Module
    lines: tuple[int, ...]  # transformed line (index + 1) -> line in the cell
    nodes: tuple[ast.AST, ...]
    groups: dict[type, list[ast.AST]] = field(default_factory=dict, compare=False)

    @classmethod
    def of_tree(cls, tree: ast.Module, lines: tuple[int, ...]) -> Unit:
        nodes = tuple(ast.walk(tree))
        groups: dict[type, list[ast.AST]] = {}
        for node in nodes:
            groups.setdefault(type(node), []).append(node)
        return cls(tree=tree, lines=lines, nodes=nodes, groups=groups)

    def of(self, *kinds: type[N]) -> list[N]:
        """The nodes of these types, in walk order within each type."""
        found: list[N] = []
        for kind in kinds:
            found.extend(self.groups.get(kind, ()))  # type: ignore[arg-type]
        return found

    def line_of(self, node: ast.AST) -> int:
        number = getattr(node, "lineno", 1)
        return self.lines[number - 1] if 0 < number <= len(self.lines) else 1


@dataclass(frozen=True)
class Shell:
    """One shell command of a cell (`!cmd`, `%pip ...`, a `%%bash` line): its words."""

    line: int
    words: tuple[str, ...]
    text: str


@dataclass
class Cell:
    index: int
    source: str
    units: list[Unit] = field(default_factory=list)
    shell: list[Shell] = field(default_factory=list)
    ignored: frozenset[str] = frozenset()
    unparsed: str = ""  # why the cell could not be read as Python, if it could not

    def source_line(self, line: int) -> str:
        lines = self.source.splitlines()
        return lines[line - 1].strip() if 0 < line <= len(lines) else ""


@dataclass(frozen=True, kw_only=True)
class Context:
    """What the rules know beyond the notebook: the spec, the image, the repository."""

    notebook: str
    dockerfile: str | None = None
    requirements: str | None = None  # the requirements file of the build context, if any
    modules: frozenset[str] | None = None  # importable top-level modules; None: unknown, ENV002 is off
    distributions: frozenset[str] | None = None  # normalized names of the installed distributions
    environment: frozenset[str] = frozenset()  # variables a run sets (spec tests.env, image Env)
    accelerator: bool = False
    files: frozenset[str] | None = None  # the repository's files; None: PATH001 checks no relative path
    ignore: frozenset[str] = frozenset()

    def add_to_image(self, what: str) -> str:
        where = self.requirements or self.dockerfile or "the image's Dockerfile"
        if self.requirements and self.dockerfile:
            where = f"{self.requirements} (installed by {self.dockerfile})"
        return f"add {what} to {where}"


def found(ctx: Context, rule: str, cell: Cell, line: int, message: str, fix: str | None = None) -> Finding:
    return Finding(
        rule=rule,
        severity=RULES[rule].severity,
        notebook=ctx.notebook,
        cell=cell.index,
        line=line,
        source=cell.source_line(line),
        message=message,
        fix=fix or RULES[rule].fix,
    )
