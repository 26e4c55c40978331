"""Reading and amending Dockerfiles: .dockerignore rules and build-time injection.

The machine's CA bundle and pip settings must reach `pip install` in a build without
staying in the published image. envctl copies them into each stage under
/tmp/envctl-build, points pip at them with stage-scoped ARGs (never ENV, so nothing
persists in the image config), removes them at the end of the final stage, and builds
with squash so the removed files are in no layer either.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

BUILD_DIR = ".envctl-build"
MOUNT = "/tmp/envctl-build"
_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)(\s+|$)(.*)$", re.DOTALL)


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


def inject_build_files(text: str) -> str:
    """The Dockerfile with build-time CA and pip settings added to every stage."""
    found = instructions(text)
    froms = [ins for ins in found if ins.keyword == "FROM"]
    if not froms:
        return text
    lines = text.splitlines()
    final = froms[-1]
    last_user = next(
        (ins.args for ins in reversed(found) if ins.keyword == "USER" and ins.first_line > final.last_line),
        None,
    )
    setup = [
        f"COPY {BUILD_DIR}/ {MOUNT}/",
        f"ARG PIP_CERT={MOUNT}/ca.crt",
        f"ARG PIP_CONFIG_FILE={MOUNT}/pip.conf",
        f"ARG REQUESTS_CA_BUNDLE={MOUNT}/ca.crt",
        f"ARG SSL_CERT_FILE={MOUNT}/ca.crt",
    ]
    out: list[str] = []
    after = {ins.last_line for ins in froms}
    for number, line in enumerate(lines):
        out.append(line)
        if number in after:
            out.extend(setup)
    out.extend(["USER root", f"RUN rm -rf {MOUNT}"])
    if last_user:
        out.append(f"USER {last_user}")
    return "\n".join(out) + "\n"


def ignore_rules(text: str | None) -> list[tuple[bool, str]]:
    """Parse .dockerignore into (negated, pattern) rules, in order."""
    rules: list[tuple[bool, str]] = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = pattern.strip("/").removeprefix("./")
        if pattern:
            rules.append((negated, pattern))
    return rules


def _matches(path: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if pattern.startswith("**/") and _matches(path, pattern[3:]):
        return True
    if "**" in pattern:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if re.fullmatch(regex, path):
            return True
    # A pattern naming a folder excludes everything under it.
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:n]), pattern) for n in range(1, len(parts)))


def ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    """Whether .dockerignore rules exclude `path` (last matching rule wins)."""
    excluded = False
    for negated, pattern in rules:
        if _matches(path, pattern):
            excluded = not negated
    return excluded
