"""Builds cannot reach the registry's write side or the ledger (issue 10, item 2).

Runs against a stack of the test's own (`envctl stack up --skip-base` on a free port,
with its own state folder and Docker client config), never the shared one. A build
runs as envctl runs every build (host network) and tries to PUT production's manifest
over `:staging`, to DELETE production's digest and to open the ledger; every tag and
manifest stays as it was, while envctl's own push and promote still work.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pipeline.build.engine import ContextFile, build, connect, context_tar, push
from pipeline.errors import Unavailable
from pipeline.publish.oci import MANIFEST_TYPES, Registry
from tests import minirepo
from tests.helpers import envctl
from tests.ownstack import Stack, own_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_stack(tmp_path_factory.mktemp("guard")) as private:
        yield private


def snapshot(url: str) -> dict[str, dict[str, str]]:
    """Every repository's tags and the manifest digest each names, read anonymously."""
    catalog = requests.get(f"{url}/v2/_catalog", timeout=10).json()["repositories"]
    state: dict[str, dict[str, str]] = {}
    for repo in catalog:
        tags = requests.get(f"{url}/v2/{repo}/tags/list", timeout=10).json()["tags"] or []
        state[repo] = {}
        for tag in tags:
            head = requests.head(
                f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=10
            )
            assert head.status_code == 200, (repo, tag, head.status_code)
            state[repo][tag] = head.headers["Docker-Content-Digest"]
    return state


