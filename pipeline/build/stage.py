"""The build stage: one image version per commit, reused when its inputs are unchanged.

The commit is read through git (never the work tree). The build key hashes everything
the build can read; a version with the same key is tagged with the new SHA at manifest
level and recorded, with no build. Otherwise the builder (Docker Engine or Cloud Build)
builds and pushes `<registry>/<image>:<sha>` and reports its digest and SBOM; the
version is recorded in one transaction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline import __version__, output
from pipeline.backends import Builder, BuildRequest, ContextFile, Publisher, builder_for, publisher_for
from pipeline.errors import EnvctlError, Unavailable
from pipeline.ledger.db import REFRESH_LABEL, Ledger, Version, now, reused_labels
from pipeline.publish.oci import Registry, docker_credentials, split_ref
from pipeline.settings import Settings
from pipeline.source import GitTree
from pipeline.spec.keys import tests_key
from pipeline.spec.model import Spec, load, notebooks, spec_path

log = logging.getLogger(__name__)

BUILD_KEY_FORMAT = "envctl-build-key/1"
LABEL_PREFIX = "org.opencontainers.image"
# A base refresh builds a commit that envctl made on top of staging's (same tree); the
# trailer names the commit it rebuilds and the label carries it into the version.
REFRESH_TRAILER = "Envctl-Refresh-Of"


def refresh_trailer(message: str) -> str | None:
    """The value of a commit message's `Envctl-Refresh-Of:` trailer, when it is a full SHA."""
    for line in reversed(message.splitlines()):
        key, _, value = line.partition(":")
        if key.strip() == REFRESH_TRAILER:
            value = value.strip()
            return value if len(value) == 40 and all(c in "0123456789abcdef" for c in value) else None
    return None


def refresh_origin(commit: Any) -> str | None:
    """The commit a base-refresh commit rebuilds, from its `Envctl-Refresh-Of:` trailer.

    Honoured only for the commit envctl writes: its only parent is the named commit and
    it has that commit's tree. Anyone can push a message with the trailer; a forged one
    (another parent, another tree) is ignored, so it can't make staging treat a push as
    the rebuild of a commit it is not.
    """
    named = refresh_trailer(str(commit.message))
    if named is None:
        return None
    parents = list(commit.parents)
    if len(parents) != 1 or parents[0].hexsha != named or parents[0].tree.hexsha != commit.tree.hexsha:
        log.warning(
            "%s: ignoring its %s trailer (not a refresh of %s)",
            commit.hexsha[:12],
            REFRESH_TRAILER,
            named[:12],
        )
        return None
    return named


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
    ignored = _dockerignore((tree.read(prefix + ".dockerignore") or b"").decode(errors="replace"))
    files: dict[str, ContextFile] = {}
    for path in tree.files("" if not prefix else base):
        relative = path.removeprefix(prefix)
        if ignored(relative):
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


def _dockerignore(text: str) -> Callable[[str], bool]:
    """Whether a context path is excluded, as BuildKit (which builds here) decides.

    Lines are read as Docker reads .dockerignore (a leading BOM dropped, `#` lines
    skipped, spaces trimmed); each pattern is the docker SDK's own (`docker.utils.build`:
    Docker's normalisation and Go's matching, `**` included). The last pattern that
    matches the path or any folder above it decides, as in BuildKit; the SDK's
    `PatternMatcher` checks only the folder at the pattern's depth (the legacy builder's
    rule, which keeps `sub/cache/x` for `**/cache`) and always keeps `.dockerignore`.
    """
    from docker.utils.build import Pattern

    patterns = []
    for line in text.removeprefix("\ufeff").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        body = line.strip()
        negated = body.startswith("!")
        # Go's filepath.Clean, as Docker applies it: a pattern that still climbs out names nothing.
        cleaned = posixpath.normpath(body[1:].strip() if negated else body)
        if cleaned == ".." or cleaned.startswith("../"):
            continue
        pattern = Pattern(("!" if negated else "") + cleaned)
        if pattern.dirs:  # "." and "/" name nothing
            patterns.append(pattern)

    def excluded(path: str) -> bool:
        parts = path.split("/")
        candidates = [path, *("/".join(parts[:n]) for n in range(1, len(parts)))]
        result = False
        for pattern in patterns:
            if any(pattern.match(c) for c in candidates):
                result = not pattern.exclusion
        return result

    return excluded


