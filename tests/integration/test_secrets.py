"""The ledger password appears nowhere: not in a URL, a log, the hook, an error or a run's records.

A real push runs the staging pipeline through the hook on the real stack, with the
ledger on PostgreSQL and its password only in ENVCTL_LEDGER_PASSWORD at install time;
the push itself runs without it (the hook reads its 0600 file). Then every output,
file and ledger row the run left is searched for the password.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from pipeline.build.engine import connect
from tests import minirepo
from tests.helpers import cli_env, envctl

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.pg"]


def _outputs(*results: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(r.stdout + r.stderr for r in results)


def _files(*folders: Path) -> Iterator[tuple[Path, bytes]]:
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                yield path, path.read_bytes()


def _ledger_rows(owner_url: str) -> str:
    with psycopg.connect(make_url(owner_url).set(drivername="postgresql").render_as_string(False)) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(repr(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)


def test_the_ledger_password_appears_nowhere(tmp_path: Path, postgres_url: str) -> None:
    from tests.pg import PASSWORD  # here: tests.pg is a plugin, imported by pytest first

    url = make_url(postgres_url)._replace(password=None).render_as_string()
    assert PASSWORD not in url
    mini = minirepo.make(tmp_path)
    bare = tmp_path / "images.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "staging", str(bare)], check=True)
    minirepo.git(mini.path, "remote", "add", "origin", str(bare))
    env = {
        "ENVCTL_STATE_DIR": str(tmp_path / "state"),
        "ENVCTL_ACTOR": "tester",
        "ENVCTL_LEDGER_URL": url,
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
    }
    with_password = {**env, "ENVCTL_LEDGER_PASSWORD": PASSWORD}
    try:
        installed = envctl("hooks", "install", str(bare), "--wait", cwd=mini.path, env=with_password)
        assert installed.returncode == 0, installed.stderr
        hook = (bare / "hooks" / "post-receive").read_text()
        assert PASSWORD not in hook and "--secrets-file" in hook
        assert PASSWORD not in _outputs(installed)
        pushed = subprocess.run(
            ["git", "-C", str(mini.path), "push", "origin", "staging"],
            capture_output=True,
            text=True,
            timeout=600,
            env=cli_env(env),  # no password: the hook finds it in its own file
            check=False,
        )
        assert pushed.returncode == 0, pushed.stderr
        assert f"{mini.image}  promoted  staging :=" in pushed.stderr, pushed.stderr

        debug = envctl("--debug", "history", mini.image, "--json", cwd=mini.path, env=with_password)
        assert debug.returncode == 0, debug.stderr
        assert f"opening the ledger at {url}" in debug.stderr  # the URL the debug log shows

        wrong = secrets.token_hex(12)
        refused = envctl("status", cwd=mini.path, env={**env, "ENVCTL_LEDGER_PASSWORD": wrong})
        assert refused.returncode == 3
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and "password authentication failed" in line, line
        assert url.split("?")[0] in line or make_url(url).host in line  # it names where, not how
        refused_debug = envctl(
            "--debug", "status", cwd=mini.path, env={**env, "ENVCTL_LEDGER_PASSWORD": wrong}
        )
        assert refused_debug.returncode != 0
        assert wrong not in _outputs(refused, refused_debug)

        everything = _outputs(installed, pushed, debug, refused, refused_debug)
        assert PASSWORD not in everything
        seen = [p for p, data in _files(tmp_path / "state", bare, mini.path) if PASSWORD.encode() in data]
        assert seen == []
        artifacts = list((tmp_path / "state" / "runs").rglob("summary.json"))
        assert artifacts, "the run left no artifacts to search"
        rows = _ledger_rows(postgres_url)
        assert mini.image in rows and PASSWORD not in rows
        assert (
            os.stat(next((tmp_path / "home" / ".config" / "envctl" / "hooks").iterdir())).st_mode & 0o077 == 0
        )
    finally:
        client = connect()
        for image in client.images.list(name=f"localhost:5000/{mini.image}"):
            for tag in image.tags:
                client.images.remove(tag, force=True)
