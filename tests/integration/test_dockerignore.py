"""`.dockerignore` as the Docker Engine reads it: envctl's build context equals what BuildKit sends.

For each rule set, the same tree is committed (envctl reads the commit) and checked out
(the engine reads the folder). BuildKit copies its context into an empty image and
exports the files (`FROM scratch`, `COPY . /`, `--output type=local`), which is exactly
what a build can read; envctl's `build_context` must list the same files.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.build.stage import build_context
from pipeline.source import open_repo, resolve
from pipeline.spec.model import load
from tests import minirepo

pytestmark = pytest.mark.integration

FILES = [
    ".hidden",
    "x.py",
    "sub/x.py",
    "sub/deeper/y.py",
    "README.md",
    "README-long.md",
    "NOTES.md",
    "docs/guide.md",
    "temp",
    "tempa",
    "temp12",
    "sub/temperature.txt",
    "sub/deeper/tempfile",
    "main.go",
    "sub/deeper/util.go",
    "build/out.bin",
    "build/keep.txt",
    "data/a.csv",
    "data/keep.csv",
    "data/nested/b.csv",
    "sub/deeper/cache/blob",
    "cache/top",
]

# Docker's documented patterns (docs.docker.com, "Dockerignore files"), one rule set each.
RULES = {
    "docs-example": "# comment\n*/temp*\n*/*/temp*\ntemp?\n",
    "root-only-star": "*.py\n*.md\n!README*.md\n",
    "double-star": "**/*.go\n**/cache\n",
    "directories-and-exceptions": "build/\n!build/keep.txt\ndata\n!data/keep.csv\n/sub/deeper\n",
    "everything-but": "*\n!sub\n!x.py\nsub/**/*.go\n",
    "classes-and-cleaning": "temp[0-9]*\n../x.py\nsub/./deeper/../x.py\n/docs/\n  NOTES.md  \n",
    "excluding-the-build-files": ".dockerignore\nDockerfile\n.*\n./NOTES.md\n",
}


def _engine_context(folder: Path, out: Path) -> set[str]:
    dockerfile = out.parent / f"{out.name}.Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY . /\n")
    subprocess.run(
        [
            "/usr/bin/docker",
            "build",
            "-q",
            "-f",
            str(dockerfile),
            "--output",
            f"type=local,dest={out}",
            str(folder),
        ],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        timeout=300,
        check=True,
    )
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", sorted(RULES))
def test_build_context_matches_what_the_engine_sends(tmp_path: Path, case: str) -> None:
    mini = minirepo.make(tmp_path)
    folder = f"docker/{mini.image}"
    for name in FILES:
        mini.write(f"{folder}/{name}", f"{name}\n")
    mini.write(f"{folder}/.dockerignore", RULES[case])
    sha = mini.commit(f".dockerignore: {case}")

    tree = resolve(open_repo(mini.path), sha)
    envctl_files = set(build_context(load(tree, mini.image), tree).files) - {".envctl.Dockerfile"}
    engine_files = _engine_context(mini.path / folder, tmp_path / "out")

    assert engine_files, "the engine sent nothing"
    assert envctl_files == engine_files


def test_a_root_pattern_keeps_the_same_name_in_a_folder(tmp_path: Path) -> None:
    """The case the hand-written matcher got wrong: `*.py` drops x.py, keeps sub/x.py."""
    mini = minirepo.make(tmp_path)
    folder = f"docker/{mini.image}"
    for name in ("x.py", "sub/x.py"):
        mini.write(f"{folder}/{name}", "pass\n")
    mini.write(f"{folder}/.dockerignore", "*.py\n")
    tree = resolve(open_repo(mini.path), mini.commit("*.py"))
    files = set(build_context(load(tree, mini.image), tree).files)
    assert "sub/x.py" in files
    assert "x.py" not in files and "greeting.py" not in files
