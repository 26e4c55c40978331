"""The CLI's start: `--help` lists every command from its table and loads none of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pipeline.cli.main import COMMANDS, LazyGroup, cli
from tests.helpers import ROOT, cli_env, envctl

HEAVY = ("docker", "sqlalchemy", "git", "google", "requests", "yaml", "pydantic")


def test_help_lists_every_command_with_its_summary() -> None:
    result = envctl("--help")
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("Commands:", 1)[1]
    for name, (_, summary) in COMMANDS.items():
        assert name in listed
        assert summary.split()[0] in listed


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_table_entry_loads_the_command_of_that_name(name: str) -> None:
    assert isinstance(cli, LazyGroup)
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command)
    assert command.name == name


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, json\n"
        "before = set(sys.modules)  # what the interpreter's site (.pth files) loaded\n"
        "from pipeline.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - before)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_unknown_command_is_bad_input() -> None:
    result = envctl("promot")
    assert result.returncode == 2
    assert "No such command 'promot'" in result.stderr


def test_bases_runs_without_the_pipeline_command_or_docker(tmp_path: Path) -> None:
    """`envctl bases` reads specs, the ledger and the registry: no pipeline module, no Docker SDK."""
    from tests import minirepo

    mini = minirepo.make(tmp_path / "repo")
    code = (
        "import sys, json\n"
        "from pipeline.cli.main import main\n"
        "try:\n"
        f"    main(['bases', '--json', '--repo', {str(mini.path)!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in {'docker', 'pipeline.cli.pipeline'})),"
        " file=sys.stderr)\n"
    )
    env = {**cli_env({"ENVCTL_STATE_DIR": str(tmp_path / "state")})}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert json.loads(result.stderr.strip().splitlines()[-1]) == [], result.stderr


def test_status_of_a_signed_ledger_reads_it_and_the_tags_without_sqlalchemy_or_requests(
    tmp_path: Path,
) -> None:
    """`status` at scale: SQLite ledger and loopback registry tags through the standard library."""
    import hashlib
    import threading
    from dataclasses import replace
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline.ledger import signoffs
    from pipeline.ledger.db import Ledger
    from pipeline.ledger.pointers import Who, move, read
    from tests.ledgerfacts import numbered_version

    body = b'{"schemaVersion": 2, "layers": []}'
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the registry answers

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            found = self.path in {"/v2/", "/v2/a.one/manifests/staging"}
            data = body if found else b"{}"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    (tmp_path / "environments").mkdir()
    ledger = Ledger.open(f"sqlite:///{tmp_path / '.envctl' / 'ledger.db'}")
    for n, image in enumerate(["a.one", "b.two"], 1):
        version = ledger.record_version(
            replace(numbered_version(image, n), digest=digest, image_ref=f"127.0.0.1:1/{image}@{digest}")
        )
        with ledger.transaction() as conn:
            move(conn, read(conn, image, "staging"), version.sha, digest, "promote", Who(actor="t"))
    signoffs.record(ledger, image="a.one", sha=f"{1:040d}", digest=digest, actor="Ann", reason=None)
    ledger.engine.dispose()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "from pipeline.cli.main import main\n"
        "try:\n"
        "    main(['status', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - before)), file=sys.stderr)\n"
    )
    env = cli_env({"ENVCTL_REGISTRY": f"127.0.0.1:{server.server_address[1]}", "PYTHONPATH": str(ROOT)})
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        server.shutdown()
        server.server_close()
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    found = {row["environment"]: row for row in json.loads(result.stdout)}
    assert set(found) == {"a.one.staging", "b.two.staging"}
    assert (found["a.one.staging"]["tag_digest"], found["a.one.staging"]["drift"]) == (digest, None)
    assert found["a.one.staging"]["signoffs"] == ["Ann"]
    assert (found["b.two.staging"]["drift"], found["b.two.staging"]["signoffs"]) == ("missing", [])
    assert "/v2/b.two/manifests/staging" in seen


def test_promote_and_rollback_of_a_sqlite_ledger_load_no_sqlalchemy_gitpython_or_requests(
    tmp_path: Path,
) -> None:
    """`promote`: the ledger through sqlite3 (`LiteLedger`), the spec at the commit through the
    git program, the retag through http.client; `rollback` to the same version, likewise."""
    import hashlib
    import threading
    import uuid
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline.ledger.db import Ledger, TestRun, Version, now, record_test_run

    body = b'{"schemaVersion": 2, "layers": []}'
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    put: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Docker-Content-Digest", digest)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            found = self.path == "/v2/" or self.path.startswith(
                ("/v2/a.one/manifests/sha256:", "/v2/a.one/manifests/0")
            )
            self._answer(
                200 if found or self.path in put else 404, body if found or self.path in put else b"{}"
            )

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_PUT(self) -> None:
            put[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(201, b"")

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "one"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=repo, check=True
        )
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.open(url)
    ledger.record_version(
        Version(
            image="a.one",
            sha=sha,
            tree="0" * 40,
            inputs_key="k",
            build_key="b",
            digest=digest,
            image_ref="",
            size=1,
            reused_from=None,
            labels={},
            sbom={},
            created_at=now(),
        )
    )
    record_test_run(
        ledger,
        TestRun(
            run_id=uuid.uuid4().hex,
            image="a.one",
            sha=sha,
            digest=digest,
            passed=True,
            summary={},
            artifacts="",
            started_at=now(),
            finished_at=now(),
        ),
    )
    ledger.engine.dispose()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "from pipeline.cli.main import main\n"
        "try:\n"
        f"    main(['promote', 'a.one.production', '--rev', {sha!r}])\n"
        "except SystemExit as e:\n"
        "    print('EXITED', e.code, file=sys.stderr)\n"
        "try:\n"
        f"    main(['rollback', 'a.one', '--rev', {sha[:12]!r}])\n"
        "except SystemExit as e:\n"
        "    print('EXITED', e.code, file=sys.stderr)\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - before)), file=sys.stderr)\n"
    )
    env = cli_env(
        {
            "ENVCTL_REGISTRY": f"127.0.0.1:{server.server_address[1]}",
            "PYTHONPATH": str(ROOT),
            "ENVCTL_LEDGER_URL": url,
            "ENVCTL_STATE_DIR": str(tmp_path / "state"),
            "ENVCTL_ACTOR": "t",
        }
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "EXITED" not in result.stderr.replace("EXITED 0", ""), result.stderr
    assert "a.one.production: (none) -> " in result.stderr, result.stderr
    assert "a.one: nothing to move" in result.stderr, result.stderr  # the rollback: already there
    assert put == {"/v2/a.one/manifests/production": body}, result.stderr
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert not loaded & {"git", "requests", "docker", "google", "sqlalchemy", "pydantic"}, sorted(loaded)
    moved = Ledger.open(url).history("a.one", "production")  # what sqlite3 wrote, read through SQLAlchemy
    assert [(e.action, e.to_sha, e.to_digest, e.actor) for e in moved] == [("promote", sha, digest, "t")]
