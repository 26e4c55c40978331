"""`envctl init`: scaffolding, importing an existing layout, idempotence, refusals.

Each case runs the real `envctl` in a child process on a folder of its own; the
scaffolded or imported repository must pass `envctl validate`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.spec.init import parametrize_base
from tests.helpers import DATA, ROOT, envctl

SAMPLE = DATA / "managed-environments"


def run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return envctl(*args, cwd=repo, env={"ENVCTL_STATE_DIR": str(repo.parent / "state")}, timeout=120)


def tree(repo: Path) -> dict[str, str]:
    return {p.relative_to(repo).as_posix(): p.read_text() for p in sorted(repo.rglob("*")) if p.is_file()}


def bad_input(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envctl: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE, repo)
    (repo / ".git").mkdir()  # the repository root, as far as envctl's settings look
    return repo


def test_scaffold_writes_a_repository_that_validates_and_a_second_run_does_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "new"
    (repo / ".git").mkdir(parents=True)
    first = run(repo, "init", "--image", "nlp.new-task")
    assert first.returncode == 0, first.stderr
    files = tree(repo)
    assert set(files) - {".git"} >= {
        "environments/nlp.new-task.yaml",
        "docker/nlp.new-task/Dockerfile",
        "test-notebooks/nlp.new-task/smoke.ipynb",
        "cloudbuild/staging.yaml",
        "cloudbuild/production.yaml",
        ".gitignore",
    }
    assert "FROM ${BASE_IMAGE}" in files["docker/nlp.new-task/Dockerfile"]
    assert ".envctl/" in files[".gitignore"].splitlines()
    assert "next:" in first.stderr
    validated = run(repo, "validate")
    assert validated.returncode == 0, validated.stderr
    second = run(repo, "init", "--image", "nlp.new-task")
    assert second.returncode == 0, second.stderr
    assert second.stderr.strip() == "nothing to do: nlp.new-task is set up"
    assert tree(repo) == files


def test_cloudbuild_templates_are_the_repositorys_own() -> None:
    templates = ROOT / "pipeline" / "spec" / "templates"
    for branch in ("staging", "production"):
        assert (templates / f"cloudbuild-{branch}.yaml").read_text() == (
            ROOT / "cloudbuild" / f"{branch}.yaml"
        ).read_text()


def test_import_moves_the_dockerfile_keeps_the_notebooks_and_names_the_image(sample: Path) -> None:
    result = run(sample, "init", "--from", ".")
    assert result.returncode == 0, result.stderr
    assert not (sample / "Dockerfile").exists()
    dockerfile = (sample / "docker/team1.task1/Dockerfile").read_text()
    assert (
        "ARG BASE_IMAGE=gcr.io/deeplearning-platform-release/tf-gpu.1-15\nFROM ${BASE_IMAGE}\n" in dockerfile
    )
    assert dockerfile.endswith("RUN pip install --user --upgrade setuptools\n")
    spec = (sample / "environments/team1.task1.yaml").read_text()
    assert "    - test_notebooks/*.ipynb\n" in spec
    assert "gcp: gcr.io/deeplearning-platform-release/tf-gpu.1-15" in spec
    assert "context: docker/team1.task1" in spec
    assert "accelerator:" not in spec.replace("# e.g. accelerator:", "")  # unset, with a comment
    assert "set the accelerator" in spec
    assert (sample / "test_notebooks/1.ipynb").read_text() == (SAMPLE / "test_notebooks/1.ipynb").read_text()
    assert (sample / ".gitignore").read_text() == "*.pyc\n.envctl/\n"
    assert "the test notebooks stay in test_notebooks/" in result.stderr
    assert "added .envctl/ to .gitignore" in result.stderr
    assert "set cloud.accelerator" in result.stderr
    assert run(sample, "validate").returncode == 0
    before = tree(sample)
    again = run(sample, "init", "--from", ".")
    assert again.returncode == 0 and "nothing to do: team1.task1" in again.stderr, again.stderr
    assert tree(sample) == before


def test_import_from_another_folder_copies_and_leaves_the_source(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    result = run(repo, "init", "--from", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert (SAMPLE / "Dockerfile").is_file()
    assert (repo / "docker/team1.task1/Dockerfile").is_file()
    assert (repo / "test_notebooks/2.ipynb").read_text() == (SAMPLE / "test_notebooks/2.ipynb").read_text()
    assert (repo / ".gitignore").read_text() == "*.pyc\n.envctl/\n"
    assert "wrote .gitignore (*.pyc, .envctl/)" in result.stderr
    assert run(repo, "validate").returncode == 0
    again = run(repo, "init", "--from", str(SAMPLE))
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr


def test_image_flag_wins_and_an_invalid_name_is_refused_with_the_rule(sample: Path) -> None:
    bad_input(run(sample, "init", "--from", ".", "--image", "Team1.Task1"), "lowercase letters", "--image")
    bad_input(run(sample, "init", "--image", "notask"), "TEAM.TASK")
    (sample / "cloudbuild-staging.yaml").write_text("substitutions:\n  _IMAGE_NAME: team1.staging\n")
    bad_input(run(sample, "init", "--from", "."), "stage name", "_IMAGE_NAME")
    assert (sample / "Dockerfile").is_file() and not (sample / "environments").exists()  # nothing written
    chosen = run(sample, "init", "--from", ".", "--image", "team1.chosen")
    assert chosen.returncode == 0, chosen.stderr
    assert (sample / "environments/team1.chosen.yaml").is_file()


def test_several_image_names_or_none_need_the_image_flag(sample: Path) -> None:
    (sample / "cloudbuild-prod.yaml").write_text("substitutions:\n  _IMAGE_NAME: team1.other\n")
    bad_input(run(sample, "init", "--from", "."), "several images", "--image")
    (sample / "cloudbuild-prod.yaml").unlink()
    (sample / "cloudbuild-staging.yaml").unlink()
    bad_input(run(sample, "init", "--from", "."), "no _IMAGE_NAME", "--image")
    bad_input(run(sample, "init"), "--image", "--from")


def test_existing_files_are_kept_unless_forced(sample: Path) -> None:
    (sample / "environments").mkdir()
    (sample / "environments/team1.task1.yaml").write_text("# the owner's own spec\n")
    kept = run(sample, "init", "--from", ".")
    assert kept.returncode == 0, kept.stderr
    assert "environments/team1.task1.yaml exists, left as is" in kept.stderr
    assert "--force" not in kept.stderr
    assert (sample / "environments/team1.task1.yaml").read_text() == "# the owner's own spec\n"
    forced = run(sample, "init", "--from", ".", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "rewrote environments/team1.task1.yaml" in forced.stderr
    assert run(sample, "validate").returncode == 0


def test_a_dockerfile_that_copies_from_the_root_keeps_the_root_as_context(sample: Path) -> None:
    (sample / "requirements.txt").write_text("six\n")
    (sample / "Dockerfile").write_text(
        "FROM gcr.io/deeplearning-platform-release/base-cpu AS base\nCOPY requirements.txt /tmp/\n"
    )
    result = run(sample, "init", "--from", ".")
    assert result.returncode == 0, result.stderr
    spec = (sample / "environments/team1.task1.yaml").read_text()
    assert "context: .\n" in spec
    assert "FROM ${BASE_IMAGE} AS base\n" in (sample / "docker/team1.task1/Dockerfile").read_text()
    assert "build.context is '.'" in result.stderr


def test_no_dockerfile_is_bad_input(sample: Path) -> None:
    (sample / "Dockerfile").unlink()
    bad_input(run(sample, "init", "--from", "."), "no Dockerfile")


@pytest.mark.parametrize(
    ("text", "base"),
    [
        ("FROM gcr.io/x/tf-gpu.1-15\nRUN true\n", "gcr.io/x/tf-gpu.1-15"),
        ("# syntax\nfrom --platform=linux/amd64 img:1 as b\n", "img:1"),
        ("ARG BASE_IMAGE=img:2\nFROM ${BASE_IMAGE}\n", "img:2"),
    ],
)
def test_parametrize_base(text: str, base: str) -> None:
    rewritten, found = parametrize_base(text)
    assert found == base
    again, second = parametrize_base(rewritten)
    assert (again, second) == (rewritten, base)
    assert "${BASE_IMAGE}" in rewritten


def git_repo(folder: Path) -> None:
    subprocess.run(["git", "init", "-q", str(folder)], check=True)


def test_import_from_a_git_folder_copies_only_tracked_files(tmp_path: Path) -> None:
    source = tmp_path / "old"
    shutil.copytree(SAMPLE, source)
    git_repo(source)
    subprocess.run(["git", "-C", str(source), "add", "."], check=True)
    (source / ".env").write_text("TOKEN=secret\n")
    (source / "untracked.txt").write_text("x\n")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    result = run(repo, "init", "--from", str(source))
    assert result.returncode == 0, result.stderr
    assert (repo / "test_notebooks/1.ipynb").is_file()
    assert not (repo / ".env").exists() and not (repo / "untracked.txt").exists()


def test_import_skips_hidden_folders_venvs_and_links_out_of_the_source(tmp_path: Path) -> None:
    source = tmp_path / "old"
    shutil.copytree(SAMPLE, source)
    secret = tmp_path / "credentials.json"
    secret.write_text("{}")
    (source / ".ssh").mkdir()
    (source / ".ssh/id_rsa").write_text("KEY")
    (source / ".env").write_text("TOKEN=1")
    (source / "venv/lib").mkdir(parents=True)
    (source / "venv/lib/x.py").write_text("")
    (source / "tools").mkdir()
    (source / "tools/pyvenv.cfg").write_text("home = /usr\n")
    (source / "creds.json").symlink_to(secret)
    (source / "notes.md").write_text("inside\n")
    (source / "link.md").symlink_to(source / "notes.md")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    result = run(repo, "init", "--from", str(source))
    assert result.returncode == 0, result.stderr
    for gone in (".ssh", ".env", "venv", "tools", "creds.json"):
        assert not (repo / gone).exists(), gone
    assert (repo / "link.md").read_text() == "inside\n" and not (repo / "link.md").is_symlink()
    assert "not copied" in result.stderr and "creds.json" in result.stderr


def test_a_source_that_contains_the_repository_or_lies_inside_it_is_refused(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    shutil.copytree(SAMPLE, outer)
    repo = outer / "repo"
    (repo / ".git").mkdir(parents=True)
    bad_input(run(repo, "init", "--from", str(outer)), "contains the repository")
    inner = repo / "old"
    shutil.copytree(SAMPLE, inner)
    bad_input(run(repo, "init", "--from", "old"), "inside the repository")
    assert not (repo / "environments").exists()


def test_init_writes_in_the_current_folder_not_an_ancestor_repository(tmp_path: Path) -> None:
    (tmp_path / "outer/.git").mkdir(parents=True)
    (tmp_path / "outer/environments").mkdir()
    new = tmp_path / "outer/sub/new"
    new.mkdir(parents=True)
    result = run(new, "init", "--image", "nlp.here")
    assert result.returncode == 0, result.stderr
    assert (new / "environments/nlp.here.yaml").is_file()
    assert not (tmp_path / "outer/environments/nlp.here.yaml").exists()


def test_an_existing_file_is_not_replaced_by_a_longer_one_without_force(tmp_path: Path) -> None:
    repo = tmp_path / "new"
    (repo / ".git").mkdir(parents=True)
    (repo / "environments").mkdir()
    (repo / "environments/nlp.t.yaml").write_text("")  # empty: every text starts with it
    (repo / "docker/nlp.t").mkdir(parents=True)
    (repo / "docker/nlp.t/Dockerfile").write_text("ARG BASE_IMAGE=x\n")  # truncated
    result = run(repo, "init", "--image", "nlp.t")
    assert result.returncode == 0, result.stderr
    assert (repo / "environments/nlp.t.yaml").read_text() == ""
    assert (repo / "docker/nlp.t/Dockerfile").read_text() == "ARG BASE_IMAGE=x\n"
    assert "environments/nlp.t.yaml exists, left as is" in result.stderr
    assert "kept docker/nlp.t/Dockerfile: it lacks FROM ${BASE_IMAGE}" in result.stderr


@pytest.mark.parametrize(
    ("text", "base", "final"),
    [
        (
            "FROM golang:1 AS build\nRUN make\nFROM gcr.io/x/base-cpu\nCOPY --from=build /a /a\n",
            "gcr.io/x/base-cpu",
            "FROM ${BASE_IMAGE}\nCOPY",
        ),
        (
            "FROM gcr.io/x/tf-gpu AS base\nRUN a\nFROM base\nRUN b\n",
            "gcr.io/x/tf-gpu",
            "FROM ${BASE_IMAGE} AS base\n",
        ),
    ],
)
def test_parametrize_base_takes_the_final_stages_external_base(text: str, base: str, final: str) -> None:
    rewritten, found = parametrize_base(text)
    assert found == base
    assert final in rewritten
    assert rewritten.index("ARG BASE_IMAGE=") < rewritten.index("FROM")  # visible to every FROM
    assert parametrize_base(rewritten) == (rewritten, base)


def test_a_base_that_is_a_build_argument_is_bad_input(sample: Path) -> None:
    (sample / "Dockerfile").write_text("ARG TAG=1\nFROM gcr.io/x/base:${TAG}\n")
    bad_input(run(sample, "init", "--from", "."), "build argument")


def test_a_dockerfile_that_is_not_utf8_is_bad_input(sample: Path) -> None:
    (sample / "Dockerfile").write_bytes(b"FROM img\n# caf\xe9\n")
    bad_input(run(sample, "init", "--from", "."), "not UTF-8")


def test_a_folder_at_a_target_path_is_bad_input_and_nothing_is_written(sample: Path) -> None:
    (sample / "environments/team1.task1.yaml").mkdir(parents=True)
    bad_input(run(sample, "init", "--from", "."), "environments/team1.task1.yaml", "not a plain file")
    assert (sample / "Dockerfile").is_file() and not (sample / "docker").exists()
    assert not (sample / "cloudbuild").exists()
    assert not list(sample.rglob("*.envctl-init"))


def test_checkpoint_notebooks_do_not_count(sample: Path) -> None:
    shutil.rmtree(sample / "test_notebooks")
    (sample / "test_notebooks/.ipynb_checkpoints").mkdir(parents=True)
    (sample / "test_notebooks/.ipynb_checkpoints/1-checkpoint.ipynb").write_text("{}")
    result = run(sample, "init", "--from", ".")
    assert result.returncode == 0, result.stderr
    assert "no test notebooks found" in result.stderr
    assert (sample / "test-notebooks/team1.task1/smoke.ipynb").is_file()


def test_the_timeout_comment_says_per_cell() -> None:
    from pipeline.spec.init import spec_text

    text = spec_text("a.b", dockerfile="d", context="c", local="l", gcp="g", notebooks="n")
    assert "each cell" in text and "timeout + 60" in text
    assert "each notebook may run in all" not in (ROOT / "environments/nlp.keras-batch.yaml").read_text()
