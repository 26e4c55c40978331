"""Live progress on a terminal, plain lines elsewhere: build steps, layer pushes, test notebooks.

On a terminal one status line sits at the bottom of stderr and is rewritten in place
(a carriage return, the text, an erase to the end of the line): the build step and its
last log line, the bytes a push has sent and its rate, the notebooks done of all and
the ones running now. Messages (`output.info`) are printed above it. The status line
is live only when stderr is a terminal, `CI` is unset (or false) and neither
`--no-progress` nor `ENVCTL_NO_PROGRESS` was given; otherwise nothing is rewritten,
and each tracker prints plain lines (no carriage return, no ANSI), as a log wants them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

ERASE = "\x1b[K"
_lock = threading.RLock()
_state: dict[str, Any] = {"off": False, "shown": ""}


def disable() -> None:
    """No live status line for the rest of this process (`--no-progress`)."""
    _state["off"] = True


def live() -> bool:
    """Whether a status line may be rewritten in place on stderr."""
    if _state["off"] or os.environ.get("ENVCTL_NO_PROGRESS", "") not in ("", "0"):
        return False
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return sys.stderr.isatty()
    except ValueError:  # stderr closed
        return False


def _draw(text: str) -> None:
    width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
    sys.stderr.write("\r" + text[:width] + ERASE)
    sys.stderr.flush()
    _state["shown"] = text


def show(text: str) -> None:
    """Put `text` on the status line (on a terminal; nothing otherwise)."""
    with _lock:
        if live():
            _draw(text)


def clear() -> None:
    """Take the status line off the screen."""
    with _lock:
        if _state["shown"]:
            sys.stderr.write("\r" + ERASE)
            sys.stderr.flush()
            _state["shown"] = ""


def above(message: str) -> None:
    """Print a line on stderr; a status line on screen is redrawn below it."""
    with _lock:
        shown = _state["shown"]
        if shown:
            sys.stderr.write("\r" + ERASE)
        sys.stderr.write(message + "\n")
        if shown:
            _draw(shown)
        sys.stderr.flush()


class LogHandler(logging.Handler):
    """Log records on stderr, printed above a live status line (`above`) instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            above(self.format(record))
        except Exception:
            self.handleError(record)


def size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover - the loop returns


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[.+\].*)$")
_BK_NUMBER = re.compile(r"^#\d+ (?:\d+\.\d+ )?")


class Steps:
    """Build log lines: on a terminal the current step and its last line; else every line."""

    def __init__(self, prefix: str = "  ") -> None:
        self.prefix = prefix
        self.live = live()
        self.step = ""
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        if not self.live:
            above(f"{self.prefix}{line}")
            return
        if _STEP.match(line):
            self.step = _BK_NUMBER.sub("", line) if line.startswith("#") else line
            self.started = time.monotonic()
            show(f"{self.prefix}{self.step}")
        elif self.step:
            tail = _BK_NUMBER.sub("", line).strip()
            if tail and not tail.startswith(("--->", "Removing intermediate")):
                took = clock(time.monotonic() - self.started)
                show(f"{self.prefix}{self.step[:60]} {took} | {tail}")

    def close(self) -> None:
        clear()


class Transfer:
    """A `docker push` stream: layers done of all, bytes sent, the rate; one summary line at the end."""

    def __init__(self, what: str, prefix: str = "  ") -> None:
        self.what = what
        self.prefix = prefix
        self.live = live()
        self.layers: dict[str, tuple[int, int]] = {}  # id -> (sent, total)
        self.done: set[str] = set()
        self.existed: set[str] = set()
        self.started = time.monotonic()
        self.drawn = 0.0

    def update(self, chunk: Mapping[str, Any]) -> None:
        layer, status = str(chunk.get("id") or ""), str(chunk.get("status") or "")
        if not layer or not status:
            return
        detail = chunk.get("progressDetail") or {}
        sent, total = self.layers.get(layer, (0, 0))
        if status == "Pushing" and detail:
            sent, total = int(detail.get("current") or sent), int(detail.get("total") or total)
        elif status == "Pushed":
            self.done.add(layer)
            sent = total = max(sent, total)
        elif status == "Layer already exists" or status.startswith("Mounted from"):
            self.done.add(layer)
            self.existed.add(layer)
        elif status not in ("Preparing", "Waiting"):
            return
        self.layers[layer] = (sent, total)
        now = time.monotonic()
        if self.live and (now - self.drawn >= 0.1 or status != "Pushing"):
            self.drawn = now
            show(self.prefix + self.line())

    def sent(self) -> int:
        return sum(sent for sent, _ in self.layers.values())

    def line(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-3)
        sent = self.sent()
        total = sum(max(sent, total) for sent, total in self.layers.values())
        return (
            f"pushing {self.what}: {len(self.done)} of {len(self.layers)} layers, "
            f"{size(sent)} of {size(total)}, {size(sent / seconds)}/s"
        )

    def close(self, *, summary: bool = True) -> None:
        """Take the status line away; with `summary`, say what was pushed (not when the push failed)."""
        clear()
        if not self.layers or not summary:
            return
        seconds = max(time.monotonic() - self.started, 1e-3)
        pushed = len(self.done - self.existed)
        above(
            f"{self.prefix}pushed {pushed} layer(s) ({len(self.existed)} already there), "
            f"{size(self.sent())} in {seconds:.1f} s, {size(self.sent() / seconds)}/s"
        )


class Counter:
    """Tasks done of all, the elapsed time and the ones running; live only (results print their own lines).

    `started` and `finished` may be called from worker threads; on a terminal a ticker
    redraws the line every second while the counter is open.
    """

    def __init__(self, title: str, total: int, *, done: int = 0, prefix: str = "  ") -> None:
        self.title = title
        self.total = total
        self.prefix = prefix
        self.live = live()
        self.finished_count = done
        self.running: dict[str, float] = {}
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def open(self) -> None:
        self.t0 = time.monotonic()
        if self.live and self.total:
            self._ticker = threading.Thread(target=self._tick, name="envctl-progress", daemon=True)
            self._ticker.start()
            self.draw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self.live:
            clear()

    def __enter__(self) -> Counter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.draw()

    def started(self, name: str) -> None:
        with _lock:
            self.running[name] = time.monotonic()
        self.draw()

    def finished(self, name: str) -> None:
        with _lock:
            self.running.pop(name, None)
            self.finished_count += 1
        self.draw()

    def line(self) -> str:
        now = time.monotonic()
        with _lock:
            running = sorted(self.running.items(), key=lambda item: item[1])
            done = self.finished_count
        text = f"{self.title}: {done} of {self.total} done, {clock(now - self.t0)} elapsed"
        if running:
            names = ", ".join(f"{name.rsplit('/', 1)[-1]} {clock(now - at)}" for name, at in running)
            text += f"; running {names}"
        return text

    def draw(self) -> None:
        if self.live and not self._stop.is_set():
            show(self.prefix + self.line())
