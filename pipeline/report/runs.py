"""The run pages: pipeline runs (verdict per image, durations, log) and test runs (per notebook).

A test run's page lists each notebook and image check; each executed notebook gets a page
of its own with the failing cell marked and the hint beside it. The run's junit.xml and
executed notebooks are copied into the site, so every link stays inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.ledger.db import TestRun
from pipeline.pipelines.records import PipelineRun
from pipeline.report import notebook
from pipeline.report.data import Snapshot, read_notebook, read_text
from pipeline.report.html import Markup, badge, esc, link, page, seconds, short, slug, table, when
from pipeline.testing.classify import plain

Files = dict[str, str | bytes]


def run_page(run_id: str) -> str:
    return f"runs/{slug(run_id)}.html"


def test_page(run_id: str) -> str:
    return f"tests/{slug(run_id)}/index.html"


def notebook_page(run_id: str, name: str) -> str:
    return f"tests/{slug(run_id)}/{slug(name)}.html"


def _duration(run: PipelineRun) -> float | None:
    return (run.finished_at - run.started_at).total_seconds() if run.finished_at else None


def run_rows(found: Sequence[PipelineRun], up: str) -> Markup:
    rows = [
        [
            link(up + run_page(r.run_id), r.run_id),
            r.branch,
            Markup(f'<span class="mono">{esc(short(r.sha))}</span>'),
            badge(r.state),
            ", ".join(sorted(k for k in r.verdicts if k != "_")),
            when(r.started_at),
            seconds(_duration(r)),
        ]
        for r in found
    ]
    return table(["Run", "Branch", "SHA", "State", "Images", "Started", "Duration"], rows)


def pipeline_runs(snapshot: Snapshot) -> Files:
    files: Files = {
        "runs/index.html": page(
            "Pipeline runs", run_rows(snapshot.pipeline_runs, "../"), depth=1, taken_at=snapshot.taken_at
        )
    }
    tests = {t.run_id: t for t in snapshot.test_runs}
    for run in snapshot.pipeline_runs:
        files[run_page(run.run_id)] = _pipeline_run(snapshot, run, tests)
    return files


def _pipeline_run(snapshot: Snapshot, run: PipelineRun, tests: Mapping[str, TestRun]) -> str:
    facts = [
        ("branch", run.branch),
        ("SHA", run.sha),
        ("state", badge(run.state)),
        ("trigger", run.trigger),
        ("started", when(run.started_at)),
        ("finished", when(run.finished_at)),
        ("duration", seconds(_duration(run))),
    ]
    if run.reason:
        facts.insert(4, ("reason", run.reason))
    rows: list[list[object]] = []
    for image, verdict in sorted(run.verdicts.items()):
        if not isinstance(verdict, Mapping):
            rows.append([image, badge("failed"), "", str(verdict), "", ""])
            continue
        test_id = str(verdict.get("test_run") or "")
        tested = tests.get(test_id)
        test_cell: object = ""
        if tested is not None:
            test_cell = Markup(
                link("../" + test_page(test_id), "passed" if tested.passed else "failed")
                + f" in {esc(seconds((tested.finished_at - tested.started_at).total_seconds()))}"
            )
        elif test_id:
            test_cell = test_id
        rows.append(
            [
                image,
                badge(str(verdict.get("state", "?"))),
                str(verdict.get("built") or "-"),
                test_cell,
                Markup(f'<span class="mono">{esc(short(str(verdict.get("digest") or ""), 19))}</span>'),
                str(verdict.get("detail") or ""),
            ]
        )
    log = read_text(Path(run.log)) if run.log else None
    body = Markup(
        _facts(facts)
        + "<h2>Verdict per image</h2>"
        + table(["Image", "Verdict", "Build", "Tests", "Digest", "Detail"], rows)
        + "<h2>Log</h2>"
        + (
            f"<pre>{esc(plain(log))}</pre>"
            if log is not None
            else f'<p class="muted">log {esc(run.log)} not found</p>'
        )
    )
    return page(f"Pipeline run {run.run_id}", body, depth=1, taken_at=snapshot.taken_at)


def _facts(facts: Sequence[tuple[str, object]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"


def test_runs(snapshot: Snapshot) -> Files:
    rows = [
        [
            link("../" + test_page(t.run_id), t.run_id),
            t.image,
            Markup(f'<span class="mono">{esc(short(t.sha))}</span>'),
            badge("passed" if t.passed else "failed"),
            when(t.finished_at),
            seconds((t.finished_at - t.started_at).total_seconds()),
        ]
        for t in snapshot.test_runs
    ]
    files: Files = {
        "tests/index.html": page(
            "Test runs",
            table(["Test run", "Image", "SHA", "Outcome", "Finished", "Duration"], rows),
            depth=1,
            taken_at=snapshot.taken_at,
        )
    }
    for run in snapshot.test_runs:
        files.update(_test_run(snapshot, run))
    return files


def _inside(folder: Path, relative: str | None) -> Path | None:
    """`folder / relative` when it stays inside `folder` (summaries are data, not trusted paths)."""
    if not relative:
        return None
    try:
        target = (folder / relative).resolve()
        target.relative_to(folder.resolve())
    except (OSError, ValueError):
        return None
    return target if target.is_file() else None


def _where(result: Mapping[str, Any]) -> str:
    if result.get("cell_index") is None:
        return ""
    where = f"cell {result['cell_index']}"
    if result.get("execution_count") is not None:
        where += f", In [{result['execution_count']}]"
    if result.get("line"):
        where += f", line {result['line']}"
    return where


def _run_folder(snapshot: Snapshot, run: TestRun) -> Path | None:
    """The run's local folder: where its artifacts are, or (kept in gs://) `<artifacts_dir>/<run id>`."""
    if run.artifacts and "://" not in run.artifacts:
        return Path(run.artifacts)
    if snapshot.artifacts_dir is None or not run.run_id:
        return None
    try:
        local = (snapshot.artifacts_dir / run.run_id).resolve()
        local.relative_to(snapshot.artifacts_dir.resolve())
    except (OSError, ValueError):
        return None
    return local if local != snapshot.artifacts_dir.resolve() and local.is_dir() else None


