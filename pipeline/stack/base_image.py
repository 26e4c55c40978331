"""The local stand-in for the Deep Learning Containers base image.

debootstrap makes a Debian root file system (mirror from this machine's apt sources),
the Docker Engine imports it, and docker/base/Dockerfile moves Debian's Python into a
prefix of its own at /opt/conda (as Deep Learning Containers keep it) with JupyterLab,
ipykernel, papermill and nbconvert, and the Workbench user jupyter. The result is labelled with a
hash of its inputs and pushed; `stack up` skips all of it when the registry already
holds an image with that hash.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from pipeline import __version__, machine, output
from pipeline.backends import ContextFile
from pipeline.build.engine import build, connect, context_tar, push
from pipeline.errors import Unavailable
from pipeline.proc import run, which
from pipeline.publish import login
from pipeline.publish.oci import Manifest, Registry, split_ref
from pipeline.settings import Settings
from pipeline.stack import apt

INPUTS_LABEL = "org.envctl.inputs-hash"
BASE_DIR = "docker/base"


def _inputs(settings: Settings) -> dict[str, bytes]:
    folder = settings.repo / BASE_DIR
    if not folder.is_dir():
        raise Unavailable(f"{folder} is missing; the base image is built from it")
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def inputs_hash(settings: Settings) -> str:
    digest = hashlib.sha256()
    for name, data in sorted(_inputs(settings).items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _rootfs_conf(settings: Settings) -> dict[str, str]:
    text = (settings.repo / BASE_DIR / "rootfs.conf").read_text()
    return dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in text.splitlines())
        if v and not k.strip().startswith("#")
    )


def _published(settings: Settings) -> tuple[str | None, Manifest | None]:
    """The inputs hash the registry's base image was built from, and its manifest."""
    host, repo, tag = split_ref(settings.base_image)
    registry = Registry(host, timeout=10)
    manifest = registry.manifest(repo, tag)
    labels = None if manifest is None else registry.labels_of(repo, manifest)
    return (None if labels is None else labels.get(INPUTS_LABEL)), manifest


def status(settings: Settings) -> dict[str, Any]:
    try:
        found, manifest = _published(settings)
    except Unavailable:
        found, manifest = None, None
    return _status(settings, inputs_hash(settings), found, manifest)


def _status(settings: Settings, wanted: str, found: str | None, manifest: Manifest | None) -> dict[str, Any]:
    return {
        "part": "base",
        "ready": found == wanted,
        "address": settings.base_image,
        "digest": manifest.digest if manifest else None,
        "inputs_hash": wanted,
        "published_hash": found,
    }


def _scrub_apt_sources(root: Path) -> None:
    """No mirror credentials in the root file system: apt's sources keep the URLs only.

    The builder stage gets them as `.envctl-build/apt-auth.conf` (not in the published stage).
    """
    etc = root / "etc" / "apt"
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]:
        if path.is_file():
            text = path.read_text()
            if machine.scrub_userinfo(text) != text:
                path.write_text(machine.scrub_userinfo(text))


def _debootstrap(settings: Settings, key: str) -> str:
    """Import the debootstrap root file system as a local image; return its name."""
    client = connect(settings.docker_host)
    name = f"envctl/rootfs:{key[:16]}"
    try:
        client.images.get(name)
        output.info(f"root file system {name} already imported")
        return name
    except Exception:  # docker.errors.ImageNotFound
        pass
    if which("debootstrap") is None:
        apt.install("debootstrap")
    conf = _rootfs_conf(settings)
    suite = conf.get("suite", "bookworm")
    mirror = machine.apt_mirror(suite)
    work = settings.stack_dir / "rootfs"
    target = work / key[:16]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with output.step(f"debootstrap {suite} ({conf.get('variant', 'minbase')})"):
            run(
                [
                    "debootstrap",
                    f"--variant={conf.get('variant', 'minbase')}",
                    f"--include={conf.get('include', 'python3')}",
                    suite,
                    target,
                    mirror,
                ],
                timeout=1200,
            )
        _scrub_apt_sources(target)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (target / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = work / "rootfs.tar"
        with output.step(f"importing the root file system as {name}"):
            run(["tar", "-C", target, "--numeric-owner", "-cf", tarball, "."], timeout=600)
            with open(tarball, "rb") as handle:
                client.api.import_image_from_data(
                    handle.read(), repository=name.split(":")[0], tag=name.split(":")[1]
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return name


def ensure(settings: Settings, *, force: bool = False) -> dict[str, Any]:
    """Build and push the base image unless the registry already has these inputs."""
    key = inputs_hash(settings)
    found, manifest = _published(settings)
    if not force and found == key:
        return _status(settings, key, found, manifest)
    client = connect(settings.docker_host)
    rootfs = _debootstrap(settings, key)
    files = {name: ContextFile(data) for name, data in _inputs(settings).items()}
    ca = machine.ca_bundle()
    files[".envctl-build/ca.crt"] = ContextFile(ca.read_bytes() if ca else b"")
    files[".envctl-build/pip.conf"] = ContextFile(machine.pip_conf().encode())
    suite = _rootfs_conf(settings).get("suite", "bookworm")
    files[".envctl-build/apt-auth.conf"] = ContextFile(
        machine.without_userinfo(machine.apt_mirror(suite))[1].encode()
    )
    with output.step(f"building {settings.base_image}"):
        build(
            client,
            context=context_tar(files),
            dockerfile="Dockerfile",
            tag=settings.base_image,
            buildargs={"ROOTFS": rootfs},
            labels={
                INPUTS_LABEL: key,
                "org.opencontainers.image.title": "envctl local base (Deep Learning Containers stand-in)",
                "org.envctl.version": __version__,
            },
            on_line=lambda line: output.info(f"  {line}"),
        )
    with output.step(f"pushing {settings.base_image}"):
        push(client, settings.base_image, auth=login.credentials(settings, split_ref(settings.base_image)[0]))
    return status(settings)
