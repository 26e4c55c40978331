"""The notebook driver (`driver.SCRIPT`): its interpreter, its status file, the processes it leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import docker
from pipeline.testing.driver import SCRIPT
from pipeline.testing.runner import Limits, SharedContainer, Tracker
from pipeline.testing.tasks import papermill_result
from tests.helpers import BASE_IMAGE

LIMITS = Limits(memory_bytes=512 * 1024 * 1024, nano_cpus=1_000_000_000, network="none")


def notebook(*sources: str) -> str:
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s}
        for s in sources
    ]
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5})


def test_env_shebang_of_papermill_is_resolved_on_path(tmp_path: Path) -> None:
    # papermill installed under another Python, named by `#!/usr/bin/env NAME`: the driver
    # runs itself under that Python (not under /usr/bin/env, which would exit 126).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "papermill").write_text("#!/usr/bin/env -S otherpython -u\nimport papermill\n")
    seen = tmp_path / "argv"
    (bin_dir / "otherpython").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen}\nexit 0\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    driver = tmp_path / "driver.py"
    driver.write_text(SCRIPT)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(driver), "{}"], env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert seen.read_text().splitlines() == [str(driver), "{}"]


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[SharedContainer, Path]]:
    client = docker.from_env()
    work = tmp_path / "w"
    (work / "bin").mkdir(parents=True)
    (work / "bin" / "driver.py").write_text(SCRIPT)
    for path in [work, work / "bin"]:
        path.chmod(0o777)
    run = SharedContainer(
        client=client,
        tracker=Tracker(run_id=f"driver-{uuid.uuid4().hex[:8]}"),
        image_ref=BASE_IMAGE,
        labels={},
        limits=LIMITS,
        mounts={work: ("/w", "rw")},
        environment={},
    )
    try:
        yield run, work
    finally:
        run.close()
        client.close()
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                f"{work}:/w",
                "--entrypoint",
                "sh",
                BASE_IMAGE,
                "-c",
                "chmod -R a+rwX /w",
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )


def driver(job: dict[str, Any]) -> list[str]:
    return ["python3", "/w/bin/driver.py", json.dumps(job)]


def test_processes_a_notebook_leaves_running_do_not_reach_the_next(
    shared: tuple[SharedContainer, Path],
) -> None:
    run, work = shared
    (work / "nb.ipynb").write_text(
        notebook(
            "import subprocess\nchild = subprocess.Popen(['sleep', '600'])\nopen('/w/pid', 'w').write(str(child.pid))"
        )
    )
    job = {
        "input": "/w/nb.ipynb",
        "output": "/w/out.ipynb",
        "html": "/w/out.html",
        "parameters": {},
        "kernel": "python3",
        "timeout": 60,
        "cwd": "/w",
    }
    ran = run.run(driver(job), deadline=120)
    assert ran.exit_code == 0, ran.logs
    pid = (work / "pid").read_text().strip()
    probe = run.run(
        ["sh", "-c", f"test -d /proc/{pid} && grep -q sleep /proc/{pid}/cmdline && echo alive || echo gone"],
        deadline=30,
    )
    assert probe.logs.strip() == "gone"


def test_a_rendering_that_crashes_costs_the_html_not_the_verdict(
    shared: tuple[SharedContainer, Path],
) -> None:
    run, work = shared
    (work / "nb.ipynb").write_text(notebook("print(6 * 7)"))
    # The HTML goes to a folder that does not exist: the rendering (and its .error note) fail.
    job = {
        "input": "/w/nb.ipynb",
        "output": "/w/out.ipynb",
        "html": "/w/missing/out.html",
        "parameters": {},
        "kernel": "python3",
        "timeout": 60,
        "cwd": "/w",
    }
    ran = run.run(driver(job), deadline=120)
    assert ran.exit_code == 1 and "missing/out.html" in ran.logs
    assert json.loads((work / "out.ipynb.status").read_text()) == {"exit_code": 0}
    fixed, why = papermill_result(ran, work / "out.ipynb.status")
    assert fixed.exit_code == 0 and why == "the container exited with 1 while rendering"
    assert not (work / "out.ipynb.status").exists()
