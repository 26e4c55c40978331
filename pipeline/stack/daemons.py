"""Background programs the stack starts, recorded by PID so `stack down` stops only those."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import Unavailable
from pipeline.proc import which


@dataclass(frozen=True)
class Record:
    name: str
    pid: int
    argv: list[str]
    log: str


def _record_path(stack_dir: Path, name: str) -> Path:
    return stack_dir / f"{name}.pid.json"


def read(stack_dir: Path, name: str) -> Record | None:
    path = _record_path(stack_dir, name)
    try:
        data = json.loads(path.read_text())
        return Record(name=name, pid=int(data["pid"]), argv=list(data["argv"]), log=str(data["log"]))
    except (OSError, ValueError, KeyError):
        return None


def alive(record: Record) -> bool:
    """The recorded PID still runs the recorded program (PIDs get reused)."""
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    first = cmdline[0].decode(errors="replace") if cmdline else ""
    program = Path(record.argv[0]).name
    # nginx and others rename themselves ("nginx: master process ...").
    return bool(first) and (Path(first).name == program or first.startswith(f"{program}:"))


def start(
    stack_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    ready: Callable[[], bool],
    deadline: float,
) -> Record:
    """Start a program in its own session, record its PID and wait until `ready()`."""
    program = which(argv[0])
    if program is None:
        raise Unavailable(f"{argv[0]} is not installed")
    stack_dir.mkdir(parents=True, exist_ok=True)
    log_path = stack_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [program, *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = Record(name=name, pid=process.pid, argv=[program, *argv[1:]], log=str(log_path))
    tmp = _record_path(stack_dir, name).with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": record.pid, "argv": record.argv, "log": record.log}))
    tmp.replace(_record_path(stack_dir, name))
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            _record_path(stack_dir, name).unlink(missing_ok=True)
            raise Unavailable(f"{name} exited with {process.returncode} while starting; see {log_path}")
        if ready():
            return record
        time.sleep(0.3)
    stop(stack_dir, name)
    raise Unavailable(f"{name} did not become ready within {deadline:.0f} s; see {log_path}")


def stop(stack_dir: Path, name: str, *, grace: float = 20.0) -> bool:
    """Stop the recorded program; True when one was running."""
    record = read(stack_dir, name)
    if record is None:
        return False
    was_alive = alive(record)
    if was_alive:
        os.kill(record.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end and alive(record):
            _reap(record.pid)
            time.sleep(0.2)
        if alive(record):
            os.kill(record.pid, signal.SIGKILL)
            time.sleep(0.5)
        _reap(record.pid)
    _record_path(stack_dir, name).unlink(missing_ok=True)
    return was_alive


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
