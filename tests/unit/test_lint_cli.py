"""`envctl lint` as users run it: exit codes, text, --json, --sarif, suppression by the spec."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers import DATA, copy_example, envctl

LINT = DATA / "lint"
SPEC = "environments/nlp.keras-batch.yaml"


def _repo(tmp_path: Path, *notebooks: str, lint: str = "") -> Path:
    repo = copy_example(tmp_path)
    (repo / "notebooks").mkdir()
    for name in notebooks:
        shutil.copyfile(LINT / f"{name}.ipynb", repo / "notebooks" / f"{name}.ipynb")
    spec = repo / SPEC
    spec.write_text(spec.read_text() + "lint:\n  paths: [notebooks/*.ipynb]\n" + lint)
    return repo


def test_clean_repository_exits_0(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "INT001-clean", "AUTH001-clean")
    result = envctl("lint", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "5 notebook(s): 0 error(s), 0 warning(s)" in result.stderr
    assert result.stdout == ""


def test_findings_exit_1_with_rule_place_source_and_fix(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "ENV001-found")
    result = envctl("lint", "nlp.keras-batch", cwd=repo)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "notebooks/ENV001-found.ipynb: cell 1, line 1: ENV001 error: `pip install lightgbm==4.3.0` runs in the notebook"
    )
    assert lines[1] == "    !pip install -q lightgbm==4.3.0"
    assert lines[2] == (
        "  fix: add lightgbm==4.3.0 to docker/nlp.keras-batch/requirements.txt "
        "(installed by docker/nlp.keras-batch/Dockerfile) and remove the install from the notebook"
    )
    assert result.stderr.strip().splitlines()[-1].startswith("envctl: error: lint found 5 error(s)")
    assert "Traceback" not in result.stderr


def test_json_and_sarif(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "AUTH002-found")
    sarif_file = tmp_path / "out" / "lint.sarif"
    result = envctl("lint", "--json", "--sarif", str(sarif_file), cwd=repo)
    assert result.returncode == 0, result.stderr  # AUTH002 is a warning
    data = json.loads(result.stdout)
    assert data["errors"] == 0 and data["warnings"] == 3
    first = data["findings"][0]
    assert set(first) == {"rule", "severity", "notebook", "cell", "line", "source", "message", "fix", "title"}
    assert (first["rule"], first["cell"], first["line"], first["source"]) == (
        "AUTH002",
        0,
        2,
        "bq = bigquery.Client()",
    )
    sarif = json.loads(sarif_file.read_text())
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} >= {"ENV001", "AUTH002", "RES001"}
    hit = run["results"][0]
    assert hit["ruleId"] == "AUTH002" and hit["level"] == "warning"
    location = hit["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "notebooks/AUTH002-found.ipynb"
    assert location["region"]["startLine"] == 2


def test_spec_lint_ignore_suppresses_a_rule(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "INT001-found", lint="  ignore: [INT001]\n")
    result = envctl("lint", "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["findings"] == []


def test_notebook_arguments(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "RES001-found", "PATH001-found")
    result = envctl("lint", "--json", "notebooks/RES001-found.ipynb", cwd=repo)
    assert result.returncode == 1
    found = json.loads(result.stdout)
    assert found["notebooks"] == ["notebooks/RES001-found.ipynb"]
    assert {f["rule"] for f in found["findings"]} == {"RES001"}
    outside = envctl("lint", str(LINT / "INT001-found.ipynb"), cwd=repo)
    assert outside.returncode == 1
    assert "INT001 error: input() waits for someone to type" in outside.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "notebooks" / "broken.ipynb").write_text("{not json")
    for args, expected in [
        (["nlp.nothing"], "unknown image 'nlp.nothing'"),
        (["notebooks/missing.ipynb"], "notebooks/missing.ipynb: no such notebook"),
        (["notebooks/broken.ipynb"], "notebooks/broken.ipynb: not a notebook (invalid JSON"),
    ]:
        result = envctl("lint", *args, cwd=repo)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines


def test_help_lists_lint() -> None:
    result = envctl("--help")
    assert "lint" in result.stdout and "by rule" in result.stdout
