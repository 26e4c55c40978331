"""The artifacts of a run: executed notebooks, HTML renderings, junit.xml, summary.json.

Everything lands in the run folder by an atomic rename, so a reader never sees half a
file. The HTML of an executed notebook is rendered here, on the host, as the report
renders it (`report.notebook`: escaped text and images, no script): no notebook's
container imports nbconvert for it.
"""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pipeline.testing.model import Result, TestReport, Verdict

FAILURE_OUTCOMES = {"failed", "timeout", "oom", "kernel_died", "missing_module", "malformed"}


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def move_into(source: Path, target: Path) -> None:
    """Move a finished file into the run folder (a rename on one file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _message(result: Result) -> str:
    verdict = result.verdict
    parts: list[str] = [verdict.outcome]
    if verdict.cell_index is not None:
        parts.append(f"cell {verdict.cell_index}" + (f" line {verdict.line}" if verdict.line else ""))
    if verdict.error:
        parts.append(verdict.error)
    return ": ".join(parts)


def junit_xml(report: TestReport) -> bytes:
    """A JUnit report: one testcase per notebook or smoke check."""
    failures = sum(1 for r in report.results if r.verdict.outcome in FAILURE_OUTCOMES)
    errors = sum(1 for r in report.results if not r.passed and r.verdict.outcome not in FAILURE_OUTCOMES)
    suites = ET.Element("testsuites", name=f"envctl test {report.image}")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=report.image,
        tests=str(len(report.results)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{sum(r.seconds for r in report.results):.3f}",
        timestamp=report.started_at,
    )
    props = ET.SubElement(suite, "properties")
    for key in ("run_id", "sha", "digest", "image_ref"):
        ET.SubElement(props, "property", name=key, value=str(getattr(report, key)))
    for result in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{report.image}.{result.kind}",
            name=result.name,
            time=f"{result.seconds:.3f}",
        )
        if result.passed:
            continue
        tag = "failure" if result.verdict.outcome in FAILURE_OUTCOMES else "error"
        element = ET.SubElement(case, tag, message=_message(result), type=result.verdict.outcome)
        lines = [_message(result)]
        if result.verdict.source_line:
            lines.append(f"    {result.verdict.source_line}")
        lines.append(f"hint: {result.verdict.hint}")
        element.text = "\n".join(lines)
        if result.warnings:
            ET.SubElement(case, "system-err").text = "\n".join(result.warnings)
    if report.checks:
        checks = ET.SubElement(
            suites,
            "testsuite",
            name=f"{report.image}.checks",
            tests=str(len(report.checks)),
            failures=str(sum(1 for r in report.checks if r.verdict.outcome == "failed")),
            errors=str(sum(1 for r in report.checks if r.verdict.outcome == "infrastructure")),
            skipped="0",
            time=f"{sum(r.seconds for r in report.checks):.3f}",
            timestamp=report.started_at,
        )
        for result in report.checks:
            case = ET.SubElement(checks, "testcase", classname=f"{report.image}.check", name=result.name)
            if not result.passed:
                tag = "failure" if result.verdict.outcome == "failed" else "error"
                element = ET.SubElement(case, tag, message=result.verdict.error, type=result.verdict.outcome)
                element.text = f"{result.verdict.error}\nhint: {result.verdict.hint}"
    ET.indent(suites)
    body: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def summary_json(report: TestReport) -> bytes:
    return (json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n").encode()


def write_reports(report: TestReport) -> None:
    write_atomic(report.artifacts / "junit.xml", junit_xml(report))
    write_atomic(report.artifacts / "summary.json", summary_json(report))


def notebook_html(name: str, executed: dict[str, Any], verdict: Verdict) -> bytes:
    """An executed notebook as a page: its cells and outputs; the failing cell marked, with the hint."""
    from pipeline.report import notebook
    from pipeline.report.html import Markup

    failing = verdict.cell_index if verdict.outcome != "passed" else None
    box = (
        notebook.hint(
            verdict.outcome,
            verdict.where(),
            verdict.error,
            verdict.source_line,
            verdict.hint,
            jump=failing is not None,
        )
        if verdict.outcome != "passed"
        else Markup("")
    )
    return notebook.document(name, Markup(box + notebook.render(executed, failing))).encode()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
