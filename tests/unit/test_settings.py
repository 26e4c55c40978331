"""Settings layers: defaults < [tool.envctl] < ENVCTL_* < flags; unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load
from tests.helpers import envctl


def _repo(tmp_path: Path, table: str = "") -> Path:
    (tmp_path / "environments").mkdir(parents=True)
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


def test_ledger_password_stays_out_of_the_url_and_the_repr(tmp_path: Path) -> None:
    env = {
        "ENVCTL_LEDGER_URL": "postgresql+psycopg://envctl@127.0.0.1/envctl",
        "ENVCTL_LEDGER_PASSWORD": "pw-4ac1",
    }
    settings = load(repo=_repo(tmp_path), env=env)
    assert settings.ledger_url == "postgresql+psycopg://envctl@127.0.0.1/envctl"
    assert settings.ledger_password == "pw-4ac1"
    assert "pw-4ac1" not in repr(settings)


def test_a_password_written_into_the_url_is_taken_out_of_it(tmp_path: Path) -> None:
    env = {
        "ENVCTL_LEDGER_URL": "postgresql+psycopg://envctl:in-url-9f3@db.internal:5432/envctl?sslmode=require"
    }
    settings = load(repo=_repo(tmp_path), env=env)
    assert settings.ledger_url == "postgresql+psycopg://envctl@db.internal:5432/envctl?sslmode=require"
    assert settings.ledger_password == "in-url-9f3"
    assert "in-url-9f3" not in repr(settings)
    # The password of its own variable wins over one in the URL.
    both = load(repo=_repo(tmp_path / "b"), env={**env, "ENVCTL_LEDGER_PASSWORD": "own"})
    assert both.ledger_password == "own"
    assert "in-url-9f3" not in both.ledger_url


def test_a_password_in_the_query_string_is_taken_out_too(tmp_path: Path) -> None:
    """libpq reads `?password=`; it must not ride along into hooks, triggers or logs."""
    env = {"ENVCTL_LEDGER_URL": "postgresql+psycopg://envctl@/envctl?host=/cloudsql/p:r:i&password=q-7c1"}
    settings = load(repo=_repo(tmp_path), env=env)
    from sqlalchemy.engine import make_url

    kept = make_url(settings.ledger_url)
    assert (kept.username, kept.database, dict(kept.query)) == (
        "envctl",
        "envctl",
        {"host": "/cloudsql/p:r:i"},
    )
    assert "password" not in settings.ledger_url
    assert settings.ledger_password == "q-7c1"
    assert "q-7c1" not in repr(settings)
    bare = load(
        repo=_repo(tmp_path / "b"), env={"ENVCTL_LEDGER_URL": "postgresql+psycopg:///envctl?password=q-8d2"}
    )
    assert bare.ledger_password == "q-8d2" and "q-8d2" not in bare.ledger_url


@pytest.mark.parametrize("key", ["docker_host", "gcp_build_bucket"])
def test_where_builds_run_comes_only_from_the_environment(tmp_path: Path, key: str) -> None:
    """A pushed pyproject.toml could send the build (and its context) to a host or bucket of its own."""
    repo = _repo(tmp_path)
    (repo / "pyproject.toml").write_text(f'[tool.envctl]\n{key} = "elsewhere"\n')
    with pytest.raises(ConfigError, match=f"'{key}' may only come from the environment"):
        load(repo=repo, env={})


@pytest.mark.parametrize(
    ("key", "value", "variable", "own"),
    [
        (
            "ledger_url",
            "postgresql+psycopg://envctl@attacker.example/envctl",
            "ENVCTL_LEDGER_PASSWORD",
            "postgresql+psycopg://envctl@db.internal/envctl",
        ),
        ("registry", "attacker.example/images", "ENVCTL_REGISTRY_TOKEN", "localhost:5000"),
    ],
)
def test_the_repository_cannot_send_a_secret_of_the_environment_elsewhere(
    tmp_path: Path, key: str, value: str, variable: str, own: str
) -> None:
    repo = _repo(tmp_path, f'{key} = "{value}"\n')
    with pytest.raises(
        ConfigError, match=rf"\[tool.envctl\]: {key} is set by the repository while {variable}"
    ):
        load(repo=repo, env={variable: "s3cret"})
    # The same key from the environment (a trigger's own setting) overrides the repository's.
    settings = load(repo=repo, env={variable: "s3cret", f"ENVCTL_{key.upper()}": own})
    assert getattr(settings, key) == own
    # Without a secret from the environment, the repository's endpoint is only a default.
    assert getattr(load(repo=repo, env={}), key) == value

    result = envctl("validate", cwd=repo, env={variable: "s3cret"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f": {key} is set by the repository" in lines[0], lines
    assert "s3cret" not in result.stderr


def test_token_service_hosts_come_only_from_the_environment(tmp_path: Path) -> None:
    repo = _repo(tmp_path, 'registry_auth_hosts = "attacker.example"\n')
    with pytest.raises(
        ConfigError,
        match=r"'registry_auth_hosts' may only come from the environment \(ENVCTL_REGISTRY_AUTH_HOSTS\)",
    ):
        load(repo=repo, env={})
    settings = load(
        repo=_repo(tmp_path / "b"), env={"ENVCTL_REGISTRY_AUTH_HOSTS": " Auth.Example , b.example,"}
    )
    assert settings.auth_hosts == ("auth.example", "b.example")
    from pipeline.publish.distribution import OciPublisher

    assert OciPublisher.for_settings(settings).registry.auth_hosts == ("auth.example", "b.example")


def test_notify_url_comes_only_from_the_environment_and_stays_out_of_repr(tmp_path: Path) -> None:
    repo = _repo(tmp_path, 'notify_url = "https://evil.example/collect"\n')
    with pytest.raises(ConfigError, match="'notify_url' may only come from the environment"):
        load(repo=repo, env={})
    settings = load(
        repo=_repo(tmp_path / "b"), env={"ENVCTL_NOTIFY_URL": "https://chat.example/hooks/T1/SECRET"}
    )
    assert settings.notify_url == "https://chat.example/hooks/T1/SECRET"
    assert "SECRET" not in repr(settings)


@pytest.mark.parametrize(
    "url", ["ftp://host/x?token=SECRET", "https:///SECRET", "hooks.example/SECRET", "http://h:99999/SECRET"]
)
def test_a_bad_notify_url_is_rejected_without_echoing_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="notify_url is not") as caught:
        load(repo=_repo(tmp_path), env={"ENVCTL_NOTIFY_URL": url})
    assert "SECRET" not in str(caught.value)


def test_notify_command_is_an_argument_list(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    as_json = load(repo=repo, env={"ENVCTL_NOTIFY_COMMAND": '["tee", "-a", "/tmp/a b"]'})
    assert as_json.notify_command == ("tee", "-a", "/tmp/a b")
    split = load(repo=repo, env={"ENVCTL_NOTIFY_COMMAND": "tee -a '/tmp/a b'; rm -rf /"})
    assert split.notify_command == ("tee", "-a", "/tmp/a b;", "rm", "-rf", "/")  # no shell: all arguments
    with pytest.raises(ConfigError, match="notify_command"):
        load(repo=repo, env={"ENVCTL_NOTIFY_COMMAND": '["tee", 3]'})


def test_notify_command_never_comes_from_the_repository(tmp_path: Path) -> None:
    repo = _repo(tmp_path, 'notify_command = ["sh", "-c", "curl evil.example"]\n')
    with pytest.raises(ConfigError, match="'notify_command' may only come from the environment"):
        load(repo=repo, env={})


def test_a_ledger_password_with_a_sqlite_ledger_is_one_line_exit_2(tmp_path: Path) -> None:
    ledger = tmp_path / "state" / "ledger.db"
    env = {"ENVCTL_LEDGER_URL": f"sqlite:///{ledger}", "ENVCTL_LEDGER_PASSWORD": "pw-5e2"}
    result = envctl("status", env=env, cwd=_repo(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "envctl: error: ENVCTL_LEDGER_PASSWORD applies only to a PostgreSQL ledger URL, and the ledger is "
        f"sqlite:///{ledger}; unset it, or set ENVCTL_LEDGER_URL to postgresql+psycopg://USER@HOST/DB"
    ]
    assert "pw-5e2" not in result.stderr + result.stdout and not ledger.exists()


def test_a_stack_shared_through_a_symlink_is_one_stack(tmp_path: Path) -> None:
    # Two checkouts sharing one running stack (a symlinked .envctl/stack) render the same
    # daemon configs, so `stack up` from the second restarts nothing.
    shared = tmp_path / "first" / ".envctl" / "stack"
    shared.mkdir(parents=True)
    (tmp_path / "second" / ".envctl").mkdir(parents=True)
    (tmp_path / "second" / ".envctl" / "stack").symlink_to(shared)
    first = load(repo=tmp_path / "first", env={"ENVCTL_STATE_DIR": str(tmp_path / "first" / ".envctl")})
    second = load(repo=tmp_path / "second", env={"ENVCTL_STATE_DIR": str(tmp_path / "second" / ".envctl")})
    assert second.stack_dir == first.stack_dir == shared.resolve()
