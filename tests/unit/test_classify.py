"""Failure classification: each way a notebook run ends gets its outcome, place and hint."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.testing.classify import classify_command, classify_notebook, package_for
from pipeline.testing.model import ContainerExit

DOCKERFILE = "docker/nlp.keras-batch/Dockerfile"
RED, RESET = "\x1b[31m", "\x1b[39m"


def cell(
    source: str, *, count: int | None = None, tags: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"tags": tags or []}
    if "started" in extra:
        meta["papermill"] = {"start_time": "2026-01-01T00:00:00Z", "status": "running"}
    return {
        "cell_type": "code",
        "execution_count": count,
        "metadata": meta,
        "outputs": extra.get("outputs", []),
        "source": source.splitlines(keepends=True),
    }


def error(ename: str, evalue: str, cell_line: int | None) -> dict[str, Any]:
    traceback = [f"{RED}{ename}{RESET}   Traceback (most recent call last)"]
    if cell_line is not None:
        traceback.append(
            f"\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[4]\x1b[39m\x1b[32m, line {cell_line}\x1b[39m"
        )
    traceback.append(f"{RED}{ename}{RESET}: {evalue}")
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback}


def executed(*cells: dict[str, Any]) -> dict[str, Any]:
    """An executed notebook as papermill writes it: the error banner and injected parameters included."""
    banner = {
        "cell_type": "markdown",
        "metadata": {"tags": ["papermill-error-cell-tag"]},
        "source": "An Exception",
    }
    injected = cell("# Parameters\nseed = 7\n", count=2, tags=["injected-parameters"], started=True)
    markdown = {"cell_type": "markdown", "metadata": {}, "source": "# Title"}
    params = cell("seed = 0", count=1, tags=["parameters"], started=True)
    return {"cells": [banner, markdown, params, injected, *cells]}


def verdict(ran: ContainerExit, notebook: dict[str, Any] | None = None) -> Any:
    return classify_notebook(ran, notebook, dockerfile=DOCKERFILE, timeout=300, memory="2g", deadline=360)


def test_failed_cell_is_named_in_the_committed_notebook_with_line_and_source() -> None:
    nb = executed(
        cell(
            "x = 1\ny = x / 0\n",
            count=3,
            started=True,
            outputs=[error("ZeroDivisionError", "division by zero", 2)],
        )
    )
    found = verdict(ContainerExit(exit_code=1), nb)
    assert found.outcome == "failed"
    # The banner and the injected cell are papermill's: cell 2 is the third cell of the committed notebook.
    assert (found.cell_index, found.execution_count, found.line) == (2, 3, 2)
    assert found.source_line == "y = x / 0"
    assert found.error == "ZeroDivisionError: division by zero"
    assert "cell 2, line 2" in found.hint


@pytest.mark.parametrize(
    ("module", "package"),
    [("pandas", "pandas"), ("sklearn.linear_model", "scikit-learn"), ("PIL", "Pillow"), ("yaml", "PyYAML")],
)
def test_missing_module_names_the_package_and_the_dockerfile(module: str, package: str) -> None:
    nb = executed(
        cell(
            f"import {module}",
            count=3,
            outputs=[error("ModuleNotFoundError", f"No module named '{module}'", 1)],
        )
    )
    found = verdict(ContainerExit(exit_code=1), nb)
    assert found.outcome == "missing_module"
    assert found.hint == f"add {package} to {DOCKERFILE}"
    assert package_for(module) == package


def test_import_error_of_a_name_asks_for_another_version() -> None:
    value = "cannot import name 'Thing' from 'sklearn.utils' (/opt/conda/lib/...)"
    nb = executed(cell("from sklearn.utils import Thing", count=3, outputs=[error("ImportError", value, 1)]))
    found = verdict(ContainerExit(exit_code=1), nb)
    assert found.outcome == "missing_module"
    assert "pin a version of scikit-learn that has it" in found.hint


def test_sys_exit_is_a_failure_at_its_line() -> None:
    nb = executed(
        cell("import sys\nprint(1)\nsys.exit(1)", count=3, outputs=[error("SystemExit", "1", None)])
    )
    found = verdict(ContainerExit(exit_code=1), nb)
    assert found.outcome == "failed"
    assert (found.cell_index, found.line, found.source_line) == (2, 3, "sys.exit(1)")
    assert found.error == "SystemExit: 1"
    assert "sys.exit(1)" in found.hint


def test_out_of_memory_wins_over_the_dead_kernel_it_causes() -> None:
    nb = executed(cell("x = b'x' * 10**10", started=True))
    found = verdict(ContainerExit(exit_code=138, oom_killed=True), nb)
    assert found.outcome == "oom"
    assert found.cell_index == 2
    assert "tests.resources.memory (now 2g)" in found.hint


def test_exit_137_is_out_of_memory_even_without_the_flag() -> None:
    assert verdict(ContainerExit(exit_code=137)).outcome == "oom"


def test_dead_kernel_names_the_running_cell() -> None:
    nb = executed(
        cell("print(1)", count=3, started=True),
        cell("import os\nos.kill(os.getpid(), 9)", started=True),
        cell("never()"),
    )
    found = verdict(ContainerExit(exit_code=138, logs="nbclient.exceptions.DeadKernelError: Kernel died"), nb)
    assert found.outcome == "kernel_died"
    assert found.cell_index == 3


def test_cell_timeout_is_a_timeout_at_the_interrupted_line() -> None:
    nb = executed(
        cell(
            "import time\nwhile True:\n    time.sleep(1)",
            count=3,
            outputs=[error("KeyboardInterrupt", "", 3)],
        )
    )
    logs = "nbclient.exceptions.CellTimeoutError: A cell timed out while it was being executed, after 300 seconds."
    found = verdict(ContainerExit(exit_code=1, logs=logs), nb)
    assert (found.outcome, found.cell_index, found.line) == ("timeout", 2, 3)
    assert "raise tests.timeout (now 300 s)" in found.hint


def test_outer_deadline_is_a_timeout() -> None:
    found = verdict(ContainerExit(deadline_hit=True))
    assert found.outcome == "timeout"
    assert found.error == "still running after 360 s; killed"


@pytest.mark.parametrize(
    "ran",
    [
        ContainerExit(start_error='exec: "papermill": executable file not found in $PATH: unknown'),
        ContainerExit(
            exit_code=127, logs="[FATAL tini (7)] exec papermill failed: No such file or directory"
        ),
        ContainerExit(exit_code=1, logs="/opt/conda/bin/python: No module named papermill"),
    ],
)
def test_papermill_missing(ran: ContainerExit) -> None:
    found = verdict(ran)
    assert found.outcome == "papermill_missing"
    assert found.hint.startswith(f"add papermill to {DOCKERFILE}")


def test_engine_errors_are_infrastructure() -> None:
    found = verdict(ContainerExit(start_error="error while creating mount source path: permission denied"))
    assert found.outcome == "infrastructure"
    assert "permission denied" in found.error


def test_unknown_kernel_is_infrastructure_with_a_kernel_hint() -> None:
    found = verdict(
        ContainerExit(exit_code=1, logs="jupyter_client.kernelspec.NoSuchKernel: No such kernel named r\n")
    )
    assert found.outcome == "infrastructure"
    assert found.error.endswith("No such kernel named r")
    assert "tests.kernel" in found.hint


def test_exit_0_passes() -> None:
    assert verdict(ContainerExit(exit_code=0), executed(cell("1", count=3))).outcome == "passed"


def test_smoke_command_not_found_missing_module_and_failure() -> None:
    def smoke(ran: ContainerExit, command: str) -> Any:
        return classify_command(ran, command=command, dockerfile=DOCKERFILE, memory="2g")

    missing = smoke(
        ContainerExit(exit_code=127, logs="[FATAL tini (7)] exec nvcc failed: No such file or directory"),
        "nvcc -V",
    )
    assert (missing.outcome, missing.error) == ("failed", "nvcc: command not found in the image")
    logs = "Traceback (most recent call last):\n  File \"<string>\", line 1\nModuleNotFoundError: No module named 'cv2'\n"
    module = smoke(ContainerExit(exit_code=1, logs=logs), "python -c 'import cv2'")
    assert module.outcome == "missing_module"
    assert module.hint == f"add opencv-python-headless to {DOCKERFILE}"
    failed = smoke(ContainerExit(exit_code=2, logs="usage: thing\nthing: bad flag\n"), "thing --bad")
    assert (failed.outcome, failed.error) == ("failed", "exit 2: thing: bad flag")
    assert smoke(ContainerExit(exit_code=0), "true").outcome == "passed"