def build_key(spec: Spec, context: Context, base_digest: str, backend: str) -> str:
    digest = hashlib.sha256()
    digest.update(BUILD_KEY_FORMAT.encode() + b"\0")
    # `base.track` only says which releases `envctl bases` lists; it is not a build input.
    build = spec.build.model_dump(mode="json", exclude={"base": {"track"}})
    digest.update(json.dumps(build, sort_keys=True).encode() + b"\0")
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


def split_name(reference: str) -> str:
    """`host/repo` of `host/repo:tag` or `host/repo@sha256:…`."""
    name = reference.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def resolve_base(reference: str, auth_hosts: tuple[str, ...] = ()) -> tuple[str, str]:
    """The base image as `repo@digest`, resolved from its registry."""
    host, repo, tag = split_ref(reference)
    registry = Registry(host, credentials=docker_credentials(host), timeout=30, auth_hosts=auth_hosts)
    manifest = registry.manifest(repo, tag)
    if manifest is None:
        raise Unavailable(f"base image {reference} is not in its registry; run `envctl stack up`")
    return f"{split_name(reference)}@{manifest.digest}", manifest.digest


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
    builder = builder or builder_for(settings)
    if existing is not None:
        if publisher.digest_of(image, existing.digest) is not None:
            publisher.tag(image, existing.digest, tree.sha)
            output.info(f"{image} {tree.sha[:12]}: already built as {existing.digest}")
            return BuildResult(_unpruned(ledger, existing), "existing")
        gone = "was pruned" if existing.pruned_at else "is gone from the registry"
        output.warn(f"{image} {tree.sha[:12]}: recorded digest {existing.digest} {gone}; rebuilding")
        # Pushed under a tag of its own: `<image>:<sha>` names the rebuild only once it has
        # given back the recorded digest, never bytes the ledger doesn't know.
        scratch = f"envctl-rebuild-{tree.sha}"
        digest = _rebuild(
            settings, spec, tree, existing, publisher.tag_ref(image, scratch), builder, on_line, no_cache
        )
        if digest != existing.digest:
            dropped = _drop_scratch(ledger, publisher, image, digest, scratch)
            raise Unavailable(
                f"{image} {tree.sha[:12]}: the rebuild gave {digest}, not the recorded {existing.digest} "
                "(the same bytes come back only from the build cache that made them), and a version's "
                f"digest never changes; {tree.sha[:12]} can't be brought back: commit a change and build "
                "that commit "
                + (
                    "(the rebuild's bytes were deleted)"
                    if dropped
                    else f"(its bytes stay as {publisher.tag_ref(image, scratch)}: no right to delete)"
                )
            )
        publisher.tag(image, existing.digest, tree.sha)
        return BuildResult(_unpruned(ledger, existing), "built")

    context = build_context(spec, tree)
    base_ref, base_digest = resolve_base(spec.base_for(builder.platform), settings.auth_hosts)
    key = build_key(spec, context, base_digest, builder.platform)
    tag = publisher.tag_ref(image, tree.sha)
    same = ledger.find_by_build_key(image, key)
    if same is not None:
        if publisher.digest_of(image, same.digest) is not None:
            digest = publisher.tag(image, same.digest, tree.sha)
            output.info(f"{image} {tree.sha[:12]}: inputs unchanged since {same.sha[:12]}; reusing {digest}")
            version = _reused(spec, tree, same, key, digest, publisher.image_ref(image, digest))
            return BuildResult(ledger.record_version(version), "reused")
        output.warn(
            f"{image} {tree.sha[:12]}: reused digest {same.digest} (of {same.sha[:12]}) is gone from the "
            "registry; rebuilding"
        )

    labels = {
        f"{LABEL_PREFIX}.revision": tree.sha,
        f"{LABEL_PREFIX}.source": _source_url(repo),
        f"{LABEL_PREFIX}.created": now().isoformat(timespec="seconds"),
        f"{LABEL_PREFIX}.title": image,
        f"{LABEL_PREFIX}.base.name": spec.base_for(builder.platform),
        f"{LABEL_PREFIX}.base.digest": base_digest,
        "org.envctl.build-key": key,
        "org.envctl.version": __version__,
    }
    origin = refresh_origin(tree.commit)
    if origin is not None:
        labels[REFRESH_LABEL] = origin
    request = _request(spec, tree, context, tag, base_ref, labels, no_cache)
    built = builder.build(request, on_line=on_line)
    ref = publisher.image_ref(image, built.digest)
    version = _version(
        spec, tree, key, built.digest, ref, size=built.size, reused_from=None, labels=labels, sbom=built.sbom
    )
    return BuildResult(ledger.record_version(version), "built")


