"""`envctl report` on a real SQLite ledger and run folder: escaping, atomic writes, --serve.

The registry is a closed port on 127.0.0.1 here (drift `unknown`); the browser test
(tests/integration/test_report_browser.py) runs the whole flow against the real stack.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.ledger import db
from pipeline.ledger.db import Ledger, TestRun, Version, record_test_run
from pipeline.pipelines import records
from pipeline.report import site
from tests.helpers import ENVCTL, cli_env, envctl, serving

IMAGE = "nlp.report"
SHA = "a" * 40
DIGEST = "sha256:" + "d" * 64
EVIL = "<script>alert('x')</script><img src=http://203.0.113.9/p.png onerror=alert(2)>"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _notebook() -> dict[str, Any]:
    def code(source: str, outputs: list[dict[str, Any]], count: int) -> dict[str, Any]:
        return {
            "cell_type": "code",
            "execution_count": count,
            "metadata": {},
            "outputs": outputs,
            "source": source,
        }

    return {
        "cells": [
            {"cell_type": "markdown", "metadata": {"tags": ["papermill-error-cell-tag"]}, "source": EVIL},
            {
                "cell_type": "code",
                "metadata": {"tags": ["injected-parameters"]},
                "outputs": [],
                "source": "x = 1",
            },
            {"cell_type": "markdown", "metadata": {}, "source": f"# Title {EVIL}"},
            code(
                "show()",
                [
                    {"output_type": "stream", "name": "stdout", "text": [EVIL]},
                    {"output_type": "display_data", "data": {"text/html": EVIL}, "metadata": {}},
                    {
                        "output_type": "display_data",
                        "data": {"image/png": 'x" onerror="alert(3)'},
                        "metadata": {},
                    },
                    {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo="}, "metadata": {}},
                ],
                1,
            ),
            code(
                "boom()",
                [
                    {
                        "output_type": "error",
                        "ename": "ValueError",
                        "evalue": EVIL,
                        "traceback": [f"\x1b[31m{EVIL}\x1b[0m"],
                    }
                ],
                2,
            ),
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 4,
    }


def _ledger(tmp_path: Path) -> tuple[str, Path]:
    """A ledger with one version, staging and production on it, a pin, a failed test and pipeline run."""
    url = f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    ledger = Ledger.open(url)
    ledger.record_version(
        Version(
            image=IMAGE,
            sha=SHA,
            tree="t" * 40,
            inputs_key="k",
            build_key="b",
            digest=DIGEST,
            image_ref=f"localhost:5000/{IMAGE}@{DIGEST}",
            size=None,
            reused_from=None,
            labels={},
            sbom={"pip": [{"name": "numpy", "version": "2.0.0"}]},
            created_at=T0,
        )
    )
    run_dir = tmp_path / "state" / "runs" / "t1"
    run_dir.mkdir(parents=True)
    (run_dir / "bad.ipynb").write_text(json.dumps(_notebook()))
    (run_dir / "bad.log").write_text(f"log line {EVIL}\n")
    (run_dir / "junit.xml").write_text("<testsuites/>\n")
    (tmp_path / "secret.ipynb").write_text(json.dumps(_notebook()))
    result = {
        "name": f"test-notebooks/{EVIL}.ipynb",
        "kind": "notebook",
        "outcome": "failed",
        "cell_index": 2,
        "execution_count": 2,
        "line": 1,
        "error": f"ValueError: {EVIL}",
        "hint": f"hint {EVIL}",
        "source_line": "boom()",
        "seconds": 2.5,
        "notebook": "bad.ipynb",
        "log": "bad.log",
    }
    escaping = dict(result, name="escape.ipynb", notebook="../../../secret.ipynb", log="/etc/passwd")
    record_test_run(
        ledger,
        TestRun(
            run_id="t1",
            image=IMAGE,
            sha=SHA,
            digest=DIGEST,
            passed=False,
            summary={"results": [result, escaping], "checks": [], "warnings": [EVIL]},
            artifacts=str(run_dir),
            started_at=T0,
            finished_at=T0 + timedelta(seconds=9),
        ),
    )
    log = tmp_path / "state" / "pipelines" / "p1.log"
    log.parent.mkdir(parents=True)
    log.write_text(f"pipeline p1 {EVIL}\n")
    records.start(
        ledger, run_id="p1", branch="staging", sha=SHA, log=log, trigger="base", reason=f"base moved {EVIL}"
    )
    records.finish(ledger, "p1", "failed", {IMAGE: {"state": "failed", "detail": EVIL, "test_run": "t1"}})
    with ledger.transaction() as conn:
        for stage in ("staging", "production"):
            conn.execute(
                db.environments.insert().values(
                    image=IMAGE,
                    stage=stage,
                    sha=SHA,
                    digest=DIGEST,
                    generation=1,
                    pinned=stage == "production",
                    pin_reason=EVIL if stage == "production" else None,
                    pinned_by="ops",
                    updated_at=T0,
                )
            )
            conn.execute(
                db.events.insert().values(
                    at=T0,
                    image=IMAGE,
                    stage=stage,
                    action="promote",
                    to_sha=SHA,
                    to_digest=DIGEST,
                    actor="ci",
                    reason=EVIL,
                    forced=False,
                )
            )
    return url, tmp_path / "state"


def _env(url: str, state: Path) -> dict[str, str]:
    return {
        "ENVCTL_LEDGER_URL": url,
        "ENVCTL_STATE_DIR": str(state),
        "ENVCTL_REGISTRY": f"127.0.0.1:{_closed_port()}",
    }


def _pages(root: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(root.rglob("*.html")))


def test_report_escapes_every_untrusted_text(tmp_path: Path) -> None:
    url, state = _ledger(tmp_path)
    result = envctl("report", env=_env(url, state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = state / "report"
    assert result.stdout.strip() == (out / "index.html").as_uri()
    text = _pages(out)
    assert "<script" not in text and "<img src=http" not in text and 'onerror="alert' not in text
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    # pin reason, event reason, verdict detail, run log, notebook name, hint, error, warnings,
    # stream output, text/html output (as text), traceback, markdown source, container log:
    assert text.count(escaped) >= 12
    notebook = next(out.glob("tests/t1/*bad*.html"), None) or next(
        p for p in out.glob("tests/t1/*.html") if "script" in p.name
    )
    page = notebook.read_text()
    assert page.count('class="cell code failing" id="failing-cell"') == 1
    assert "cell 2 · In [2] · failed here" in page
    assert "papermill-error-cell" not in page and page.count(escaped) >= 4
    assert '<img alt="image/png output" src="data:image/png;base64,iVBORw0KGgo=">' in page
    assert (
        "onerror=&quot;alert(3)" not in page and "alert(3)" not in page
    )  # not base64: not shown as an image
    # A summary naming files outside the run folder: not read, not linked.
    assert not list(out.glob("tests/t1/escape*")) and "root:x:0" not in text
    assert (out / "tests" / "t1" / "junit.xml").read_text() == "<testsuites/>\n"
    assert "drift" not in result.stdout
    assert "did not answer; the report shows drift as unknown" in result.stderr
    index = (out / "index.html").read_text()
    assert "unknown" in index


def test_pipeline_run_page_shows_its_reason_escaped(tmp_path: Path) -> None:
    url, state = _ledger(tmp_path)
    result = envctl("report", env=_env(url, state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (state / "report" / "runs" / "p1.html").read_text()
    assert "<dt>reason</dt><dd>base moved &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page


def test_runs_kept_in_cloud_storage_are_shown_from_the_local_run_folder(tmp_path: Path) -> None:
    url, state = _ledger(tmp_path)
    with Ledger.open(url).transaction() as conn:
        conn.execute(db.test_runs.update().values(artifacts="gs://acme-artifacts/runs/t1/"))
    result = envctl("report", env=_env(url, state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = state / "report" / "tests" / "t1"
    assert (out / "junit.xml").read_text() == "<testsuites/>\n"
    (notebook,) = [p for p in out.glob("*.html") if p.name != "index.html"]
    assert 'id="failing-cell"' in notebook.read_text()
    index = (out / "index.html").read_text()
    assert "gs://acme-artifacts/runs/t1/" in index and 'href="junit.xml"' in index


def test_evidence_older_than_the_newest_runs_is_still_linked(tmp_path: Path) -> None:
    from pipeline.report import data

    url, state = _ledger(tmp_path)
    newer = [
        {
            "run_id": f"n{i:03}",
            "image": IMAGE,
            "sha": "c" * 40,
            "digest": "sha256:" + "c" * 64,
            "passed": True,
            "summary": "{}",
            "artifacts": "",
            "started_at": T0 + timedelta(days=1, minutes=i),
            "finished_at": T0 + timedelta(days=1, minutes=i, seconds=5),
        }
        for i in range(data.RUN_LIMIT)
    ]
    with Ledger.open(url).transaction() as conn:
        conn.execute(db.test_runs.insert(), newer)
    result = envctl("report", env=_env(url, state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = state / "report"
    index = (out / "index.html").read_text()
    assert "no test run" not in index and index.count('href="tests/t1/index.html"') == 2
    production = (out / "env" / f"{IMAGE}.production.html").read_text()
    assert production.count('href="../tests/t1/index.html"') == 2  # the evidence and the history
    assert (out / "tests" / "t1" / "index.html").is_file()


def test_signoffs_column_shows_who_signed_the_version(tmp_path: Path) -> None:
    url, state = _ledger(tmp_path)
    with Ledger.open(url).transaction() as conn:
        conn.execute(
            db.signoffs.insert().values(at=T0, image=IMAGE, sha=SHA, digest=DIGEST, actor="<b>tess</b>")
        )
    result = envctl("report", "--out", str(tmp_path / "site"), env=_env(url, state), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<th>Sign-offs</th>" in index and index.count("&lt;b&gt;tess&lt;/b&gt;") == 2


def test_an_empty_ledger_gives_an_empty_report(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    result = envctl("report", "--out", str(tmp_path / "site"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "No environment yet." in (tmp_path / "site" / "index.html").read_text()


def test_report_replaces_its_own_folder_only(tmp_path: Path) -> None:
    url, state = _ledger(tmp_path)
    env = _env(url, state)
    target = tmp_path / "site"
    assert envctl("report", "--out", str(target), env=env, cwd=tmp_path).returncode == 0
    (target / "stale.html").write_text("old")
    again = envctl("report", "--out", str(target), env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not (target / "stale.html").exists() and (target / "index.html").is_file()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = envctl("report", "--out", str(mine), env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"envctl: error: {mine} exists and is not a report envctl wrote; choose another --out or remove it"
    ]
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_write_keeps_the_earlier_site_whole(tmp_path: Path) -> None:
    target = tmp_path / "site"
    site.write(target, {"index.html": "first", "tests/a/index.html": "a", site.MARKER: ""})
    # The second site can't be written: `x` is a file and `x/y.html` needs it as a folder.
    with pytest.raises(OSError):
        site.write(target, {"index.html": "second", "x": "file", "x/y.html": "page", site.MARKER: ""})
    assert (target / "index.html").read_text() == "first"
    assert (target / "tests" / "a" / "index.html").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_serve_answers_on_localhost_until_interrupted(tmp_path: Path) -> None:
    url, state = _ledger(tmp_path)
    process = subprocess.Popen(
        [*ENVCTL, "report", "--out", str(tmp_path / "site"), "--serve"],
        cwd=tmp_path,
        env=cli_env(_env(url, state)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == (tmp_path / "site" / "index.html").as_uri()
        served = process.stdout.readline().strip()
        assert served.startswith("http://127.0.0.1:") and served.endswith("/")
        with urllib.request.urlopen(served + "tests/t1/index.html", timeout=10) as response:
            assert response.status == 200 and b"Test run t1" in response.read()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert stderr.rstrip().endswith("stopped") and "Traceback" not in stderr


def test_serve_on_a_taken_port_is_exit_3(tmp_path: Path) -> None:
    url, state = _ledger(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = envctl(
            "report",
            "--out",
            str(tmp_path / "site"),
            "--serve",
            "--port",
            str(port),
            env=_env(url, state),
            cwd=tmp_path,
        )
    assert result.returncode == 3
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"envctl: error: cannot serve on 127.0.0.1:{port}: ")
    )


def _raw_get(port: int, host: str | None) -> bytes:
    """One HTTP/1.0 GET of /index.html with exactly this Host header (None: no Host at all)."""
    head = "GET /index.html HTTP/1.0\r\n" + (f"Host: {host}\r\n" if host is not None else "") + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_serve_answers_421_to_a_host_other_than_localhost(tmp_path: Path) -> None:
    from pipeline.report import serve

    (tmp_path / "index.html").write_text("pipeline log: secret-ish")
    httpd = serve.server(tmp_path)
    port = int(httpd.server_address[1])
    with serving(httpd):
        for host in ("evil.example", f"evil.example:{port}", f"localhost:{port + 1}", "127.0.0.2", None):
            answer = _raw_get(port, host)
            assert answer.startswith(b"HTTP/1.0 421 "), (host, answer[:80])
            assert b"secret-ish" not in answer
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", "127.0.0.1"):
            answer = _raw_get(port, host)
            assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"secret-ish"), host
