"""A real PostgreSQL for the tests: installed and started when missing, a fresh database per test.

On a fresh Debian machine as root (CI) this installs Debian's postgresql, makes it
listen on 127.0.0.1 only, starts the cluster and creates a test role; no manual step.
Elsewhere, without PostgreSQL and without root, the PostgreSQL tests skip, and a skip
fails the session unless ENVCTL_TEST_ALLOW_SKIP allows it (tests/skips.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROLE = "envctl_test"
PASSWORD = "envctl-test-only"


def _run(*args: str, input_text: str | None = None, timeout: float = 900) -> str:
    result = subprocess.run(
        list(args), input=input_text, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return result.stdout


def _install() -> None:
    if shutil.which("pg_ctlcluster"):
        return
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        pytest.skip("PostgreSQL is not installed and we are not root on Debian to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, timeout=900)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, check=True, timeout=900)
    except subprocess.CalledProcessError:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, timeout=900)
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, timeout=900)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, check=True, timeout=900)


def _cluster() -> tuple[str, str, int, str]:
    """(version, name, port, status) of the first cluster, creating one when there is none."""
    lines = [line.split() for line in _run("pg_lsclusters", "-h").splitlines() if line.strip()]
    if not lines:
        versions = sorted(p.name for p in Path("/usr/lib/postgresql").iterdir())
        _run("pg_createcluster", versions[-1], "main")
        lines = [line.split() for line in _run("pg_lsclusters", "-h").splitlines() if line.strip()]
    version, name, port, status = lines[0][:4]
    return version, name, int(port), status


def _ensure_running() -> int:
    version, name, port, status = _cluster()
    conf = Path(f"/etc/postgresql/{version}/{name}/conf.d")
    conf.mkdir(parents=True, exist_ok=True)
    wanted = "listen_addresses = '127.0.0.1'\n"
    target = conf / "envctl-tests.conf"
    changed = not target.exists() or target.read_text() != wanted
    if changed:
        target.write_text(wanted)
    if status == "online" and changed:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart")
    elif status != "online":
        _run("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start")
    return port


def _psql(sql: str, database: str = "postgres") -> None:
    _run("su", "postgres", "-c", f"psql -q -v ON_ERROR_STOP=1 -d {database}", input_text=sql, timeout=60)


def superuser_sql(url: str, sql: str) -> None:
    """Run `sql` as the superuser `postgres` in the database of `url`."""
    _psql(sql, database=url.rsplit("/", 1)[1].split("?")[0])


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A URL of a role that may create databases, on a PostgreSQL listening on 127.0.0.1."""
    _install()
    port = _ensure_running()
    _psql(
        f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
            CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}';
          END IF;
        END $$;
        """
    )
    url = f"postgresql+psycopg://{ROLE}:{PASSWORD}@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    import psycopg

    while True:
        try:
            psycopg.connect(url.replace("+psycopg", ""), connect_timeout=3).close()
            return url
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    import psycopg

    name = f"envctl_{secrets.token_hex(6)}"
    admin = postgres_admin_url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def login_role(postgres_admin_url: str) -> Iterator[Callable[..., tuple[str, str]]]:
    """Make LOGIN roles with a random password, members of the given groups: (name, password).

    The roles own nothing; they are dropped after the test.
    """
    made: list[str] = []

    def make(*groups: str) -> tuple[str, str]:
        name, password = f"envctl_login_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        member = f" IN ROLE {', '.join(groups)}" if groups else ""
        _psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'{member};")
        made.append(name)
        return name, password

    yield make
    for name in made:
        _psql(f"DROP ROLE IF EXISTS {name};")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ledger URL of one test: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
