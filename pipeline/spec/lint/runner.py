"""Run the lint rules over notebooks: the spec's test notebooks and `lint.paths`, or given files."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UsageError
from pipeline.modules import modules_of, normalize
from pipeline.source import Tree
from pipeline.spec import model as spec_module
from pipeline.spec.lint import auth, environ, gpu, interactive, packages, paths
from pipeline.spec.lint.cells import read_notebook
from pipeline.spec.lint.model import Cell, Context, Finding
from pipeline.spec.lint.names import aliases

Check = Callable[[list[Cell], Context, dict[str, str]], Iterator[Finding]]
CHECKS: tuple[Check, ...] = (
    packages.env001,
    packages.env002,
    auth.auth001,
    auth.auth002,
    environ.envv001,
    paths.path001,
    interactive.int001,
    gpu.res001,
)


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def extend(self, other: LintReport) -> None:
        self.findings.extend(other.findings)
        self.notebooks.extend(other.notebooks)
        self.notes.extend(n for n in other.notes if n not in self.notes)

    def to_json(self) -> dict[str, Any]:
        return {
            "notebooks": self.notebooks,
            "errors": len(self.errors),
            "warnings": len(self.findings) - len(self.errors),
            "findings": [f.to_json() for f in self.findings],
            "notes": self.notes,
        }


def lint_cells(cells: list[Cell], ctx: Context) -> list[Finding]:
    known = aliases(cells)
    ignored = {cell.index: cell.ignored for cell in cells}
    seen: set[tuple[str, int, int]] = set()
    result: list[Finding] = []
    for check in CHECKS:
        for finding in check(cells, ctx, known):
            key = (finding.rule, finding.cell, finding.line)
            if finding.rule in ctx.ignore or finding.rule in ignored.get(finding.cell, ()) or key in seen:
                continue
            seen.add(key)
            result.append(finding)
    return sorted(result, key=lambda f: (f.notebook, f.cell, f.line, f.rule))


def lint_notebook(data: bytes, ctx: Context) -> LintReport:
    cells = read_notebook(data, ctx.notebook)
    report = LintReport(findings=lint_cells(cells, ctx), notebooks=[ctx.notebook])
    report.notes.extend(
        f"{ctx.notebook}: cell {c.index}: {c.unparsed}; not linted" for c in cells if c.unparsed
    )
    return report


@dataclass(frozen=True)
class ImageFacts:
    """What a version's SBOM says: importable modules, distributions, environment variable names."""

    modules: frozenset[str]
    distributions: frozenset[str]
    environment: frozenset[str]


def facts_of(sbom: Mapping[str, Any]) -> ImageFacts:
    names = [str(p.get("name", "")) for p in [*sbom.get("pip", []), *sbom.get("conda", [])]]
    modules = {str(m) for m in sbom.get("modules", [])}
    for name in names:
        modules |= modules_of(name)
    return ImageFacts(
        modules=frozenset(modules),
        distributions=frozenset(normalize(n) for n in names),
        environment=frozenset(str(e) for e in sbom.get("env", [])),
    )


def requirement_names(text: str) -> list[str]:
    """Distribution names of a requirements file (options, URLs and comments skipped)."""
    names = []
    for raw in text.splitlines():
        line = raw.partition("#")[0].strip()
        if not line or line.startswith("-") or "://" in line:
            continue
        end = next((i for i, c in enumerate(line) if c in "<>=!~;[ @"), len(line))
        names.append(line[:end])
    return names


def _requirements(spec: spec_module.Spec, tree: Tree) -> str | None:
    for name in ("requirements.txt", "environment.yml"):
        path = posixpath.join(spec.build.context, name) if spec.build.context != "." else name
        if tree.read(path) is not None:
            return path
    return None


def spec_context(
    spec: spec_module.Spec | None,
    tree: Tree,
    notebook: str,
    facts: ImageFacts | None,
    files: frozenset[str] | None,
) -> Context:
    if spec is None:
        return Context(notebook=notebook, files=files)
    requirements = _requirements(spec, tree)
    modules = distributions = None
    if facts is not None:
        wanted = (
            requirement_names((tree.read(requirements) or b"").decode(errors="replace"))
            if requirements
            else []
        )
        modules = facts.modules.union(*(modules_of(n) for n in wanted))
        distributions = facts.distributions | {normalize(n) for n in wanted}
    return Context(
        notebook=notebook,
        dockerfile=spec.build.dockerfile,
        requirements=requirements,
        modules=modules,
        distributions=distributions,
        environment=frozenset(spec.tests.env) | (facts.environment if facts else frozenset()),
        accelerator=spec.cloud.accelerator is not None,
        files=files,
        ignore=frozenset(spec.lint.ignore),
    )


def lint_spec(
    spec: spec_module.Spec,
    tree: Tree,
    *,
    sbom: Mapping[str, Any] | None,
    only: Iterable[str] | None = None,
) -> LintReport:
    """Lint a spec's notebooks (or `only` those of them) against the SBOM of a version of it.

    A malformed notebook is a note (the test stage reports it), unless named in `only`.
    """
    facts = facts_of(sbom) if sbom else None
    files = frozenset(tree.files(""))
    report = LintReport()
    if facts is None:
        report.notes.append(f"{spec.image}: no version to compare imports with; ENV002 not checked")
    for path in only if only is not None else spec_module.lint_notebooks(spec, tree):
        ctx = spec_context(spec, tree, path, facts, files)
        try:
            report.extend(lint_notebook(tree.read(path) or b"", ctx))
        except UsageError as e:
            if only is not None:
                raise
            report.notebooks.append(path)
            report.notes.append(f"{e}; not linted")
    return report
