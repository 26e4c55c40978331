"""What a pushed image holds of the build: no byte of the build's secrets, the base's user.

Each test builds through `envctl build` on the real engine (BuildKit) and reads the
pushed image back from the registry, blob by blob, as anyone who pulls it could.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pipeline import machine
from pipeline.backends import ContextFile
from pipeline.build.docker_builder import build_secrets
from pipeline.build.engine import build, connect, context_tar, push
from pipeline.publish.oci import Registry
from tests import minirepo
from tests.helpers import envctl, login

pytestmark = pytest.mark.integration

REGISTRY = "localhost:5000"
BASE = f"{REGISTRY}/dlc/base-cpu:local"
SHOW = (
    "RUN --mount=type=secret,id=pipconf --mount=type=secret,id=cacert \\\n"
    '    echo "pipconf=$(sha256sum < /run/secrets/pipconf | cut -d" " -f1)" \\\n'
    ' && echo "cacert=$(sha256sum < /run/secrets/cacert | cut -d" " -f1)"\n'
)
DOCKERFILES = {
    # One stage that mounts both secrets.
    "single": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n" + SHOW + "RUN echo built > /opt/built.txt\n",
    # The final stage FROM an earlier one: the earlier stage's layers are pushed too.
    "multi": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS first\n"
    + SHOW
    + "RUN echo built > /opt/built.txt\nFROM first\nRUN cat /opt/built.txt\n",
    # The same without the mounts: pip looks for its settings the ordinary way.
    "multi-plain": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS first\n"
    "RUN python3 -m pip config list > /dev/null\nRUN echo built > /opt/built.txt\n"
    "FROM first\nRUN cat /opt/built.txt\n",
}


@pytest.fixture
def mini(tmp_path: Path) -> Iterator[minirepo.MiniRepo]:
    repo = minirepo.make(tmp_path)
    try:
        yield repo
    finally:
        minirepo.remove_local_images(f"{REGISTRY}/{repo.image}")


def _contains(data: bytes, needles: list[bytes]) -> list[bytes]:
    return [n for n in needles if n in data]


def _layer_holds(blob: bytes, needles: list[bytes]) -> list[bytes]:
    """The needles found in a layer blob, gzip or not, read in chunks (no boundary missed)."""
    found: set[bytes] = set()
    overlap = max(len(n) for n in needles)
    chunks: Iterator[bytes]
    if blob[:2] == b"\x1f\x8b":
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)

        def inflated() -> Iterator[bytes]:
            for start in range(0, len(blob), 1 << 20):
                yield inflate.decompress(blob[start : start + (1 << 20)])
            yield inflate.flush()

        chunks = inflated()
    else:
        chunks = iter([blob])
    carry = b""
    for chunk in chunks:
        window = carry + chunk
        found.update(_contains(window, needles))
        carry = window[-overlap:]
    return sorted(found)


def _pushed_holds(image: str, sha: str, needles: list[bytes]) -> dict[str, list[bytes]]:
    """For the config and every layer of the pushed `image:sha`, the needles it holds."""
    registry = Registry(REGISTRY)
    manifest = registry.manifest(image, sha)
    assert manifest is not None
    data = manifest.json()
    found = {"manifest": _contains(manifest.body, needles)}
    config = registry.blob(image, data["config"]["digest"])
    found["config"] = _contains(config, needles)
    assert data["layers"], "the pushed image has no layers"
    for layer in data["layers"]:
        found[layer["digest"]] = _layer_holds(registry.blob(image, layer["digest"]), needles)
    return {where: hits for where, hits in found.items() if hits}


@pytest.mark.parametrize("case", sorted(DOCKERFILES))
def test_no_secret_byte_in_any_pushed_blob_or_the_history(
    mini: minirepo.MiniRepo, tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = secrets.token_hex(8)
    pip_marker = f"pipmark{mark}.invalid"
    ca_marker = f"camark{mark}"
    bundle = machine.ca_bundle()
    assert bundle is not None
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(bundle.read_bytes() + f"# {ca_marker}\n".encode())
    planted = {"PIP_TRUSTED_HOST": pip_marker, "PIP_CERT": str(ca_file)}
    for key, value in planted.items():
        monkeypatch.setenv(key, value)
    pip_conf = build_secrets()["pipconf"].decode()
    assert pip_marker in pip_conf  # the settings a build gets carry the marker
    # A fresh first step: BuildKit's cache ignores secrets, so a cached step would not run.
    fresh = f"RUN echo fresh {secrets.token_hex(8)}\n"
    mini.write("docker/__IMAGE__/Dockerfile", DOCKERFILES[case].replace("\nRUN ", "\n" + fresh + "RUN ", 1))
    sha = mini.commit(f"{case} Dockerfile")

    result = envctl(
        "build",
        mini.image,
        "--rev",
        sha,
        "--json",
        cwd=mini.path,
        env={**mini.env(tmp_path / "st"), **planted},
    )

    assert result.returncode == 0, result.stderr
    if case != "multi-plain":
        # The RUN step that mounts the secrets sees exactly the planted settings.
        assert f"pipconf={hashlib.sha256(pip_conf.encode()).hexdigest()}" in result.stderr
        assert f"cacert={hashlib.sha256(ca_file.read_bytes()).hexdigest()}" in result.stderr
    needles = [pip_marker.encode(), ca_marker.encode()]
    assert _pushed_holds(mini.image, sha, needles) == {}
    history = subprocess.run(
        ["/usr/bin/docker", "history", "--no-trunc", f"{REGISTRY}/{mini.image}:{sha}"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert b"RUN" in history or b"/bin/sh" in history
    assert _contains(history, needles) == []
    assert ca_marker not in result.stderr and pip_marker not in result.stderr


def test_the_scan_finds_a_planted_marker(mini: minirepo.MiniRepo, tmp_path: Path) -> None:
    """The blob scan above can fail: a marker COPYed into a layer is found there."""
    mark = f"copied{secrets.token_hex(8)}"
    mini.write("docker/__IMAGE__/marker.txt", mark + "\n")
    mini.write("docker/__IMAGE__/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY marker.txt /opt/\n")
    sha = mini.commit("a marker in a layer")
    result = envctl(
        "build", mini.image, "--rev", sha, "--quiet", cwd=mini.path, env=mini.env(tmp_path / "st")
    )
    assert result.returncode == 0, result.stderr
    found = _pushed_holds(mini.image, sha, [mark.encode()])
    assert len(found) == 1 and next(iter(found)).startswith("sha256:")


@pytest.fixture
def user_base() -> Iterator[str]:
    """A base image whose own user is 1000 (FROM the local base), pushed under a tag of its own."""
    client = connect()
    ref = f"{REGISTRY}/envctl-test/base-user-{secrets.token_hex(4)}:1"
    context = context_tar({"Dockerfile": ContextFile(f"FROM {BASE}\nUSER 1000\n".encode())})
    try:
        build(client, context=context, dockerfile="Dockerfile", tag=ref, buildargs={}, labels={})
        digest = push(client, ref, auth=login())
        yield ref
    finally:
        with contextlib.suppress(Exception):
            client.images.remove(ref, force=True)
        with contextlib.suppress(Exception):  # only where the registry allows deletes
            name = ref.removeprefix(f"{REGISTRY}/").rsplit(":", 1)[0]
            credentials = login()
            requests.delete(
                f"http://{REGISTRY}/v2/{name}/manifests/{digest}",
                auth=(credentials.username, credentials.password),
                timeout=10,
            )


def test_the_image_keeps_the_base_images_user(
    mini: minirepo.MiniRepo, tmp_path: Path, user_base: str
) -> None:
    spec = mini.read("environments/__IMAGE__.yaml").replace(BASE, user_base)
    mini.write("environments/__IMAGE__.yaml", spec)
    mini.write("docker/__IMAGE__/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY greeting.py /tmp/\n")
    sha = mini.commit("a base whose user is 1000")

    result = envctl(
        "build", mini.image, "--rev", sha, "--json", "--quiet", cwd=mini.path, env=mini.env(tmp_path / "st")
    )

    assert result.returncode == 0, result.stderr
    registry = Registry(REGISTRY)
    manifest = registry.manifest(mini.image, sha)
    assert manifest is not None
    config = json.loads(registry.blob(mini.image, manifest.json()["config"]["digest"]))
    assert config["config"].get("User") == "1000"
