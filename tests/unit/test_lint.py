"""The lint rules: for every rule a notebook that must be found and a clean one that must not."""

from __future__ import annotations

import json

import pytest

from pipeline.spec.lint.catalog import RULES
from pipeline.spec.lint.cells import parse_cell
from pipeline.spec.lint.model import Context
from pipeline.spec.lint.runner import facts_of, lint_cells, lint_notebook, requirement_names
from tests.helpers import DATA

LINT = DATA / "lint"
EXPECTED: dict[str, list[list[object]]] = json.loads((LINT / "expected.json").read_text())
FILES = frozenset(p.relative_to(DATA.parent.parent).as_posix() for p in LINT.rglob("*") if p.is_file())


def context(notebook: str, **changes: object) -> Context:
    facts = facts_of(json.loads((LINT / "sbom.json").read_text()))
    values: dict[str, object] = {
        "notebook": notebook,
        "dockerfile": "docker/team.task/Dockerfile",
        "requirements": "docker/team.task/requirements.txt",
        "modules": facts.modules,
        "distributions": facts.distributions,
        "environment": facts.environment | {"OUTPUT_DIR"},
        "accelerator": False,
        "files": FILES,
    }
    values.update(changes)
    return Context(**values)  # type: ignore[arg-type]


def test_every_rule_has_a_found_and_a_clean_notebook() -> None:
    assert {name.split("-")[0] for name in EXPECTED} == set(RULES)
    for rule in RULES:
        assert EXPECTED[f"{rule}-found"], rule
        assert EXPECTED[f"{rule}-clean"] == [], rule


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rule_finds_exactly_what_it_must(name: str) -> None:
    path = f"tests/data/lint/{name}.ipynb"
    rule = name.split("-")[0]
    report = lint_notebook((LINT / f"{name}.ipynb").read_bytes(), context(path))
    mine = [f for f in report.findings if f.rule == rule]
    got = [[f.rule, f.cell, f.line] for f in mine]
    assert got == EXPECTED[name], [f"{f.where()} {f.rule}: {f.message} | {f.source}" for f in mine]
    assert report.notes == []
    for finding in mine:
        assert finding.notebook == path
        assert finding.source  # the offending line, as written
        assert finding.fix
        assert finding.severity == RULES[finding.rule].severity


def test_env001_names_the_package_and_the_file_to_add_it_to() -> None:
    report = lint_notebook((LINT / "ENV001-found.ipynb").read_bytes(), context("nb.ipynb"))
    first = report.findings[0]
    assert first.message == "`pip install lightgbm==4.3.0` runs in the notebook"
    assert "docker/team.task/requirements.txt" in first.fix
    assert "docker/team.task/Dockerfile" in first.fix
    apt = report.findings[-1]
    assert apt.source == "apt-get install -y libgomp1"
    assert "apt-get install -y libgomp1" in apt.fix


def test_env002_names_the_distribution_when_the_import_name_differs() -> None:
    report = lint_notebook((LINT / "ENV002-found.ipynb").read_bytes(), context("nb.ipynb"))
    messages = [f.message for f in report.findings]
    assert messages[0] == "`sklearn` is not provided by the image (distribution scikit-learn)"
    assert "google.cloud.storage" in messages[2] and "google-cloud-storage" in messages[2]
    assert messages[3] == "`torch` is not provided by the image"


def test_env002_is_off_without_a_version_to_compare_with() -> None:
    report = lint_notebook((LINT / "ENV002-found.ipynb").read_bytes(), context("nb.ipynb", modules=None))
    assert [f for f in report.findings if f.rule == "ENV002"] == []


def test_res001_is_off_when_the_spec_has_an_accelerator() -> None:
    report = lint_notebook((LINT / "RES001-found.ipynb").read_bytes(), context("nb.ipynb", accelerator=True))
    assert [f for f in report.findings if f.rule == "RES001"] == []


def test_spec_ignore_turns_a_rule_off() -> None:
    report = lint_notebook(
        (LINT / "INT001-found.ipynb").read_bytes(), context("nb.ipynb", ignore=frozenset({"INT001"}))
    )
    assert [f for f in report.findings if f.rule == "INT001"] == []
    assert [f for f in report.findings if f.rule == "ENV002"]  # the other rules still run


def test_cell_comment_suppresses_only_its_rules_in_its_cell() -> None:
    cell = parse_cell(0, "name = input()  # envctl: ignore[INT001, PATH001]\nopen('/home/jupyter/x.csv')")
    other = parse_cell(1, "name = input()")
    found = lint_cells([cell, other], context("nb.ipynb"))
    assert [(f.rule, f.cell) for f in found] == [("INT001", 1)]


def test_lines_after_a_continued_shell_escape_keep_their_place() -> None:
    cell = parse_cell(0, "!echo a \\\n  b\nx = input()")
    (finding,) = lint_cells([cell], context("nb.ipynb"))
    assert (finding.rule, finding.line, finding.source) == ("INT001", 3, "x = input()")


def test_magics_bodies_are_read_as_python_or_shell() -> None:
    timed = parse_cell(0, "%%time\nimport os\nx = os.environ['NOPE']")
    captured = parse_cell(1, "%%capture\n!pip install foo")
    found = lint_cells([timed, captured], context("nb.ipynb"))
    assert [(f.rule, f.cell, f.line) for f in found] == [("ENVV001", 0, 3), ("ENV001", 1, 2)]


def test_a_cell_that_is_not_python_is_a_note_not_a_crash() -> None:
    data = json.dumps({"cells": [{"cell_type": "code", "source": "def broken(:\n"}], "nbformat": 4}).encode()
    report = lint_notebook(data, context("nb.ipynb"))
    assert report.findings == []
    assert report.notes and "cell 0" in report.notes[0]


def test_requirement_names() -> None:
    text = "# deps\npandas>=2\nscikit-learn==1.5 ; python_version>'3'\n-r base.txt\nlightgbm[gpu]\n\n"
    assert requirement_names(text) == ["pandas", "scikit-learn", "lightgbm"]


def test_absolute_folders_notebooks_write_to() -> None:
    from pipeline.spec.lint.writes import written_folders

    cells = [
        parse_cell(0, "import os\nos.makedirs('/opt/results/run', exist_ok=True)"),
        parse_cell(1, "df.to_csv('/srv/out/table.csv')\nwith open('/var/log/nb.txt', 'a') as f:\n    pass"),
        parse_cell(2, "open('/etc/hosts').read()\ndf.to_csv('relative.csv')\n!touch /ignored/shell"),
    ]
    assert written_folders(cells) == {"/opt/results/run", "/srv/out", "/var/log"}
