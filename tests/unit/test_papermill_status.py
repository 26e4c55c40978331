"""The driver's status file decides a notebook's verdict when its rendering was killed."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.testing.classify import classify_notebook
from pipeline.testing.model import ContainerExit
from pipeline.testing.tasks import papermill_result


def verdict(ran: ContainerExit) -> str:
    return classify_notebook(ran, None, dockerfile="Dockerfile", timeout=60, memory="1g", deadline=90).outcome


def status(tmp_path: Path, code: int) -> Path:
    path = tmp_path / "nb.ipynb.status"
    path.write_text(json.dumps({"exit_code": code}))
    return path


def test_a_kill_for_memory_while_rendering_keeps_the_pass(tmp_path: Path) -> None:
    ran = ContainerExit(exit_code=137, oom_killed=True, seconds=3)
    assert verdict(ran) == "oom"
    fixed, why = papermill_result(ran, status(tmp_path, 0))
    assert verdict(fixed) == "passed" and why == "the rendering ran out of memory"


def test_the_deadline_while_rendering_keeps_the_failure_of_the_notebook(tmp_path: Path) -> None:
    ran = ContainerExit(deadline_hit=True, seconds=90)
    fixed, why = papermill_result(ran, status(tmp_path, 1))
    assert fixed.exit_code == 1 and not fixed.deadline_hit
    assert verdict(ran) == "timeout" and verdict(fixed) != "timeout" and "deadline" in why


def test_without_a_status_file_the_container_decides(tmp_path: Path) -> None:
    ran = ContainerExit(deadline_hit=True, seconds=90)
    assert papermill_result(ran, tmp_path / "none.status") == (ran, "")
    same = ContainerExit(exit_code=0, seconds=1)
    assert papermill_result(same, status(tmp_path, 0)) == (same, "")
