"""The Artifact Registry publisher: tags moved through the Artifact Registry API.

A tag is a pointer from `<package>/tags/<stage>` to `<package>/versions/sha256:…`;
moving it changes that pointer only (no manifest is read or written, no layer moves).
Names are written by hand as Artifact Registry spells them: the package id is the
image name with `/` escaped as `%2F`.

Moving a tag: `get_tag`; absent → `create_tag`, else `update_tag` with the update mask
`version` (whether an update creates a missing tag is not documented, so it is never
relied on). Errors come through `pipeline.gcp.translated`: one line, the resource, the fix.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline import gcp
from pipeline.errors import EnvctlError, Refused, Unavailable, UsageError

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: What moving a tag needs; a role that lacks them fails before the ledger moves.
#: `envctl prune` also needs artifactregistry.tags.delete and .versions.delete (repoAdmin).
TAG_PERMISSIONS = ("artifactregistry.tags.create", "artifactregistry.tags.update")
DELETE_PERMISSIONS = ("artifactregistry.tags.delete", "artifactregistry.versions.delete")
API = "artifactregistry"


@dataclass
class ArtifactRegistryPublisher:
    """Tags of the images under `REGION-docker.pkg.dev/PROJECT/REPOSITORY`."""

    google: gcp.Google
    where: gcp.Location
    _checked: bool = field(default=False, repr=False)

    @classmethod
    def for_settings(cls, settings: Settings, *, timeout: float = 30.0) -> ArtifactRegistryPublisher:
        import dataclasses

        if timeout < settings.gcp_timeout:
            settings = dataclasses.replace(settings, gcp_timeout=max(1, int(timeout)))
        return cls(gcp.Google(settings), gcp.location(settings))

    # -- names ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.where.registry_host

    def repo(self, image: str) -> str:
        return f"{self.where.project}/{self.where.repository}/{image}"

    def tag_ref(self, image: str, tag: str) -> str:
        return f"{self.host}/{self.repo(image)}:{tag}"

    def image_ref(self, image: str, digest: str) -> str:
        return f"{self.host}/{self.repo(image)}@{digest}"

    def package(self, image: str) -> str:
        return f"{self.where.repository_name}/packages/{image.replace('/', '%2F')}"

    def version_name(self, image: str, digest: str) -> str:
        return f"{self.package(image)}/versions/{digest}"

    def tag_name(self, image: str, tag: str) -> str:
        return f"{self.package(image)}/tags/{tag}"

    # -- the repository -----------------------------------------------------------------------

    def _what(self) -> str:
        return f"Artifact Registry repository {self.where.repository_name}"

    def ping(self) -> bool:
        try:
            self._repository()
        except Exception as e:  # ping answers yes or no; require() says why
            log.info("%s does not answer: %s", self._what(), e)
            return False
        return True

    def require(self) -> None:
        """The repository exists and this account may move tags in it; else exit 2 or 3, nothing changed."""
        if self._checked:
            return
        self._repository()
        from google.iam.v1 import iam_policy_pb2

        client = self.google.artifact_registry()
        with gcp.translated(self._what(), api=API):
            answer = client.test_iam_permissions(
                iam_policy_pb2.TestIamPermissionsRequest(
                    resource=self.where.repository_name, permissions=list(TAG_PERMISSIONS)
                ),
                **self.google.call(),
            )
        lacking = sorted(set(TAG_PERMISSIONS) - set(answer.permissions))
        if lacking:
            raise Unavailable(
                f"permission denied on {self._what()}: the account envctl runs as lacks "
                f"{', '.join(lacking)}; nothing was changed. Grant it roles/artifactregistry.writer "
                "on the repository, or use a service account that has it"
            )
        self._checked = True

    def _repository(self) -> Any:
        client = self.google.artifact_registry()
        with gcp.translated(self._what(), api=API, missing=self.where.create_repository_fix()):
            return client.get_repository(name=self.where.repository_name, **self.google.call())

    # -- tags ---------------------------------------------------------------------------------

    def digest_of(self, image: str, reference: str) -> str | None:
        """The digest tag `reference` names, or `reference` itself when it is a digest that exists."""
        from google.api_core import exceptions as gapi

        client = self.google.artifact_registry()
        what = (
            self.image_ref(image, reference)
            if reference.startswith("sha256:")
            else self.tag_ref(image, reference)
        )
        try:
            with gcp.translated(what, api=API):
                if reference.startswith("sha256:"):
                    client.get_version(name=self.version_name(image, reference), **self.google.call())
                    return reference
                found = client.get_tag(name=self.tag_name(image, reference), **self.google.call())
        except UsageError as e:
            if isinstance(e.__cause__, gapi.NotFound):
                return None
            raise
        return self._digest(found.version, what)

    def tag(self, image: str, digest: str, tag: str) -> str:
        """Point `tag` at `digest`: create it when absent, else update its version (mask `version`)."""
        from google.api_core import exceptions as gapi
        from google.cloud.artifactregistry_v1 import Tag
        from google.protobuf.field_mask_pb2 import FieldMask

        client = self.google.artifact_registry()
        version = self.version_name(image, digest)
        what = self.tag_ref(image, tag)
        missing = f"{self.image_ref(image, digest)} is not in Artifact Registry; build and push it first"
        with gcp.translated(what, api=API, missing=missing):
            try:
                current = client.get_tag(name=self.tag_name(image, tag), **self.google.call())
            except gapi.NotFound:
                current = None
            if current is not None and current.version == version:
                log.info("%s already names %s", what, digest[:19])
                return digest
            if current is None:
                try:
                    client.create_tag(
                        parent=self.package(image), tag_id=tag, tag=Tag(version=version), **self.google.call()
                    )
                    log.info("created %s -> %s", what, digest[:19])
                    return digest
                except gapi.AlreadyExists:
                    log.info("%s appeared while envctl created it; updating it", what)
            try:
                client.update_tag(
                    tag=Tag(name=self.tag_name(image, tag), version=version),
                    update_mask=FieldMask(paths=["version"]),
                    **self.google.call(),
                )
            except gapi.NotFound:  # deleted since it was read (or the version is gone: create says so)
                client.create_tag(
                    parent=self.package(image), tag_id=tag, tag=Tag(version=version), **self.google.call()
                )
            log.info("moved %s -> %s", what, digest[:19])
        return digest

    def tags(self, image: str) -> dict[str, str]:
        """Every tag of the image's package and the digest it names (`list_tags`, all pages)."""
        client = self.google.artifact_registry()
        with gcp.translated(f"the tags of {self.tag_ref(image, '*')}", api=API):
            found = client.list_tags(parent=self.package(image), **self.google.call())
            return {t.name.rpartition("/tags/")[2]: self._digest(t.version, t.name) for t in found}

    def delete(self, image: str, digest: str, tags: list[str]) -> bool:
        """Delete envctl's `tags` of the version, then the version itself, without `force`.

        A version that any other tag names is never deleted: the tags are read first, and
        Artifact Registry itself refuses to delete a tagged version without `force`.
        """
        from google.api_core import exceptions as gapi

        client = self.google.artifact_registry()
        what = self.image_ref(image, digest)
        version = self.version_name(image, digest)
        with gcp.translated(what, api=API):
            from google.cloud.artifactregistry_v1 import ListTagsRequest

            request = ListTagsRequest(parent=self.package(image), filter=f'version="{version}"')
            named = client.list_tags(request=request, **self.google.call())
            names = sorted(t.name.rpartition("/tags/")[2] for t in named)
            others = [n for n in names if n not in tags]
            if others:
                raise Refused(f"{what} is named by the tag(s) {', '.join(others)}; kept")
            self._require_deletes(client)
            removed: list[str] = []
            try:
                for tag in names:
                    with contextlib.suppress(gapi.NotFound):
                        client.delete_tag(name=self.tag_name(image, tag), **self.google.call())
                        removed.append(tag)
                try:
                    operation = client.delete_version(name=version, **self.google.call())
                except gapi.NotFound:
                    return False
                except gapi.FailedPrecondition as e:
                    raise Refused(f"{what} gained a tag while envctl pruned it; kept ({e.message})") from e
                operation.result(timeout=self.google.call().get("timeout") or 300)  # type: ignore[no-untyped-call]
            except BaseException:
                self._retag(image, digest, removed)
                raise
        log.info("deleted %s", what)
        return True

    def _require_deletes(self, client: Any) -> None:
        """Unavailable (exit 3, nothing deleted) unless this account may delete tags and versions."""
        from google.iam.v1 import iam_policy_pb2

        answer = client.test_iam_permissions(
            iam_policy_pb2.TestIamPermissionsRequest(
                resource=self.where.repository_name, permissions=list(DELETE_PERMISSIONS)
            ),
            **self.google.call(),
        )
        lacking = sorted(set(DELETE_PERMISSIONS) - set(answer.permissions))
        if lacking:
            raise Unavailable(
                f"permission denied on {self._what()}: the account envctl runs as lacks "
                f"{', '.join(lacking)}; nothing was deleted. Grant it roles/artifactregistry.repoAdmin "
                "on the repository to prune"
            )

    def _retag(self, image: str, digest: str, tags: list[str]) -> None:
        """Put back the tags a failed delete removed, so the version is not left untagged."""
        for tag in tags:
            try:
                self.tag(image, digest, tag)
            except EnvctlError as e:
                log.warning("could not put back %s on %s: %s", tag, digest[:19], e)

    def _digest(self, version: str, what: str) -> str:
        _, sep, digest = version.rpartition("/versions/")
        if not sep or not digest.startswith("sha256:"):
            raise Unavailable(f"Artifact Registry answered {what} with an unexpected version {version!r}")
        return digest


