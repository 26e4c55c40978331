"""Settings layers: defaults < [tool.envctl] < ENVCTL_* < flags; unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load
from tests.helpers import envctl


def _repo(tmp_path: Path, table: str = "") -> Path:
    (tmp_path / "environments").mkdir()
    (tmp_path / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.envctl]\n{table}")
    return tmp_path


def test_defaults_run_everything_locally(tmp_path: Path) -> None:
    settings = load(repo=_repo(tmp_path), env={})
    assert settings.registry == "localhost:5000"
    assert settings.ledger_url == f"sqlite:///{tmp_path / '.envctl' / 'ledger.db'}"
    assert settings.artifacts_dir == tmp_path / ".envctl" / "runs"
    assert settings.base_image == "localhost:5000/dlc/base-cpu:local"
    assert settings.jobs >= 1


def test_later_layers_win(tmp_path: Path) -> None:
    repo = _repo(tmp_path, 'registry = "from-pyproject:1"\njobs = 3\nbackend = "gcp"\n')
    settings = load(repo=repo, env={"ENVCTL_REGISTRY": "from-env:2"}, flags={"jobs": 5})
    assert settings.registry == "from-env:2"
    assert settings.jobs == 5
    assert settings.backend == "gcp"


def test_unknown_pyproject_key_suggests_the_nearest(tmp_path: Path) -> None:
    repo = _repo(tmp_path, 'registy = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'registy'; did you mean 'registry'"):
        load(repo=repo, env={})


def test_unknown_variable_suggests_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ENVCTL_LEDGER_UR; did you mean ENVCTL_LEDGER_URL"):
        load(repo=_repo(tmp_path), env={"ENVCTL_LEDGER_UR": "sqlite://"})


def test_bad_values_are_rejected(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(ConfigError, match="jobs = 'many'"):
        load(repo=repo, env={"ENVCTL_JOBS": "many"})
    with pytest.raises(ConfigError, match="backend"):
        load(repo=repo, env={"ENVCTL_BACKEND": "aws"})


def test_cli_reports_a_bad_setting_with_exit_2(tmp_path: Path) -> None:
    repo = _repo(tmp_path, 'regstry = "x"\n')
    result = envctl("validate", cwd=repo)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"envctl: error: {repo / 'pyproject.toml'} [tool.envctl]: unknown key 'regstry'; did you mean 'registry'?"
    ]


def test_registry_token_is_sent_as_bearer_and_kept_out_of_repr(tmp_path: Path) -> None:
    from pipeline.publish.distribution import OciPublisher

    settings = load(
        repo=_repo(tmp_path),
        env={"ENVCTL_REGISTRY": "europe-docker.pkg.dev/proj/images", "ENVCTL_REGISTRY_TOKEN": "s3cret"},
    )
    publisher = OciPublisher.for_settings(settings)
    assert publisher.registry.host == "europe-docker.pkg.dev"
    assert publisher.prefix == "proj/images"
    assert publisher.registry.session.headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(settings)


def test_ledger_password_goes_into_the_url_only(tmp_path: Path) -> None:
    env = {
        "ENVCTL_LEDGER_URL": "postgresql+psycopg://envctl@127.0.0.1/envctl",
        "ENVCTL_LEDGER_PASSWORD": "pw",
    }
    settings = load(repo=_repo(tmp_path), env=env)
    assert settings.ledger_url == "postgresql+psycopg://envctl:pw@127.0.0.1/envctl"
