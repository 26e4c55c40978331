"""Lint runs first in the staging pipeline: an error blocks the build, findings go to the run record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.ledger.db import Ledger
from pipeline.pipelines.records import listing
from tests import minirepo
from tests.helpers import DATA, envctl

pytestmark = pytest.mark.integration


def test_lint_error_blocks_the_build_and_is_in_the_run_record(tmp_path: Path) -> None:
    mini = minirepo.make(tmp_path)
    users = mini.path / "notebooks"
    users.mkdir()
    shutil.copyfile(DATA / "lint" / "INT001-found.ipynb", users / "explore.ipynb")
    shutil.copyfile(DATA / "lint" / "AUTH002-found.ipynb", users / "report.ipynb")
    spec = mini.path / "environments" / f"{mini.image}.yaml"
    spec.write_text(spec.read_text() + "lint:\n  paths: [notebooks/*.ipynb]\n")
    sha = mini.commit("users' notebooks")
    env = {"ENVCTL_STATE_DIR": str(tmp_path / "state")}

    result = envctl("pipeline", "run", "--branch", "staging", "--rev", "staging", cwd=mini.path, env=env)

    assert result.returncode == 1, result.stderr
    assert (
        "notebooks/explore.ipynb: cell 0, line 1: INT001 error: input() waits for someone to type"
        in result.stderr
    )
    assert (
        f"{mini.image}: failed: lint found 5 error(s), staging unchanged: INT001 at notebooks/explore.ipynb"
        in (result.stderr)
    )
    assert f"{mini.image}: build" not in result.stderr  # stopped before the build
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
    assert ledger.list_versions(mini.image) == []
    (run,) = listing(ledger, 1)
    assert (run.sha, run.state) == (sha, "failed")
    findings = run.verdicts[mini.image]["lint"]
    assert {f["rule"] for f in findings} == {"INT001", "AUTH002"}  # warnings are reported too
    assert json.dumps(findings)  # stable JSON in the run's record
