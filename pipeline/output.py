"""Messages and steps on stderr; data goes to stdout through the CLI."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _colour() -> bool:
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ


_live = {"open": False}  # a progress line is on screen without its newline


def _end_live_line() -> None:
    if _live["open"]:
        sys.stderr.write("\n")
        _live["open"] = False


def info(message: str) -> None:
    _end_live_line()
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    _end_live_line()
    prefix = "\033[33mwarning:\033[0m " if _colour() else "warning: "
    print(prefix + message, file=sys.stderr, flush=True)


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


class BuildProgress:
    """Build log lines: on a terminal one updating line per step, in CI every line.

    The last lines are kept either way; a failed build prints them in its error.
    """

    def __init__(self, prefix: str = "  ") -> None:
        self.prefix = prefix
        self.live = sys.stderr.isatty() and not os.environ.get("CI")
        self.width = 0

    def __call__(self, line: str) -> None:
        if not self.live:
            info(f"{self.prefix}{line}")
            return
        if line.startswith("Step "):
            text = f"{self.prefix}{line}"[:118]
            sys.stderr.write("\r" + text.ljust(self.width))
            sys.stderr.flush()
            self.width = len(text)
            _live["open"] = True

    def close(self) -> None:
        _end_live_line()
        sys.stderr.flush()
        self.width = 0
