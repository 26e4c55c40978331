"""Helpers the tests share: run the real `envctl` and copy the example repository."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from pipeline.publish.oci import Credentials, docker_credentials

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


ENVCTL = [sys.executable, "-m", "pipeline.cli.main"]

# The local base the tests build on: the one `envctl stack up` made, or another build of
# docker/base named by ENVCTL_BASE_IMAGE (a new base tried before it replaces :local).
BASE_IMAGE = os.environ.get("ENVCTL_BASE_IMAGE") or "localhost:5000/dlc/base-cpu:local"


def spec_yaml(image: str, more: str = "") -> str:
    """An image's spec file (docker/Dockerfile, test-notebooks/*.ipynb), with `more` YAML at its end."""
    return (
        f"image: {image}\n"
        "build:\n"
        "  dockerfile: docker/Dockerfile\n"
        "  context: docker\n"
        "  base: {local: localhost:5000/dlc/base-cpu:local, gcp: us-docker.pkg.dev/x/y/base-cpu.py310}\n"
        "tests:\n"
        "  notebooks: [test-notebooks/*.ipynb]\n" + more
    )


def login(host: str = "localhost:5000") -> Credentials:
    """The write credentials of a registry `envctl stack up` started (it logs the Docker client in)."""
    return docker_credentials(host)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment less its ENVCTL_* settings and CI (a sign-off refuses CI), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_") and k != "CI"}
    env.update(extra or {})
    return env


def envctl(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as users do, in a child process."""
    return subprocess.run(
        [*ENVCTL, *args],
        cwd=cwd or ROOT,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def interrupted(
    *args: str, cwd: Path, env: dict[str, str], ready: Callable[[], bool], what: str, wait: float = 120
) -> tuple[int, str]:
    """Run `envctl args` in a child, press Ctrl-C once `ready()`; its exit code and stderr.

    Fails with `what` when `ready()` does not hold within `wait` seconds.
    """
    process = subprocess.Popen(
        [*ENVCTL, *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + wait
        while not (ok := ready()) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        if not ok:
            process.kill()
            _, stderr = process.communicate(timeout=60)
            raise AssertionError(f"{what}; envctl exited {process.returncode}: {stderr[-2000:]}")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


def error_lines(result: subprocess.CompletedProcess[str], code: int) -> list[str]:
    """The `envctl: ...` lines of a run that must exit `code`, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("envctl: ")]


Server = TypeVar("Server", bound=socketserver.BaseServer)


@contextlib.contextmanager
def serving(server: Server) -> Iterator[Server]:
    """Serve `server` on a thread of its own for the block; then shut it down and close it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def copy_example(target: Path) -> Path:
    """A copy of this repository's example image: environments/, docker/, test-notebooks/."""
    for folder in ("environments", "docker", "test-notebooks"):
        shutil.copytree(ROOT / folder, target / folder)
    return target