_AR_IMAGE = re.compile(
    r"^(?P<region>[a-z][a-z0-9-]*)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repository>[^/]+)/(?P<image>.+)$"
)


def package_of(reference: str) -> tuple[str, str]:
    """`REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG` into (the package's resource name, the tag)."""
    name, tag = reference, "latest"
    if "@" in name:
        raise UsageError(f"base image {reference} is pinned by digest; name a tag to watch it")
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    found = _AR_IMAGE.match(name)
    if found is None:
        raise UsageError(
            f"{reference} is not an Artifact Registry image (REGION-docker.pkg.dev/PROJECT/REPO/IMAGE)"
        )
    repository = f"projects/{found['project']}/locations/{found['region']}/repositories/{found['repository']}"
    return f"{repository}/packages/{found['image'].replace('/', '%2F')}", tag


def read_base(google: gcp.Google, reference: str, with_tags: bool) -> tuple[str | None, list[str]]:
    """The digest the base's tag names now (None: no such tag) and, when asked, the package's tags.

    Through the Artifact Registry API (`get_tag`, `list_tags`): a Deep Learning Containers
    base is `us-docker.pkg.dev/deeplearning-platform-release/gcr.io/base-cpu.py310:m125`.
    """
    from google.api_core import exceptions as gapi

    package, tag = package_of(reference)
    client = google.artifact_registry()
    with gcp.translated(f"base image {reference}", api=API):
        try:
            found = client.get_tag(name=f"{package}/tags/{tag}", **google.call())
            digest: str | None = found.version.rpartition("/versions/")[2] or None
        except gapi.NotFound:
            digest = None
        tags = (
            [t.name.rpartition("/tags/")[2] for t in client.list_tags(parent=package, **google.call())]
            if with_tags
            else []
        )
    return digest, tags
