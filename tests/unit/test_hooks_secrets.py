"""`envctl hooks install` writes no secret into the hook; the hook reads them from a 0600 file."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import UsageError
from pipeline.pipelines import hooks
from tests.helpers import envctl

PASSWORD = "ledger-pw-7d41c9"
TOKEN = "registry-token-5e02aa"


def _bare(tmp_path: Path) -> Path:
    bare = tmp_path / "images.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    return bare


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own ~/.config, for envctl here and in the child processes."""
    home = tmp_path / "home" / ".config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
        "ENVCTL_STATE_DIR": str(tmp_path / "state"),
        "ENVCTL_LEDGER_URL": f"postgresql+psycopg://envctl:{PASSWORD}@127.0.0.1:5432/envctl",
        "ENVCTL_REGISTRY_TOKEN": TOKEN,
    }


def _run_hook(hook: Path, env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENVCTL_")}
    return subprocess.run(
        [str(hook)],
        input=stdin,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_hook_holds_no_secret_and_names_a_0600_file_outside_the_repositories(tmp_path: Path) -> None:
    bare = _bare(tmp_path)
    installed = envctl("hooks", "install", str(bare), cwd=tmp_path, env=_env(tmp_path))
    assert installed.returncode == 0, installed.stderr
    assert PASSWORD not in installed.stdout + installed.stderr and TOKEN not in installed.stderr

    hook = bare / "hooks" / "post-receive"
    text = hook.read_text()
    assert PASSWORD not in text and TOKEN not in text
    assert "ENVCTL_LEDGER_URL=postgresql+psycopg://envctl@127.0.0.1:5432/envctl;" in text
    store = hooks.secrets_file(bare.resolve())
    assert store.is_relative_to(tmp_path / "home" / ".config" / "envctl")
    assert f"--secrets-file {store}" in text
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert PASSWORD in store.read_text() and TOKEN in store.read_text()

    # The hook runs with them (no pipeline for this ref: nothing else is needed).
    ran = _run_hook(hook, {"XDG_CONFIG_HOME": "/nonexistent"}, f"{'0' * 40} {'1' * 40} refs/heads/feature\n")
    assert ran.returncode == 0, ran.stderr
    assert "no pipeline for refs/heads/feature" in ran.stderr

    # A file that others may read is refused, with one line, before anything runs.
    store.chmod(0o644)
    ran = _run_hook(hook, {}, f"{'0' * 40} {'1' * 40} refs/heads/staging\n")
    assert ran.returncode == 2
    assert ran.stderr.strip().splitlines() == [
        f"envctl: error: the hook's secrets file {store} is open to others (mode 644); "
        f"`chmod 600 {store}` and make it yours"
    ]
    store.unlink()
    ran = _run_hook(hook, {}, f"{'0' * 40} {'1' * 40} refs/heads/staging\n")
    assert ran.returncode == 2 and "secrets file" in ran.stderr and "missing" in ran.stderr


def test_a_reinstall_without_secrets_removes_the_file(tmp_path: Path) -> None:
    bare = _bare(tmp_path)
    env = _env(tmp_path)
    assert envctl("hooks", "install", str(bare), cwd=tmp_path, env=env).returncode == 0
    store = hooks.secrets_file(bare.resolve())
    assert store.exists()
    del env["ENVCTL_REGISTRY_TOKEN"]
    env["ENVCTL_LEDGER_URL"] = "sqlite:////tmp/ledger.db"
    assert envctl("hooks", "install", str(bare), cwd=tmp_path, env=env).returncode == 0
    assert not store.exists()
    assert "--secrets-file" not in (bare / "hooks" / "post-receive").read_text()


def test_the_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "secrets.json"
    hooks.write_secrets(store, {"ENVCTL_LEDGER_PASSWORD": "from-file", "ENVCTL_REGISTRY_TOKEN": "file-token"})
    monkeypatch.setenv("ENVCTL_LEDGER_PASSWORD", "from-env")
    # set first, so that monkeypatch records the variable and removes what load_secrets sets
    monkeypatch.setenv("ENVCTL_REGISTRY_TOKEN", "")
    monkeypatch.delenv("ENVCTL_REGISTRY_TOKEN")
    hooks.load_secrets(store)
    assert os.environ["ENVCTL_LEDGER_PASSWORD"] == "from-env"
    assert os.environ["ENVCTL_REGISTRY_TOKEN"] == "file-token"


def test_the_secrets_file_is_never_placed_inside_a_repository(tmp_path: Path) -> None:
    bare = _bare(tmp_path)
    env = {**_env(tmp_path), "XDG_CONFIG_HOME": str(bare / "config")}
    result = envctl("hooks", "install", str(bare), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "would be inside the repository" in result.stderr
    assert not (bare / "hooks" / "post-receive").exists()
    with pytest.raises(UsageError):
        hooks.load_secrets(tmp_path / "absent.json")


def test_the_hook_carries_the_notify_command_and_keeps_the_webhook_in_the_secrets_file(
    tmp_path: Path,
) -> None:
    bare = _bare(tmp_path)
    webhook = "https://chat.example/hooks/T1/B2/webhook-tok3n"
    env = {
        **_env(tmp_path),
        "ENVCTL_NOTIFY_URL": webhook,
        "ENVCTL_NOTIFY_COMMAND": "logger -t 'envctl events'",
    }
    installed = envctl("hooks", "install", str(bare), cwd=tmp_path, env=env)
    assert installed.returncode == 0, installed.stderr
    text = (bare / "hooks" / "post-receive").read_text()
    assert "webhook-tok3n" not in text
    assert (
        """ENVCTL_NOTIFY_COMMAND='["logger", "-t", "envctl events"]'; export ENVCTL_NOTIFY_COMMAND""" in text
    )
    assert webhook in hooks.secrets_file(bare.resolve()).read_text()


def test_logs_show_a_webhook_without_its_path_query_or_user() -> None:
    from pipeline.notify import shown_url

    assert shown_url("https://chat.example/hooks/T1/SECRET?token=SECRET") == "https://chat.example/…"
    assert shown_url("http://user:SECRET@127.0.0.1:8080/x") == "http://127.0.0.1:8080/…"
    assert shown_url("https://chat.example") == "https://chat.example"
