"""Live progress: `envctl build` and `envctl test` under a real pseudo-terminal, and without one.

On a terminal the status line is rewritten with a carriage return (build step, layers
and bytes of the push with the rate, notebooks done of all with the running one); on a
pipe, or with CI=true, or with --no-progress, stderr holds plain lines only.
"""

from __future__ import annotations

import os
import pty
import re
import secrets
import select
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pipeline.build.engine import connect
from pipeline.ledger.db import Ledger, Version, now
from tests import minirepo
from tests.helpers import BASE_IMAGE, DATA, ENVCTL, ROOT, cli_env, envctl

pytestmark = pytest.mark.integration

BASE = "localhost:5000/dlc/base-cpu:local"
CR_UPDATE = re.compile(r"\r[^\r\n]*\x1b\[K")


def under_pty(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600
) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); exit code, stdout, stderr."""
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [*ENVCTL, *args],
        cwd=cwd,
        env=cli_env({**env, "COLUMNS": "200"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    seen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif child.poll() is not None:
                break
        code = child.wait(timeout=max(1.0, deadline - time.monotonic()))
        out = child.stdout.read().decode() if child.stdout else ""
    finally:
        os.close(leader)
        if child.poll() is None:
            child.kill()
        if child.stdout:
            child.stdout.close()
    return code, out, seen.decode(errors="replace")


def plain_only(stderr: str) -> None:
    assert "\r" not in stderr
    assert "\x1b" not in stderr


def base_ref() -> str:
    client = connect()
    try:
        digests = client.images.get(BASE).attrs.get("RepoDigests", [])
    finally:
        client.close()
    return next(str(d) for d in digests if str(d).startswith("localhost:5000/"))


def notebook_world(tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    """A repository whose version is the base image, with two notebooks of 2 s each."""
    image = f"test.progress-{secrets.token_hex(4)}"
    repo = tmp_path / "repo"
    (repo / "environments").mkdir(parents=True)
    (repo / "environments" / f"{image}.yaml").write_text(
        f"image: {image}\n"
        f"build:\n  dockerfile: docker/{image}/Dockerfile\n  context: docker/{image}\n"
        f"  base:\n    local: {BASE}\n    gcp: example.invalid/base:1\n"
        f"tests:\n  notebooks: [test-notebooks/{image}/*.ipynb]\n  timeout: 120\n"
        "  resources:\n    memory: 512m\n    cpus: 1\n"
    )
    (repo / "docker" / image).mkdir(parents=True)
    (repo / "docker" / image / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (repo / "test-notebooks" / image).mkdir(parents=True)
    for name in ("first", "second"):
        shutil.copyfile(
            DATA / "notebooks" / "sleeps.ipynb", repo / "test-notebooks" / image / f"{name}.ipynb"
        )
    minirepo.git(repo, "init", "-q", "-b", "staging")
    minirepo.git(repo, "config", "user.email", "owner@example.com")
    minirepo.git(repo, "config", "user.name", "Image Owner")
    minirepo.git(repo, "add", "-A")
    minirepo.git(repo, "commit", "-q", "-m", "notebooks")
    sha = minirepo.git(repo, "rev-parse", "HEAD")
    state = tmp_path / "state"
    state.mkdir()
    env = {
        "ENVCTL_LEDGER_URL": f"sqlite:///{state / 'ledger.db'}",
        "ENVCTL_ARTIFACTS_DIR": str(state / "runs"),
    }
    ref = base_ref()
    Ledger.open(env["ENVCTL_LEDGER_URL"]).record_version(
        Version(
            image=image,
            sha=sha,
            tree=minirepo.git(repo, "rev-parse", "HEAD^{tree}"),
            inputs_key="progress",
            build_key="progress",
            digest=ref.split("@")[1],
            image_ref=ref,
            size=None,
            reused_from=None,
            labels={},
            sbom={},
            created_at=now(),
        )
    )
    return repo, image, env


def test_test_notebooks_n_of_m_on_a_terminal_plain_lines_elsewhere(tmp_path: Path) -> None:
    repo, image, env = notebook_world(tmp_path)
    code, _, stderr = under_pty(["test", image, "--rev", "staging", "--jobs", "1"], cwd=repo, env=env)
    assert code == 0, stderr
    updates = [u.strip("\r").removesuffix("\x1b[K") for u in CR_UPDATE.findall(stderr)]
    assert any(
        re.search(rf"testing {image}: 0 of 2 done, 0:\d\d elapsed; running first\.ipynb", u) for u in updates
    )
    assert any(re.search(r"1 of 2 done, 0:\d\d elapsed; running second\.ipynb 0:\d\d", u) for u in updates)
    # the elapsed time ticks while a notebook runs: more than one distinct update per notebook
    assert len({u for u in updates if "running first.ipynb" in u}) >= 2
    # results are printed above the status line, which is erased at the end
    assert re.search(r"passed\s+test-notebooks/\S+/first\.ipynb", stderr)

    plain = envctl("test", image, "--rev", "staging", "--jobs", "1", cwd=repo, env=env)
    assert plain.returncode == 0, plain.stderr
    plain_only(plain.stderr)
    assert re.search(r"passed\s+test-notebooks/\S+/second\.ipynb", plain.stderr)
    assert "of 2 done" not in plain.stderr

    # a terminal with CI=true, or --no-progress, gets plain lines too
    for extra, flags in (({"CI": "true"}, []), ({}, ["--no-progress"])):
        code, _, stderr = under_pty(
            [*flags, "test", image, "--rev", "staging", "--jobs", "2"], cwd=repo, env={**env, **extra}
        )
        assert code == 0, stderr
        assert "of 2 done" not in stderr
        assert "\x1b[K" not in stderr
        assert "\r" not in stderr.replace("\r\n", "\n")  # the terminal's own line endings aside


def test_build_steps_and_push_bytes_on_a_terminal_plain_lines_elsewhere(tmp_path: Path) -> None:
    repos = []
    try:
        for name in ("tty", "plain"):
            repo = minirepo.make(tmp_path / name)
            # a layer of its own, so the push sends bytes
            repo.write(
                "docker/__IMAGE__/Dockerfile",
                repo.read("docker/__IMAGE__/Dockerfile")
                + f"RUN head -c 3000000 /dev/urandom > /opt/blob && echo {secrets.token_hex(4)}\n",
            )
            repo.commit("a layer of random bytes")
            repos.append(repo)
        tty, plain = repos

        code, out, stderr = under_pty(
            ["build", tty.image, "--rev", "staging"], cwd=tty.path, env=tty.env(tmp_path / "tty-state")
        )
        assert code == 0, stderr
        updates = [u.strip("\r").removesuffix("\x1b[K") for u in CR_UPDATE.findall(stderr)]
        assert any(re.search(r"\[\d/\d\] RUN head -c 3000000", u) for u in updates), updates[:20]
        pushes = [u for u in updates if u.strip().startswith(f"pushing localhost:5000/{tty.image}:")]
        assert pushes, updates[-20:]
        assert any(
            re.search(r"\d+ of \d+ layers, [\d.]+ (kB|MB) of [\d.]+ (kB|MB), [\d.]+ \S+/s", p) for p in pushes
        )
        assert re.search(r"pushed \d+ layer\(s\) \(\d+ already there\), [\d.]+ (kB|MB) in [\d.]+ s", stderr)
        assert out.strip().startswith("sha256:")

        result = envctl(
            "build", plain.image, "--rev", "staging", cwd=plain.path, env=plain.env(tmp_path / "p-state")
        )
        assert result.returncode == 0, result.stderr
        plain_only(result.stderr)
        assert re.search(r"^  #\d+ \[\d/\d\] RUN head -c 3000000", result.stderr, re.M)  # every BuildKit line
        assert re.search(
            r"^  pushed \d+ layer\(s\) \(\d+ already there\), [\d.]+ (kB|MB) in", result.stderr, re.M
        )
        assert " layers, " not in result.stderr
    finally:
        for repo in repos:
            minirepo.remove_local_images(f"localhost:5000/{repo.image}")


def test_help_names_no_progress() -> None:
    result = subprocess.run(
        [*ENVCTL, "--help"], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "--no-progress" in result.stdout


def test_a_failed_push_prints_no_pushed_summary(capsys: pytest.CaptureFixture[str]) -> None:
    import http.server
    import threading

    import docker
    from pipeline.build.engine import push
    from pipeline.errors import Unavailable

    class Refusing(http.server.BaseHTTPRequestHandler):
        """A registry that answers /v2/ and denies every upload (after the layers are listed)."""

        def answer(self) -> None:
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'{"errors": [{"code": "DENIED", "message": "uploads refused"}]}'
            self.send_response(404 if self.command == "HEAD" else 403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = docker.from_env()
    ref = f"127.0.0.1:{server.server_address[1]}/envctl-test/nopush:{uuid.uuid4().hex[:8]}"
    client.images.get(BASE_IMAGE).tag(ref)
    try:
        with pytest.raises(Unavailable, match=r"push of .* failed"):
            push(client, ref)
    finally:
        client.images.remove(ref)
        client.close()
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "pushed" not in err, err
