"""The notebook driver (`driver.SCRIPT`): its interpreter, the bytecode cache, the processes it leaves."""

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
from pipeline.testing.model import ContainerExit
from pipeline.testing.runner import Limits, SharedContainer, Tracker, run_container, sweep
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


PROBE = """\
import helper, ipykernel, json, os, sys
names = sorted(n for n in dir() if not n.startswith("__"))
cached = ipykernel.__cached__ or ""
print(json.dumps([sys.pycache_prefix, os.environ.get("PYTHONPYCACHEPREFIX"), names, cached]))
"""


def test_the_warm_up_fills_a_bytecode_cache_that_the_kernel_forgets_before_the_first_cell(
    tmp_path: Path,
) -> None:
    client = docker.from_env()
    tracker = Tracker(run_id=f"driver-{uuid.uuid4().hex[:8]}")
    cache, work = tmp_path / "pycache", tmp_path / "w"
    (work / "bin").mkdir(parents=True)
    cache.mkdir()
    (work / "bin" / "driver.py").write_text(SCRIPT)
    (work / "nb.ipynb").write_text(notebook(PROBE))
    (work / "helper.py").write_text("VALUE = 1\n")
    for path in [cache, work, work / "bin"]:
        path.chmod(0o777)

    def run(job: dict[str, Any], mode: str) -> ContainerExit:
        return run_container(
            client,
            tracker,
            image_ref=BASE_IMAGE,
            command=["python3", "/w/bin/driver.py", json.dumps(job)],
            labels={},
            limits=LIMITS,
            deadline=120,
            mounts={work: ("/w", "rw"), cache: ("/envctl/pycache", mode)},
        )

    def probe(pycache: bool) -> list[Any]:
        job = {
            "input": "/w/nb.ipynb",
            "output": "/w/out.ipynb",
            "parameters": {},
            "kernel": "python3",
            "timeout": 60,
            "cwd": "/w",
            **({"pycache": "/envctl/pycache"} if pycache else {}),
        }
        ran = run(job, "ro")
        assert ran.exit_code == 0, ran.logs
        executed = json.loads((work / "out.ipynb").read_text())
        (output,) = executed["cells"][0]["outputs"]
        found: list[Any] = json.loads(
            output["text"] if isinstance(output["text"], str) else "".join(output["text"])
        )
        return found

    try:
        warm = run({"warm": ["python3"], "pycache": "/envctl/pycache"}, "rw")
        assert warm.exit_code == 0, warm.logs
        compiled = {p.relative_to(cache).as_posix() for p in cache.rglob("*.pyc")}
        for module in (
            "papermill/execute",
            "nbclient/client",
            "ipykernel/kernelapp",
            "IPython/core/interactiveshell",
        ):
            assert any(f"site-packages/{module}.cpython-" in p for p in compiled), module
        # the warm-up leaves the modes to the host (tasks.read_only), nothing world-writable
        assert not any(p.stat().st_mode & 0o002 for p in cache.rglob("*"))

        with_cache = probe(pycache=True)
        # The kernel started from the cache, then forgot it: the notebook's own imports
        # write beside their sources as always, and it sees what it sees without the cache.
        assert with_cache[3].startswith("/envctl/pycache/")
        assert with_cache[:2] == [None, None]
        assert list((work / "__pycache__").glob("helper.*.pyc"))
        assert {p.relative_to(cache).as_posix() for p in cache.rglob("*.pyc")} == compiled
        without = probe(pycache=False)
        assert without[:3] == with_cache[:3] and not without[3].startswith("/envctl/pycache/")
    finally:
        _release(client, tracker.run_id, tmp_path)


# An IPython start-up file that makes the driver's FORGET fail in the kernel (as a kernel
# that ran something of its own first, or answered an error, would).
KEEPS_THE_CACHE = """\
def _no_forgetting(lines):
    return ["raise RuntimeError('not forgetting')\\n"] if any("pycache_prefix = None" in l for l in lines) else lines
get_ipython().input_transformers_cleanup.append(_no_forgetting)
"""


def test_a_kernel_that_does_not_forget_the_cache_or_is_no_python_kernel_runs_without_it(
    tmp_path: Path,
) -> None:
    client = docker.from_env()
    tracker = Tracker(run_id=f"driver-{uuid.uuid4().hex[:8]}")
    cache, work = tmp_path / "pycache", tmp_path / "w"
    (work / "bin").mkdir(parents=True)
    cache.mkdir()
    (work / "bin" / "driver.py").write_text(SCRIPT)
    (work / "nb.ipynb").write_text(notebook(PROBE))
    (work / "helper.py").write_text("VALUE = 1\n")
    startup = work / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "keep.py").write_text(KEEPS_THE_CACHE)
    # A kernelspec whose language is not Python, running the image's Python kernel.
    other = work / "jupyter" / "kernels" / "other"
    other.mkdir(parents=True)
    argv = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (other / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Other", "language": "other"})
    )
    for path in [cache, work, *work.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)

    def run(job: dict[str, Any], mode: str, environment: dict[str, str]) -> ContainerExit:
        return run_container(
            client,
            tracker,
            image_ref=BASE_IMAGE,
            command=["python3", "/w/bin/driver.py", json.dumps(job)],
            labels={},
            limits=LIMITS,
            deadline=120,
            mounts={work: ("/w", "rw"), cache: ("/envctl/pycache", mode)},
            environment=environment,
        )

    def probe(kernel: str, environment: dict[str, str]) -> tuple[list[Any], str]:
        job = {
            "input": "/w/nb.ipynb",
            "output": "/w/out.ipynb",
            "parameters": {},
            "kernel": kernel,
            "timeout": 60,
            "cwd": "/w",
            "pycache": "/envctl/pycache",
        }
        ran = run(job, "ro", environment)
        assert ran.exit_code == 0, ran.logs
        executed = json.loads((work / "out.ipynb").read_text())
        (output,) = executed["cells"][0]["outputs"]
        found: list[Any] = json.loads(
            output["text"] if isinstance(output["text"], str) else "".join(output["text"])
        )
        return found, ran.logs

    try:
        warm = run(
            {"warm": ["python3", "other"], "pycache": "/envctl/pycache"}, "rw", {"JUPYTER_PATH": "/w/jupyter"}
        )
        assert warm.exit_code == 0, warm.logs
        assert list(cache.rglob("ipykernel/kernelapp.*.pyc"))
        compiled = {p.relative_to(cache).as_posix() for p in cache.rglob("*.pyc")}

        cached, _ = probe("python3", {})
        assert cached[3].startswith("/envctl/pycache/")  # the cache works for a kernel that forgets it

        kept, logs = probe("python3", {"IPYTHONDIR": "/w/ipython"})
        assert "the kernel did not forget the bytecode cache (RuntimeError: not forgetting)" in logs
        assert kept[:2] == [None, None] and not kept[3].startswith("/envctl/pycache/"), kept

        other_language, _ = probe("other", {"JUPYTER_PATH": "/w/jupyter"})
        assert other_language[:2] == [None, None] and not other_language[3].startswith("/envctl/pycache/")
        assert {p.relative_to(cache).as_posix() for p in cache.rglob("*.pyc")} == compiled
    finally:
        _release(client, tracker.run_id, tmp_path)


def _release(client: Any, run_id: str, tmp_path: Path) -> None:
    """Remove the run's containers, and let pytest remove what the containers wrote."""
    sweep(client, run_id)
    client.close()
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{tmp_path}:/t",
            "--entrypoint",
            "sh",
            BASE_IMAGE,
            "-c",
            "chmod -R a+rwX /t",
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
