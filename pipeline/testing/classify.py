"""Failure classification: from how a container ended and the executed notebook, a verdict.

Pure functions over data, so the rules are unit-tested without Docker. Each verdict
carries a one-line hint a notebook owner can act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.modules import DISTRIBUTIONS
from pipeline.testing.model import ContainerExit, Verdict
from pipeline.testing.params import source_of

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_LINE = re.compile(r"Cell In\s*\[(\d+)\],\s*line (\d+)")
INSERTED_TAGS = {"injected-parameters", "papermill-error-cell-tag"}
MODULE_NOT_FOUND = re.compile(r"No module named '([^']+)'")
IMPORT_FROM = re.compile(r"cannot import name '([^']+)' from '([^']+)'")
# Import names whose pip package is named otherwise.
PACKAGES = DISTRIBUTIONS
NOT_FOUND = ("executable file not found", "no such file or directory")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def package_for(module: str) -> str:
    top = module.split(".")[0]
    return PACKAGES.get(top, top)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in plain(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _error_in_logs(logs: str) -> tuple[str, str] | None:
    """The last `Name: value` Python exception line of a log, if any."""
    for line in reversed(plain(logs).splitlines()):
        match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)):\s*(.*)$", line.strip())
        if match:
            return match.group(1).rsplit(".", 1)[-1], match.group(2)
    return None


def as_mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is a mapping, else empty: executed JSON is whatever the notebook made it."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    """`value` if it is a list, else empty."""
    return value if isinstance(value, list) else []


def tags_of(cell: Mapping[str, Any]) -> set[str]:
    """The cell's tags (the strings among them)."""
    return {t for t in as_list(as_mapping(cell.get("metadata")).get("tags")) if isinstance(t, str)}


