"""docker/base's `conda` stand-in, run with sh, and what the SBOM records from a conda."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.build.sbom import SCRIPT
from tests.helpers import ROOT

STUB = ROOT / "docker" / "base" / "conda"


def conda(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(STUB), *args], capture_output=True, text=True, timeout=30, check=False)


def test_harmless_subcommands_answer() -> None:
    version = conda("--version")
    assert version.returncode == 0 and version.stdout.startswith("conda ") and "envctl" in version.stdout
    listed = conda("list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    cleaned = conda("clean", "--all", "-y")
    assert cleaned.returncode == 0 and "nothing to clean" in cleaned.stderr


def test_installing_fails_with_one_line() -> None:
    for args in (
        ["install", "-y", "numpy"],
        ["create", "-n", "x"],
        ["update", "--all"],
        ["env", "create", "-f", "e.yml"],
    ):
        done = conda(*args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and done.stdout == "", args
        assert len(lines) == 1 and "no conda channels" in lines[0] and "pip install" in lines[0], args


def sbom_with(tmp_path: Path, conda_script: str) -> dict[str, object]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conda").write_text(conda_script)
    (bin_dir / "conda").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


def test_sbom_records_nothing_from_a_failing_conda(tmp_path: Path) -> None:
    assert "conda" not in sbom_with(tmp_path, "#!/bin/sh\necho '[]'\nexit 1\n")


def test_sbom_records_what_a_working_conda_lists(tmp_path: Path) -> None:
    listing = json.dumps([{"name": "numpy", "version": "1.26.4", "channel": "conda-forge"}])
    assert sbom_with(tmp_path, f"#!/bin/sh\necho '{listing}'\n")["conda"] == [
        {"name": "numpy", "version": "1.26.4"}
    ]


def test_sbom_of_the_stand_in_is_an_empty_conda(tmp_path: Path) -> None:
    assert sbom_with(tmp_path, STUB.read_text())["conda"] == []
