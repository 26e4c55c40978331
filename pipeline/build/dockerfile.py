"""Reading Dockerfiles: logical instructions, and whether pip runs without the index settings.

envctl never rewrites a Dockerfile: build-time settings reach `RUN` steps as BuildKit
secret mounts that the Dockerfile asks for (see `pipeline.build.docker_builder`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)(\s+|$)(.*)$", re.DOTALL)
_PIP = re.compile(r"\bpip[0-9.]*\s+install\b|-m\s+pip\s+install\b")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    first_line: int
    last_line: int


def instructions(text: str) -> list[Instruction]:
    """Logical instructions with their line spans (continuations joined, comments skipped)."""
    lines = text.splitlines()
    result: list[Instruction] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            if lines[i].strip().startswith("#"):
                continue
            parts.append(lines[i])
        match = _INSTRUCTION.match(" ".join(p.rstrip().rstrip("\\") for p in parts))
        if match:
            result.append(Instruction(match.group(1).upper(), match.group(3).strip(), start, i))
        i += 1
    return result


def runs_pip_without(text: str, secret: str) -> bool:
    """Whether a RUN installs with pip but does not mount the secret `secret`."""
    mount = re.compile(rf"--mount=\S*\bid={re.escape(secret)}\b")
    return any(
        ins.keyword == "RUN" and _PIP.search(ins.args) and not mount.search(ins.args)
        for ins in instructions(text)
    )