def test_reads_are_anonymous_and_writes_need_the_stack_credentials(stack: Stack) -> None:
    credentials = stack.credentials()
    assert credentials.password, "stack up logs the Docker client in"
    saved = json.loads((stack.state / "stack" / "registry-credentials.json").read_text())
    assert saved["password"] == credentials.password
    for private in ("registry-credentials.json", "registry-front.conf"):
        assert (stack.state / "stack" / private).stat().st_mode & 0o077 == 0, private
    assert (stack.docker_config / "config.json").stat().st_mode & 0o077 == 0

    client = connect()
    ref = f"{stack.host}/guard/tiny:1"
    context = context_tar({"Dockerfile": ContextFile(b"FROM scratch\nCOPY m /m\n"), "m": ContextFile(b"m\n")})
    build(client, context=context, dockerfile="Dockerfile", tag=ref, buildargs={}, labels={})
    try:
        with pytest.raises(Unavailable, match="unauthorized"):
            push(client, ref)  # the engine without credentials
        digest = push(client, ref, auth=credentials)

        anonymous = Registry(stack.host)
        manifest = anonymous.manifest("guard/tiny", "1")
        assert manifest is not None and manifest.digest == digest
        with pytest.raises(Unavailable, match="needs credentials"):
            anonymous.put_manifest("guard/tiny", "staging", manifest)
        writes = {
            "PUT": requests.put(
                f"{stack.url}/v2/guard/tiny/manifests/staging", data=manifest.body, timeout=10
            ),
            "DELETE": requests.delete(f"{stack.url}/v2/guard/tiny/manifests/{digest}", timeout=10),
            "POST": requests.post(f"{stack.url}/v2/guard/tiny/blobs/uploads/", timeout=10),
        }
        assert {method: r.status_code for method, r in writes.items()} == dict.fromkeys(writes, 401)
        assert 'Bearer realm="' in writes["PUT"].headers["WWW-Authenticate"]
        wrong = requests.get(f"{stack.url}/token", auth=("envctl", "guess"), timeout=10)
        assert wrong.status_code == 401

        # With the credentials: tags move (deletes too, for `envctl prune`: test_bases_prune.py).
        Registry(stack.host, credentials=credentials).put_manifest("guard/tiny", "staging", manifest)
        assert anonymous.digest_of("guard/tiny", "staging") == digest
        assert anonymous.digest_of("guard/tiny", "1") == digest

        # `docker pull` with no login at all.
        client.images.remove(ref, force=True)
        docker = shutil.which("docker")
        assert docker is not None
        empty = stack.docker_config.parent / "no-login"
        empty.mkdir(exist_ok=True)
        pulled = subprocess.run(
            [docker, "pull", f"{stack.host}/guard/tiny:staging"],
            env={"PATH": "/usr/bin:/bin", "DOCKER_CONFIG": str(empty)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert pulled.returncode == 0, pulled.stderr
    finally:
        for tag in (ref, f"{stack.host}/guard/tiny:staging"):
            with contextlib.suppress(Exception):
                client.images.remove(tag, force=True)


ATTACK = r"""
import json, os, socket, urllib.error, urllib.request

registry, repo, digest = os.environ["REGISTRY"], os.environ["REPO"], os.environ["PRODUCTION"]
accept = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def call(method, path, body=None, headers=None):
    request = urllib.request.Request(
        f"http://{registry}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, b"", ""
    except OSError as e:
        return str(e), b"", ""


found = {}
status, manifest, kind = call("GET", f"/v2/{repo}/manifests/{digest}", headers={"Accept": accept})
found["read"] = status
put = {"Content-Type": kind}
found["put_staging"] = call("PUT", f"/v2/{repo}/manifests/staging", manifest, put)[0]
found["delete_production"] = call("DELETE", f"/v2/{repo}/manifests/{digest}")[0]
anonymous = json.loads(call("GET", "/token")[1] or b"{}").get("token", "")
bearer = {**put, "Authorization": f"Bearer {anonymous}"}
found["put_with_anonymous_token"] = call("PUT", f"/v2/{repo}/manifests/staging", manifest, bearer)[0]
guess = {**put, "Authorization": "Basic ZW52Y3RsOg=="}
found["put_with_guessed_login"] = call("PUT", f"/v2/{repo}/manifests/staging", manifest, guess)[0]
found["socket_visible"] = os.path.exists(os.environ["SOCKET"])
try:
    unix = socket.socket(socket.AF_UNIX)
    unix.connect(os.environ["SOCKET"])
    found["socket_connect"] = "connected"
except OSError as e:
    found["socket_connect"] = type(e).__name__
for name in ("LEDGER", "STACK"):
    path = os.environ[name]
    try:
        with open(path, "rb") as handle:
            found[name.lower()] = f"read {len(handle.read())} bytes"
    except OSError as e:
        found[name.lower()] = type(e).__name__
found["envctl_in_context"] = sorted(os.listdir("/ctx/.envctl")) if os.path.exists("/ctx/.envctl") else None
print(json.dumps(found))
with open("/attack.json", "w") as out:
    json.dump(found, out)
"""


def read_file(client: Any, image: str, path: str) -> bytes:
    """A file of an image, copied out of a container that never starts."""
    container = client.containers.create(image, ["true"], network_mode="none")
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            assert member is not None
            return member.read()
    finally:
        container.remove(force=True)


def test_a_build_cannot_rewrite_or_delete_tags_nor_reach_the_ledger(stack: Stack, tmp_path: Path) -> None:
    mini = minirepo.make(tmp_path)
    env = {"ENVCTL_REGISTRY": stack.host, "DOCKER_CONFIG": str(stack.docker_config)}  # ledger: repo/.envctl
    image = mini.image
    client = connect()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return envctl(*args, cwd=mini.path, env=env)

    def build_head() -> str:
        result = run("build", image, "--rev", "HEAD", "--json", "--quiet")
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["digest"])

    try:
        mini.write(".gitignore", ".envctl/\n")
        sha_a = mini.commit("ignore the state folder")
        digest_a = build_head()
        dockerfile = mini.read("docker/__IMAGE__/Dockerfile")
        mini.write("docker/__IMAGE__/Dockerfile", dockerfile + "RUN echo two > /opt/two\n")
        sha_b = mini.commit("a second version")
        digest_b = build_head()
        for stage, sha in (("production", sha_a), ("staging", sha_b)):
            moved = run("promote", f"{image}.{stage}", "--rev", sha, "--force", "--reason", "setup")
            assert moved.returncode == 0, moved.stderr
        ledger = mini.path / ".envctl" / "ledger.db"
        assert ledger.is_file()
        before = snapshot(stack.url)
        assert before[image]["production"] == digest_a and before[image]["staging"] == digest_b

        # A pushed commit whose build step attacks the registry and the ledger.
        spec = mini.read("environments/__IMAGE__.yaml")
        assert f"  context: docker/{image}\n" in spec
        spec = spec.replace(f"  context: docker/{image}\n", "  context: .\n")  # the whole repository
        arguments = {
            "REGISTRY": stack.url.removeprefix("http://"),
            "REPO": image,
            "PRODUCTION": digest_a,
            "SOCKET": str(stack.state / "stack" / "registry.sock"),
            "LEDGER": str(ledger),
            "STACK": str(stack.state / "stack" / "registry-credentials.json"),
        }
        spec = spec.replace(
            "  args:\n", "  args:\n" + "".join(f"    {k}: '{v}'\n" for k, v in arguments.items())
        )
        mini.write("environments/__IMAGE__.yaml", spec)
        mini.write("docker/__IMAGE__/attack.py", ATTACK)
        mini.write(
            "docker/__IMAGE__/Dockerfile",
            dockerfile.replace("COPY greeting.py /opt/greeting.py\n", "")
            + "".join(f"ARG {k}\n" for k in arguments)
            + "COPY . /ctx\n"
            + f"RUN python3 /ctx/docker/{image}/attack.py\n",
        )
        sha_c = mini.commit("a build step that attacks")
        built = run("build", image, "--rev", "HEAD", "--json")
        assert built.returncode == 0, built.stderr  # envctl's own push works
        digest_c = json.loads(built.stdout)["digest"]
        found = json.loads(read_file(client, f"{stack.host}/{image}:{sha_c}", "/attack.json"))
        assert found == {
            "read": 200,  # reads are open to anyone
            "put_staging": 401,
            "delete_production": 401,
            "put_with_anonymous_token": 401,
            "put_with_guessed_login": 401,
            "socket_visible": False,
            "socket_connect": "FileNotFoundError",
            "ledger": "FileNotFoundError",
            "stack": "FileNotFoundError",
            "envctl_in_context": None,
        }, found

        after = snapshot(stack.url)
        for repo, tags in before.items():
            for tag, digest in tags.items():
                assert after[repo][tag] == digest, f"{repo}:{tag} moved"
        assert set(after[image]) == set(before[image]) | {sha_c}
        for digest in {*before[image].values()}:
            assert Registry(stack.host).manifest(image, digest) is not None, f"{digest} is gone"

        # envctl's own writes still work, and the ledger is as envctl left it.
        moved = run("promote", f"{image}.staging", "--rev", sha_c, "--force", "--reason", "check")
        assert moved.returncode == 0, moved.stderr
        assert Registry(stack.host).digest_of(image, "staging") == digest_c
        assert Registry(stack.host).digest_of(image, "production") == digest_a
        status = {e["stage"]: e for e in json.loads(run("status", image, "--json").stdout)}
        assert status["production"]["digest"] == digest_a and status["production"]["drift"] is None
    finally:
        for tagged in client.images.list(name=f"{stack.host}/{image}"):
            for tag in tagged.tags:
                with contextlib.suppress(Exception):
                    client.images.remove(tag, force=True)
