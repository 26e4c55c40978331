"""The build stage: one image version per commit, reused when its inputs are unchanged.

The commit is read through git (never the work tree). The build key hashes everything
the build can read; a version with the same key is tagged with the new SHA at manifest
level and recorded, with no build. Otherwise the builder (Docker Engine or Cloud Build)
builds and pushes `<registry>/<image>:<sha>` and reports its digest and SBOM; the
version is recorded in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline import __version__, output
from pipeline.backends import Builder, BuildRequest, ContextFile, Publisher, builder_for, publisher_for
from pipeline.build import dockerfile
from pipeline.errors import Unavailable
from pipeline.ledger.db import Ledger, Version, now
from pipeline.publish.oci import Registry, docker_credentials, split_ref
from pipeline.settings import Settings
from pipeline.source import GitTree
from pipeline.spec.keys import tests_key
from pipeline.spec.model import Spec, load, notebooks, spec_path

log = logging.getLogger(__name__)

BUILD_KEY_FORMAT = "envctl-build-key/1"
LABEL_PREFIX = "org.opencontainers.image"


@dataclass(frozen=True)
class BuildResult:
    version: Version
    action: str  # "built", "reused" (same inputs, new SHA) or "existing" (SHA already done)

    def as_json(self) -> dict[str, Any]:
        v = self.version
        return {
            "image": v.image,
            "sha": v.sha,
            "digest": v.digest,
            "image_ref": v.image_ref,
            "tag": f"{v.image_ref.split('@')[0]}:{v.sha}",
            "action": self.action,
            "built": self.action == "built",
            "reused_from": v.reused_from,
            "build_key": v.build_key,
            "size": v.size,
            "created_at": v.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Context:
    files: dict[str, ContextFile]
    dockerfile: str  # path inside the context


def build_context(spec: Spec, tree: GitTree) -> Context:
    """The files the build can read: the context folder after .dockerignore, plus the Dockerfile."""
    base = spec.build.context.strip("/")
    prefix = "" if base in {"", "."} else base + "/"
    rules = dockerfile.ignore_rules((tree.read(prefix + ".dockerignore") or b"").decode())
    files: dict[str, ContextFile] = {}
    for path in tree.files("" if not prefix else base):
        relative = path.removeprefix(prefix)
        if dockerfile.ignored(relative, rules) or relative.startswith(dockerfile.BUILD_DIR):
            continue
        data = tree.read(path) or b""
        files[relative] = ContextFile(data, 0o755 if tree.mode(path) & 0o111 else 0o644)
    docker_path = spec.build.dockerfile
    if docker_path.startswith(prefix) and docker_path.removeprefix(prefix) in files:
        inside = docker_path.removeprefix(prefix)
    else:
        inside = ".envctl.Dockerfile"
        files[inside] = ContextFile(tree.read(docker_path) or b"")
    return Context(files=files, dockerfile=inside)


def build_key(spec: Spec, context: Context, base_digest: str, backend: str) -> str:
    digest = hashlib.sha256()
    digest.update(BUILD_KEY_FORMAT.encode() + b"\0")
    digest.update(json.dumps(spec.build.model_dump(mode="json"), sort_keys=True).encode() + b"\0")
    digest.update(f"backend={backend}\0base={base_digest}\0dockerfile={context.dockerfile}\0".encode())
    for name in sorted(context.files):
        item = context.files[name]
        digest.update(f"{name}\0{item.mode:o}\0".encode() + hashlib.sha256(item.data).digest())
    return digest.hexdigest()


def inputs_key(spec: Spec, tree: GitTree) -> str:
    """A hash of everything of this image in the tree: spec, build inputs, test notebooks.

    Two commits with the same inputs key test the same thing: the production pipeline
    uses it to find the tested version of a merge.
    """
    paths = {spec_path(spec.image), spec.build.dockerfile, *notebooks(spec, tree)}
    context = spec.build.context.strip("/")
    paths.update(tree.files("" if context in {"", "."} else context))
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.encode() + b"\0" + hashlib.sha256(tree.read(path) or b"").digest())
    return digest.hexdigest()


def _source_url(repo: Any) -> str:
    try:
        return str(repo.remotes.origin.url)
    except (AttributeError, IndexError):
        return f"file://{repo.working_tree_dir or repo.git_dir}"


def resolve_base(reference: str) -> tuple[str, str]:
    """The base image as `repo@digest`, resolved from its registry."""
    host, repo, tag = split_ref(reference)
    manifest = Registry(host, credentials=docker_credentials(host), timeout=30).manifest(repo, tag)
    if manifest is None:
        raise Unavailable(f"base image {reference} is not in its registry; run `envctl stack up`")
    name = reference.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}@{manifest.digest}", manifest.digest


def build_version(
    settings: Settings,
    repo: Any,
    tree: GitTree,
    image: str,
    *,
    ledger: Ledger,
    on_line: Callable[[str], None] | None = None,
    no_cache: bool = False,
    builder: Builder | None = None,
    publisher: Publisher | None = None,
) -> BuildResult:
    """Build (or reuse) the version of `image` at the commit of `tree`; record it."""
    spec = load(tree, image)
    existing = ledger.get_version(image, tree.sha)
    publisher = publisher or publisher_for(settings)
    if existing is not None:
        if publisher.digest_of(image, existing.digest) is None:
            raise Unavailable(
                f"the ledger records {image}@{existing.digest[:19]} for {tree.sha[:12]} but the registry "
                "lost it; run `envctl sync` or rebuild in a new ledger"
            )
        publisher.tag(image, existing.digest, tree.sha)
        output.info(f"{image} {tree.sha[:12]}: already built as {existing.digest}")
        return BuildResult(existing, "existing")

    context = build_context(spec, tree)
    base_ref, base_digest = resolve_base(spec.base_for(settings.backend))
    key = build_key(spec, context, base_digest, settings.backend)
    tag = publisher.tag_ref(image, tree.sha)
    same = ledger.find_by_build_key(image, key)
    if same is not None and publisher.digest_of(image, same.digest) is not None:
        digest = publisher.tag(image, same.digest, tree.sha)
        output.info(f"{image} {tree.sha[:12]}: inputs unchanged since {same.sha[:12]}; reusing {digest}")
        version = _version(spec, tree, same, key, digest, publisher.image_ref(image, digest))
        return BuildResult(ledger.record_version(version), "reused")

    labels = {
        f"{LABEL_PREFIX}.revision": tree.sha,
        f"{LABEL_PREFIX}.source": _source_url(repo),
        f"{LABEL_PREFIX}.created": now().isoformat(timespec="seconds"),
        f"{LABEL_PREFIX}.title": image,
        f"{LABEL_PREFIX}.base.name": spec.base_for(settings.backend),
        f"{LABEL_PREFIX}.base.digest": base_digest,
        "org.envctl.build-key": key,
        "org.envctl.version": __version__,
    }
    request = BuildRequest(
        image=image,
        sha=tree.sha,
        files=context.files,
        dockerfile=context.dockerfile,
        tag=tag,
        buildargs={**spec.build.args, "BASE_IMAGE": base_ref},
        labels=labels,
        no_cache=no_cache,
    )
    built = (builder or builder_for(settings)).build(request, on_line=on_line)
    digest, size, bill = built.digest, built.size, built.sbom
    version = Version(
        image=image,
        sha=tree.sha,
        tree=tree.tree_sha,
        inputs_key=inputs_key(spec, tree),
        test_key=tests_key(spec, tree),
        build_key=key,
        digest=digest,
        image_ref=publisher.image_ref(image, digest),
        size=size,
        reused_from=None,
        labels=labels,
        sbom=bill,
        created_at=now(),
    )
    return BuildResult(ledger.record_version(version), "built")


def _version(spec: Spec, tree: GitTree, same: Version, key: str, digest: str, ref: str) -> Version:
    return Version(
        image=spec.image,
        sha=tree.sha,
        tree=tree.tree_sha,
        inputs_key=inputs_key(spec, tree),
        test_key=tests_key(spec, tree),
        build_key=key,
        digest=digest,
        image_ref=ref,
        size=same.size,
        reused_from=same.reused_from or same.sha,
        labels=same.labels,
        sbom=same.sbom,
        created_at=now(),
    )