def _test_run(snapshot: Snapshot, run: TestRun) -> Files:
    files: Files = {}
    folder = _run_folder(snapshot, run)
    results = [r for r in run.summary.get("results") or [] if isinstance(r, Mapping)]
    checks = [r for r in run.summary.get("checks") or [] if isinstance(r, Mapping)]
    rows: list[list[object]] = []
    for result in [*results, *checks]:
        name = str(result.get("name") or "?")
        executed = _inside(folder, result.get("notebook")) if folder else None
        shown: object = name
        if executed is not None and folder is not None:
            path = notebook_page(run.run_id, name)
            files[path] = _notebook(snapshot, run, result, executed, folder)
            shown = link(path.rpartition("/")[2], name)
        detail = [str(result.get("error") or ""), _where(result)]
        rows.append(
            [
                shown,
                str(result.get("kind") or ""),
                badge(str(result.get("outcome") or "?")),
                seconds(result.get("seconds")),
                "; ".join(d for d in detail if d),
                str(result.get("hint") or ""),
            ]
        )
    junit = _inside(folder, "junit.xml") if folder else None
    links: list[str] = []
    if junit is not None:
        files[f"tests/{slug(run.run_id)}/junit.xml"] = junit.read_bytes()
        links.append(link("junit.xml", "junit.xml"))
    facts = [
        ("image", run.image),
        ("SHA", run.sha),
        ("digest", run.digest),
        ("outcome", badge("passed" if run.passed else "failed")),
        ("started", when(run.started_at)),
        ("duration", seconds((run.finished_at - run.started_at).total_seconds())),
        ("artifacts", run.artifacts or "-"),
    ]
    if links:
        facts.append(("reports", Markup(" ".join(links))))
    warnings = [str(w) for w in run.summary.get("warnings") or []]
    body = Markup(
        _facts(facts)
        + "<h2>Notebooks and checks</h2>"
        + (
            table(["Name", "Kind", "Outcome", "Time", "Error and where", "Hint"], rows)
            if rows
            else f'<p class="muted">{esc(_counts(run.summary))}</p>'
        )
        + (
            "<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>"
            if warnings
            else ""
        )
    )
    files[test_page(run.run_id)] = page(f"Test run {run.run_id}", body, depth=2, taken_at=snapshot.taken_at)
    return files


def _counts(summary: Mapping[str, Any]) -> str:
    counts = summary.get("counts")
    if isinstance(counts, Mapping) and counts:
        return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return "no per-notebook results recorded"


def _notebook(
    snapshot: Snapshot, run: TestRun, result: Mapping[str, Any], executed: Path, folder: Path
) -> str:
    name = str(result.get("name") or executed.name)
    outcome = str(result.get("outcome") or "?")
    cell = result.get("cell_index")
    failing = cell if isinstance(cell, int) and outcome != "passed" else None
    facts = [
        ("test run", link("index.html", run.run_id)),
        ("outcome", badge(outcome)),
        ("time", f"{seconds(result.get('seconds'))} (cells {seconds(result.get('execution_seconds'))})"),
    ]
    hint = ""
    if outcome != "passed":
        hint = notebook.hint(
            outcome,
            _where(result),
            str(result.get("error") or ""),
            str(result.get("source_line") or ""),
            str(result.get("hint") or ""),
            jump=failing is not None,
        )
    data = read_notebook(executed)
    cells = (
        notebook.render(data, failing)
        if data is not None
        else Markup('<p class="muted">unreadable notebook</p>')
    )
    log_path = _inside(folder, result.get("log"))
    log = read_text(log_path) if log_path else None
    body = Markup(
        _facts(facts)
        + hint
        + "<h2>Executed notebook</h2>"
        + cells
        + (
            f"<h2>Log</h2><details><summary>container log</summary><pre>{esc(plain(log))}</pre></details>"
            if log
            else ""
        )
    )
    return page(name, body, depth=2, taken_at=snapshot.taken_at)
