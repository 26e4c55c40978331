"""The local registry's write credentials: made once, kept private, found by envctl in any repository."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pipeline import settings as settings_module
from pipeline.publish import login


def test_keys_are_made_once_and_kept_private(tmp_path: Path) -> None:
    first = login.ensure(tmp_path, "localhost:5000")
    again = login.ensure(tmp_path, "localhost:5000")
    assert first == again
    assert len(first.credentials.password) >= 40 and len(first.write_token) >= 40
    assert first.credentials.password != first.write_token
    assert (tmp_path / login.FILE).stat().st_mode & 0o777 == 0o600
    assert login.read(tmp_path, "localhost:5001") is None  # another registry's keys are not these


def test_docker_login_adds_an_entry_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"auths": {"other:1": {"auth": "eDp5"}}, "psFormat": "table"}))
    keys = login.ensure(tmp_path / "stack", "localhost:5000")
    assert login.docker_login("localhost:5000", keys.credentials) is True
    assert login.docker_login("localhost:5000", keys.credentials) is False  # a second time changes nothing
    written = json.loads(config.read_text())
    assert written["psFormat"] == "table" and written["auths"]["other:1"] == {"auth": "eDp5"}
    pair = base64.b64decode(written["auths"]["localhost:5000"]["auth"]).decode()
    assert pair == f"envctl:{keys.credentials.password}"
    assert config.stat().st_mode & 0o777 == 0o600


def test_envctl_finds_the_credentials_from_any_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    stack = settings_module.load(repo=tmp_path / "main", env={})
    keys = login.ensure(stack.stack_dir, stack.registry)
    elsewhere = settings_module.load(repo=tmp_path / "elsewhere", env={})
    assert login.credentials(elsewhere, "localhost:5000").password == ""
    login.docker_login(stack.registry, keys.credentials)
    assert login.credentials(stack, "localhost:5000") == keys.credentials
    assert login.credentials(elsewhere, "localhost:5000") == keys.credentials
