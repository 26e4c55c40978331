"""The spec rules: what `envctl validate` accepts and how it explains each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.source import WorkTree, glob
from pipeline.spec import model as spec
from tests.helpers import DATA, ROOT, copy_example, envctl

BAD = sorted(p.stem for p in (DATA / "bad-specs").glob("*.yaml"))


def test_shipped_spec_is_valid() -> None:
    specs, problems = spec.validate(WorkTree(ROOT))
    assert problems == []
    assert [s.image for s in specs] == ["nlp.keras-batch"]
    shipped = specs[0]
    assert shipped.tests.timeout == 300
    assert shipped.tests.resources.memory_bytes == 2 * 1024**3
    assert spec.notebooks(shipped, WorkTree(ROOT)) == [
        "test-notebooks/nlp.keras-batch/fit.ipynb",
        "test-notebooks/nlp.keras-batch/imports.ipynb",
        "test-notebooks/nlp.keras-batch/text.ipynb",
    ]


@pytest.mark.parametrize("case", BAD)
def test_bad_spec_is_one_clear_line_and_exit_2(case: str, tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    (repo / "environments" / "nlp.keras-batch.yaml").write_bytes(
        (DATA / "bad-specs" / f"{case}.yaml").read_bytes()
    )
    expected = (DATA / "bad-specs" / f"{case}.expect").read_text().strip()

    result = envctl("validate", cwd=repo)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("envctl: error: environments/nlp.keras-batch.yaml: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    path = repo / "environments" / "nlp.keras-batch.yaml"
    text = path.read_text().replace("timeout: 300", "timeout: 0").replace("network: none", "network: nat")
    path.write_text(text)

    result = envctl("validate", cwd=repo)

    assert result.returncode == 2
    assert "tests.timeout" in result.stderr
    assert "tests.network" in result.stderr


def test_file_name_must_match_image(tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    (repo / "environments" / "nlp.keras-batch.yaml").rename(repo / "environments" / "nlp.other.yaml")

    result = envctl("validate", cwd=repo)

    assert result.returncode == 2
    assert (
        "environments/nlp.other.yaml: image: 'nlp.keras-batch' does not match the file name" in result.stderr
    )


def test_validate_names_one_image(tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    ok = envctl("validate", "nlp.keras-batch", cwd=repo)
    missing = envctl("validate", "nlp.nothing", cwd=repo)
    assert ok.returncode == 0, ok.stderr
    assert missing.returncode == 2
    assert "environments/nlp.nothing.yaml: no such file" in missing.stderr


def test_validate_json_lists_problems(tmp_path: Path) -> None:
    import json

    repo = copy_example(tmp_path)
    path = repo / "environments" / "nlp.keras-batch.yaml"
    path.write_text(path.read_text().replace("timeout: 300", "timeout: -1"))
    result = envctl("validate", "--json", cwd=repo)
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["valid"] == []
    assert report["problems"][0]["field"] == "tests.timeout"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("nlp.keras-batch", True),
        ("vision.resnet_50", True),
        ("a.b", True),
        ("NLP.keras", False),
        ("nlp keras", False),
        ("nlp..keras", False),
        ("nlp.keras-", False),
        ("nokeras", False),
        ("nlp.production", False),
        ("nlp." + "a" * 125, False),
    ],
)
def test_image_names(name: str, ok: bool) -> None:
    if ok:
        assert spec.check_image_name(name) == name
    else:
        with pytest.raises(ValueError):
            spec.check_image_name(name)


def test_per_notebook_parameters_must_name_a_notebook(tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    path = repo / "environments" / "nlp.keras-batch.yaml"
    path.write_text(path.read_text().replace("fit.ipynb:", "fitt.ipynb:"))
    result = envctl("validate", cwd=repo)
    assert result.returncode == 2
    assert "tests.notebook_parameters.fitt.ipynb: names no test notebook" in result.stderr


def test_a_glob_never_reads_outside_the_repository(tmp_path: Path) -> None:
    """Not with '..', an absolute pattern, a linked file, a linked folder, nor through '**'."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.ipynb").write_text("{}")
    repo = copy_example(tmp_path / "repo")
    folder = repo / "test-notebooks" / "nlp.keras-batch"
    (folder / "evil.ipynb").symlink_to(outside / "secret.ipynb")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    (repo / "elsewhere").symlink_to(outside, target_is_directory=True)
    (folder / "inside.ipynb").symlink_to(folder / "fit.ipynb")  # a link inside the repository is fine
    tree = WorkTree(repo)
    own = ["fit.ipynb", "imports.ipynb", "inside.ipynb", "text.ipynb"]

    assert glob(tree, "test-notebooks/**/*.ipynb") == [f"test-notebooks/nlp.keras-batch/{n}" for n in own]
    assert glob(tree, "**/*.ipynb") == glob(tree, "test-notebooks/**/*.ipynb")
    for pattern in (
        "test-notebooks/nlp.keras-batch/evil.ipynb",
        "test-notebooks/nlp.keras-batch/linked/*.ipynb",
        "test-notebooks/nlp.keras-batch/linked/**",
        "elsewhere/*.ipynb",
        "elsewhere/**/*.ipynb",
        "../outside/*.ipynb",
        "test-notebooks/../../outside/*.ipynb",
        f"{outside}/*.ipynb",
        "/**/secret.ipynb",
    ):
        assert glob(tree, pattern) == [], pattern
    assert tree.read("test-notebooks/nlp.keras-batch/evil.ipynb") is None
    assert tree.read("elsewhere/secret.ipynb") is None
    assert tree.read("../outside/secret.ipynb") is None
    assert not tree.is_dir("elsewhere") and tree.files("elsewhere") == []

    result = envctl("validate", cwd=repo)  # the spec's glob sees the repository's notebooks only
    assert result.returncode == 0, result.stderr


def test_production_signoffs_default_to_none_and_are_read(tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    path = repo / "environments" / "nlp.keras-batch.yaml"
    assert spec.load(WorkTree(repo), "nlp.keras-batch").promotion.production.signoffs == 0
    path.write_text(path.read_text() + "promotion:\n  production:\n    signoffs: 2\n")
    assert spec.load(WorkTree(repo), "nlp.keras-batch").promotion.production.signoffs == 2
    assert envctl("validate", cwd=repo).returncode == 0
