"""The one helper that runs subprocesses: argument lists, a timeout, clear errors.

`run` waits and returns the output; `stream` hands each output line over as it comes.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pipeline.errors import Unavailable

log = logging.getLogger(__name__)


def which(program: str) -> str | None:
    return shutil.which(program) or next(
        (str(p) for d in ("/usr/sbin", "/sbin", "/usr/bin") if (p := Path(d) / program).exists()),
        None,
    )


def run(
    args: Sequence[str | Path],
    *,
    timeout: float,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program (never through a shell) and return its result.

    Raises `Unavailable` naming the program when it is missing, and when it fails
    or times out with `check`.
    """
    argv = [str(a) for a in args]
    program = which(argv[0])
    if program is None:
        raise Unavailable(f"{argv[0]} is not installed; install it and try again")
    log.debug("run: %s", " ".join(argv))
    try:
        result = subprocess.run(
            [program, *argv[1:]],
            timeout=timeout,
            capture_output=capture,
            env=None if env is None else dict(env),
            cwd=cwd,
            input=input_bytes,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"{argv[0]} did not finish within {timeout:.0f} s") from e
    if check and result.returncode != 0:
        tail = (result.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        detail = f": {' / '.join(tail)}" if tail else ""
        raise Unavailable(f"{' '.join(argv[:3])} exited with {result.returncode}{detail}")
    return result


def stream(
    args: Sequence[str | Path],
    *,
    timeout: float,
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Run a program (never through a shell), hand each line of its output to `on_line`.

    stdout and stderr are merged; stdin is empty. Returns the exit code. Raises
    `Unavailable` naming the program when it is missing or runs past `timeout` (it
    is then killed); the program is killed too when `on_line` or the caller raises.
    """
    argv = [str(a) for a in args]
    program = which(argv[0])
    if program is None:
        raise Unavailable(f"{argv[0]} is not installed; install it and try again")
    log.debug("stream: %s", " ".join(argv))
    child = subprocess.Popen(
        [program, *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        child.kill()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        if child.stdout is not None:
            for raw in child.stdout:
                on_line(raw.decode(errors="replace").rstrip("\r\n"))
        code = child.wait()
    finally:
        timer.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    if expired.is_set():
        raise Unavailable(f"{argv[0]} did not finish within {timeout:.0f} s")
    return code
