"""Messages and steps on stderr; data goes to stdout through the CLI."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline import progress


def _colour() -> bool:
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ


def info(message: str) -> None:
    progress.above(message)


def warn(message: str) -> None:
    prefix = "\033[33mwarning:\033[0m " if _colour() else "warning: "
    progress.above(prefix + message)


@contextmanager
def step(title: str) -> Iterator[None]:
    """Say when a step starts and when it ends, with its duration."""
    info(f"==> {title}")
    start = time.monotonic()
    try:
        yield
    except BaseException:
        info(f"<== {title}: failed after {time.monotonic() - start:.1f} s")
        raise
    info(f"<== {title}: done in {time.monotonic() - start:.1f} s")


class BuildProgress(progress.Steps):
    """Build log lines: on a terminal one updating line per step, in CI every line."""