def _cells(executed: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """The executed notebook's cells with their index in the committed notebook."""
    cells: list[tuple[int, Mapping[str, Any]]] = []
    index = 0
    for cell in as_list(executed.get("cells")):
        if not isinstance(cell, Mapping):
            continue
        tags = tags_of(cell)
        if tags & INSERTED_TAGS:
            cells.append((-1, cell))
            continue
        cells.append((index, cell))
        index += 1
    return cells


def _line_of(cell: Mapping[str, Any], traceback: Sequence[str], ename: str) -> tuple[int | None, str]:
    source = source_of(cell).splitlines()
    numbers = [int(m.group(2)) for m in CELL_LINE.finditer(plain("\n".join(traceback)))]
    line = numbers[-1] if numbers else None
    if line is None and ename == "SystemExit":
        line = next((i + 1 for i, s in reversed(list(enumerate(source))) if "exit(" in s), None)
    if line is None or not 0 < line <= len(source):
        return line, ""
    return line, source[line - 1].strip()


def error_cell(executed: Mapping[str, Any]) -> Verdict | None:
    """Where the executed notebook records an error output: cell, line, exception."""
    for index, cell in _cells(executed):
        for output in as_list(cell.get("outputs")):
            if not isinstance(output, Mapping) or output.get("output_type") != "error":
                continue
            ename = str(output.get("ename", "Error"))
            evalue = str(output.get("evalue", ""))
            trace = [str(t) for t in as_list(output.get("traceback"))]
            line, text = _line_of(cell, trace, ename)
            return Verdict(
                outcome="failed",
                error=f"{ename}: {evalue}" if evalue else ename,
                cell_index=None if index < 0 else index,
                execution_count=cell.get("execution_count"),
                line=line,
                source_line=text,
            )
    return None


def running_cell(executed: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The cell that was running when the kernel stopped: the last one papermill started."""
    found: tuple[int | None, int | None] = (None, None)
    for index, cell in _cells(executed):
        meta = as_mapping(as_mapping(cell.get("metadata")).get("papermill"))
        if cell.get("cell_type") == "code" and index >= 0 and meta.get("start_time"):
            found = (index, cell.get("execution_count"))
    return found


def classify_notebook(
    ran: ContainerExit,
    executed: Mapping[str, Any] | None,
    *,
    dockerfile: str,
    timeout: int,
    memory: str,
    deadline: float,
) -> Verdict:
    """The verdict of one notebook from its container's end and its executed notebook."""
    logs = plain(ran.logs)
    found = error_cell(executed) if executed else None
    at_index, at_count = running_cell(executed) if executed else (None, None)
    if ran.start_error:
        # The driver runs under the image's python3; without it there is no papermill to run.
        named = "papermill" in ran.start_error or "python3" in ran.start_error
        if named and any(n in ran.start_error.lower() for n in NOT_FOUND):
            return _papermill_missing(dockerfile)
        return Verdict(
            outcome="infrastructure",
            error=ran.start_error,
            hint="the Docker Engine could not run the container; check `envctl stack status`",
        )
    if ran.deadline_hit:
        return Verdict(
            outcome="timeout",
            error=f"still running after {deadline:.0f} s; killed",
            cell_index=at_index,
            execution_count=at_count,
            hint="the notebook ran past tests.timeout, its budget for the whole notebook "
            "(or papermill hung after its last cell): shorten it or raise tests.timeout in the spec",
        )
    if ran.oom_killed or ran.exit_code == 137:
        return Verdict(
            outcome="oom",
            error=f"out of memory (limit {memory})",
            cell_index=at_index,
            execution_count=at_count,
            hint=f"raise tests.resources.memory (now {memory}) or use less memory in this cell",
        )
    if "CellTimeoutError" in logs:
        base = found or Verdict(outcome="timeout", cell_index=at_index, execution_count=at_count)
        return Verdict(
            outcome="timeout",
            error=f"cell ran longer than {timeout} s",
            cell_index=base.cell_index,
            execution_count=base.execution_count,
            line=base.line,
            source_line=base.source_line,
            hint=f"make this cell faster or raise tests.timeout (now {timeout} s) in the spec",
        )
    if ran.exit_code == 138 or "DeadKernelError" in logs:
        return Verdict(
            outcome="kernel_died",
            error="the kernel died (killed by a signal or crashed)",
            cell_index=at_index,
            execution_count=at_count,
            hint="this cell killed the kernel process (os.kill, a segfault in native code); "
            "run it alone to see why",
        )
    if ran.exit_code == 127 or "No module named papermill" in logs:
        return _papermill_missing(dockerfile)
    if ran.exit_code == 0:
        return Verdict(outcome="passed")
    if found is not None:
        return _with_hint(found, dockerfile)
    last = _last_line(logs) or f"papermill exited with {ran.exit_code}"
    hint = "papermill failed before running a cell; read the log in the run's artifacts"
    if "kernel" in last.lower() and ("no such kernel" in last.lower() or "kernel name" in last.lower()):
        hint = "install that kernel in the image or set tests.kernel in the spec"
    return Verdict(outcome="infrastructure", error=last, hint=hint)


def _papermill_missing(dockerfile: str) -> Verdict:
    return Verdict(
        outcome="papermill_missing",
        error="papermill is not installed in the image",
        hint=f"add papermill to {dockerfile} (pip install papermill), or derive it from the base image",
    )


def _with_hint(found: Verdict, dockerfile: str) -> Verdict:
    name, _, value = found.error.partition(": ")
    outcome: Any = "failed"
    module = MODULE_NOT_FOUND.search(value)
    imported = IMPORT_FROM.search(value)
    where = found.where(count=False)
    if name == "ModuleNotFoundError" and module:
        outcome = "missing_module"
        hint = f"add {package_for(module.group(1))} to {dockerfile}"
    elif name == "ImportError" and imported:
        outcome = "missing_module"
        hint = (
            f"{imported.group(2)} has no '{imported.group(1)}': pin a version of "
            f"{package_for(imported.group(2))} that has it in {dockerfile}"
        )
    elif name == "ImportError":
        outcome = "missing_module"
        hint = f"a package or its native library is missing; add it to {dockerfile}"
    elif name == "SystemExit":
        hint = f"the notebook called sys.exit({value}) at {where}; raise an exception or assert instead"
    elif name == "AssertionError":
        hint = f"an assertion failed at {where}; the image no longer meets this test"
    else:
        hint = f"fix {where or 'the failing cell'} or the image; open the executed notebook"
    return Verdict(
        outcome=outcome,
        hint=hint,
        error=found.error,
        cell_index=found.cell_index,
        execution_count=found.execution_count,
        line=found.line,
        source_line=found.source_line,
    )


def classify_command(ran: ContainerExit, *, command: str, dockerfile: str, memory: str) -> Verdict:
    """The verdict of one smoke check: a command run in the image."""
    program = command.split()[0] if command.split() else command
    not_found = ran.exit_code == 127 and any(n in ran.logs.lower() for n in NOT_FOUND)
    if not_found or (ran.start_error and any(n in ran.start_error.lower() for n in NOT_FOUND)):
        return Verdict(
            outcome="failed",
            error=f"{program}: command not found in the image",
            hint=f"install {program} in {dockerfile}",
        )
    if ran.start_error:
        return Verdict(outcome="infrastructure", error=ran.start_error, hint="check `envctl stack status`")
    if ran.deadline_hit:
        return Verdict(outcome="timeout", error="killed at the deadline", hint="raise tests.timeout")
    if ran.oom_killed or ran.exit_code == 137:
        return Verdict(
            outcome="oom", error=f"out of memory (limit {memory})", hint="raise tests.resources.memory"
        )
    if ran.exit_code == 0:
        return Verdict(outcome="passed")
    error = _error_in_logs(ran.logs)
    if error and error[0] in {"ModuleNotFoundError", "ImportError"}:
        return _with_hint(Verdict(outcome="failed", error=f"{error[0]}: {error[1]}"), dockerfile)
    last = _last_line(ran.logs)
    return Verdict(
        outcome="failed",
        error=f"exit {ran.exit_code}" + (f": {last}" if last else ""),
        hint=f"run `{command}` in the image to reproduce; fix the image in {dockerfile}",
    )