def _unpruned(ledger: Ledger, version: Version) -> Version:
    """The version with its pruned mark cleared: its digest is in the registry again."""
    if version.pruned_at is None:
        return version
    ledger.set_pruned(version.image, version.digest, None)
    output.info(f"{version.image} {version.sha[:12]}: {version.digest[:19]} is back in the registry")
    return dataclasses.replace(version, pruned_at=None)


def _reused(spec: Spec, tree: GitTree, same: Version, key: str, digest: str, ref: str) -> Version:
    """The version of `tree` that reuses the bytes of `same` (same inputs, same build key)."""
    return _version(
        spec,
        tree,
        key,
        digest,
        ref,
        size=same.size,
        reused_from=same.reused_from or same.sha,
        labels=reused_labels(same.labels),
        sbom=same.sbom,
    )


def _version(
    spec: Spec,
    tree: GitTree,
    key: str,
    digest: str,
    ref: str,
    *,
    size: int | None,
    reused_from: str | None,
    labels: dict[str, str],
    sbom: dict[str, Any],
) -> Version:
    return Version(
        image=spec.image,
        sha=tree.sha,
        tree=tree.tree_sha,
        inputs_key=inputs_key(spec, tree),
        test_key=tests_key(spec, tree),
        build_key=key,
        digest=digest,
        image_ref=ref,
        size=size,
        reused_from=reused_from,
        labels=labels,
        sbom=sbom,
        created_at=now(),
    )


def _request(
    spec: Spec,
    tree: GitTree,
    context: Context,
    tag: str,
    base_ref: str,
    labels: dict[str, str],
    no_cache: bool,
) -> BuildRequest:
    return BuildRequest(
        image=spec.image,
        sha=tree.sha,
        files=context.files,
        dockerfile=context.dockerfile,
        tag=tag,
        buildargs={**spec.build.args, "BASE_IMAGE": base_ref},
        labels=labels,
        no_cache=no_cache,
    )


def _rebuild(
    settings: Settings,
    spec: Spec,
    tree: GitTree,
    existing: Version,
    tag: str,
    builder: Builder,
    on_line: Callable[[str], None] | None,
    no_cache: bool,
) -> str:
    """Build a recorded version again, from the same base digest with the same labels; its digest.

    The ledger keeps the recorded digest, so the rebuild must give it back (the engine's
    cache makes it the same bytes); when it does not, the version cannot be repaired here.
    """
    base_name = existing.labels.get(f"{LABEL_PREFIX}.base.name") or spec.base_for(builder.platform)
    base_digest = existing.labels.get(f"{LABEL_PREFIX}.base.digest")
    if base_digest:
        base_ref = f"{split_name(base_name)}@{base_digest}"
    else:
        base_ref, _ = resolve_base(base_name, settings.auth_hosts)
    request = _request(spec, tree, build_context(spec, tree), tag, base_ref, dict(existing.labels), no_cache)
    return builder.build(request, on_line=on_line).digest


def _drop_scratch(ledger: Ledger, publisher: Publisher, image: str, digest: str, scratch: str) -> bool:
    """Delete a failed rebuild's scratch tag and bytes, unless a version of the ledger is that digest.

    Whether they are gone: a builder's account may lack the right to delete (prune's).
    """
    if any(v.digest == digest for v in ledger.list_versions(image)):
        return True
    try:
        publisher.delete(image, digest, [scratch])
    except EnvctlError as e:
        output.warn(f"could not delete {publisher.tag_ref(image, scratch)}: {e}")
        return False
    return True
