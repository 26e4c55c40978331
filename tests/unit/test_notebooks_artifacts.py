"""Run artifacts: junit.xml a JUnit parser reads back, summary.json, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from junitparser import Error, Failure, JUnitXml

from pipeline.testing import artifacts
from pipeline.testing.artifacts import notebook_html, read_json, write_atomic, write_reports
from pipeline.testing.classify import classify_notebook
from pipeline.testing.model import ContainerExit, Result, TestReport, Verdict
from pipeline.testing.tasks import write_html


def report(tmp_path: Path) -> TestReport:
    failed = Verdict(
        outcome="failed",
        error="ZeroDivisionError: division by zero",
        cell_index=3,
        execution_count=4,
        line=2,
        source_line="z = y / 0",
        hint="fix cell 3, line 2",
    )
    return TestReport(
        run_id="r1",
        image="nlp.test",
        sha="a" * 40,
        digest="sha256:" + "b" * 64,
        image_ref="localhost:5000/nlp.test@sha256:" + "b" * 64,
        artifacts=tmp_path / "r1",
        results=(
            Result(name="t/ok.ipynb", kind="notebook", verdict=Verdict(outcome="passed"), seconds=3.5),
            Result(name="t/bad.ipynb", kind="notebook", verdict=failed, seconds=4.25, warnings=("w1",)),
            Result(
                name="t/x.ipynb",
                kind="notebook",
                verdict=Verdict(outcome="infrastructure", error="engine"),
                seconds=0,
            ),
            Result(name="smoke: true", kind="smoke", verdict=Verdict(outcome="passed"), seconds=0.3),
        ),
        started_at="2026-01-01T00:00:00+00:00",
    )


def test_junit_reads_back_with_failures_and_errors(tmp_path: Path) -> None:
    write_reports(report(tmp_path))
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "r1" / "junit.xml"))))
    assert (suite.tests, suite.failures, suite.errors) == (4, 1, 1)
    cases = {case.name: case for case in suite}
    assert cases["t/ok.ipynb"].is_passed
    assert cases["smoke: true"].classname == "nlp.test.smoke"
    (failure,) = cases["t/bad.ipynb"].result
    assert isinstance(failure, Failure)
    assert failure.message == "failed: cell 3 line 2: ZeroDivisionError: division by zero"
    assert "z = y / 0" in (failure.text or "")
    assert "hint: fix cell 3, line 2" in (failure.text or "")
    assert isinstance(cases["t/x.ipynb"].result[0], Error)


def test_summary_has_stable_keys(tmp_path: Path) -> None:
    write_reports(report(tmp_path))
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert summary["passed"] is False
    assert summary["counts"] == {"passed": 2, "failed": 1, "infrastructure": 1}
    bad = summary["results"][1]
    assert {
        k: bad[k] for k in ("name", "outcome", "cell_index", "execution_count", "line", "error", "hint")
    } == {
        "name": "t/bad.ipynb",
        "outcome": "failed",
        "cell_index": 3,
        "execution_count": 4,
        "line": 2,
        "error": "ZeroDivisionError: division by zero",
        "hint": "fix cell 3, line 2",
    }


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "summary.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_notebook_html_is_a_page_of_its_own_with_the_failing_cell_marked_and_nothing_executable() -> None:
    evil = "<script>alert('x')</script>"
    executed = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"tags": ["injected-parameters"]},
                "outputs": [],
                "source": "x = 1",
            },
            {"cell_type": "markdown", "metadata": {}, "source": f"# {evil}"},
            {
                "cell_type": "code",
                "execution_count": 1,
                "metadata": {},
                "source": "show()",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["seed 7\n"]},
                    {"output_type": "display_data", "data": {"text/html": evil}, "metadata": {}},
                ],
            },
            {
                "cell_type": "code",
                "execution_count": 2,
                "metadata": {},
                "source": "z = y / 0",
                "outputs": [
                    {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "", "traceback": []}
                ],
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    failed = Verdict(
        outcome="failed",
        error=f"ZeroDivisionError: {evil}",
        cell_index=2,
        execution_count=2,
        line=1,
        source_line="z = y / 0",
        hint="fix cell 2, line 1",
    )
    page = notebook_html("t/<bad>.ipynb", executed, failed).decode()
    assert page.startswith("<!DOCTYPE html>") and "<title>t/&lt;bad&gt;.ipynb</title>" in page
    assert (
        "<script" not in page and "Content-Security-Policy" in page and "http" not in page.split("<body>")[1]
    )
    assert (
        page.count('class="cell code failing" id="failing-cell"') == 1
        and "cell 2 · In [2] · failed here" in page
    )
    assert "failed · cell 2, In [2], line 1 · ZeroDivisionError: &lt;script&gt;" in page
    assert "hint: fix cell 2, line 1" in page and 'href="#failing-cell"' in page and "seed 7" in page
    passed = notebook_html("t/ok.ipynb", executed, Verdict(outcome="passed")).decode()
    assert 'class="hint"' not in passed and "failing-cell" not in passed


ERROR_OUTPUT = {
    "output_type": "error",
    "ename": "ValueError",
    "evalue": "bad",
    "traceback": ["ValueError: bad"],
}
ODD_CELLS = {
    "unhashable tags": {"metadata": {"tags": [["x"]]}},
    "metadata a list": {"metadata": []},
    "papermill metadata a list": {"metadata": {"papermill": []}},
    "data a list": {"outputs": [{"output_type": "display_data", "data": []}]},
    "outputs a number": {"outputs": 7},
    "traceback a number": {"outputs": [{"output_type": "error", "ename": "E", "traceback": 7}]},
    "output a string": {"outputs": ["x"]},
    "source of numbers": {"source": [1, 2]},
}


@pytest.mark.parametrize("odd", ODD_CELLS.values(), ids=list(ODD_CELLS))
def test_odd_executed_json_keeps_the_papermill_verdict_and_renders(odd: dict[str, Any]) -> None:
    # A notebook's own JSON (a pushed commit controls it): the verdict comes from papermill's
    # end and the error output of a well-formed cell, whatever the odd cell beside it holds.
    base = {"cell_type": "code", "execution_count": 1, "source": "x = 1", "metadata": {}, "outputs": []}
    failing = {**base, "source": "raise ValueError('bad')", "outputs": [ERROR_OUTPUT]}
    executed = {"cells": [failing, {**base, **odd}], "metadata": {}}
    verdict = classify_notebook(
        ContainerExit(exit_code=1), executed, dockerfile="Dockerfile", timeout=60, memory="1g", deadline=120
    )
    assert (verdict.outcome, verdict.error, verdict.cell_index) == ("failed", "ValueError: bad", 0)
    page = notebook_html("t/odd.ipynb", executed, verdict).decode()
    assert 'id="failing-cell"' in page and "raise ValueError(&#x27;bad&#x27;)" in page
    passed = classify_notebook(
        ContainerExit(exit_code=0),
        {"cells": [{**base, **odd}]},
        dockerfile="D",
        timeout=60,
        memory="1g",
        deadline=9,
    )
    assert passed.outcome == "passed"
    assert "cell 0 · In [1]" in notebook_html("t/odd.ipynb", {"cells": [{**base, **odd}]}, passed).decode()


def test_a_rendering_failure_costs_the_html_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = Verdict(outcome="failed", error="ValueError: bad", cell_index=0)

    def broken(name: str, executed: dict[str, Any], verdict: Verdict) -> bytes:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(artifacts, "notebook_html", broken)
    html, why = write_html(tmp_path, "t/nb.ipynb", "repo/t/nb.ipynb", {"cells": []}, verdict)
    assert (
        html is None and why == "rendering nb.ipynb failed (RecursionError: maximum recursion depth exceeded)"
    )
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    html, why = write_html(tmp_path, "t/nb.ipynb", "repo/t/nb.ipynb", {"cells": []}, verdict)
    assert (html, why) == ("t/nb.html", "") and (tmp_path / "t" / "nb.html").is_file()


def test_deeply_nested_executed_json_is_not_a_notebook(tmp_path: Path) -> None:
    (tmp_path / "nb.ipynb").write_text("[" * 100_000 + "]" * 100_000)
    assert read_json(tmp_path / "nb.ipynb") is None
