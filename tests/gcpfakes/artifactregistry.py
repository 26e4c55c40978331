"""A fake of the Artifact Registry API (v1, REST) for Docker repositories.

State: repositories, and per package (an image; a `/` in its name is `%2F` in the
package id) its versions (`sha256:…`) and tags. Served as the real client calls them:
repositories get/list and `:testIamPermissions`; packages get/list; versions
get/list (FULL view fills `relatedTags`) and delete; tags get/list (with
`filter=version="…"`)/create/update (with an update mask)/delete; dockerImages
get/list. A tag names a version by its full resource name, as Artifact Registry does.

`push(image, digest, tags=...)` stands for a `docker push` (or a Cloud Build build)
that put a manifest in the repository. `tags_of(image)` gives `{tag: digest}` to assert.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tests.gcpfakes.rest import FakeRequest, FakeRestServer, GoogleError, pages, proto_json

REPO = r"/v1/(?P<repo>projects/[^/]+/locations/[^/]+/repositories/[^/]+)"
PKG = REPO + r"/packages/(?P<package>[^/]+)"

#: What a writer of tags holds (roles/artifactregistry.writer), by default everyone here.
WRITER = frozenset(
    {
        "artifactregistry.repositories.get",
        "artifactregistry.tags.get",
        "artifactregistry.tags.list",
        "artifactregistry.tags.create",
        "artifactregistry.tags.update",
        "artifactregistry.tags.delete",
        "artifactregistry.versions.get",
        "artifactregistry.versions.list",
    }
)

#: roles/artifactregistry.repoAdmin, as far as envctl uses it: a writer that also deletes versions.
REPO_ADMIN = WRITER | {"artifactregistry.versions.delete"}


def _full(request: FakeRequest) -> bool:
    """`view=FULL`; the REST transport sends enums as numbers (FULL is 2)."""
    return request.param("view") in {"FULL", "2"}


def package_id(image: str) -> str:
    return image.replace("/", "%2F")


@dataclass
class Package:
    versions: dict[str, float] = field(default_factory=dict)  # digest -> upload time
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


class FakeArtifactRegistry(FakeRestServer):
    """Docker repositories in memory, keyed by full repository name."""

    def __init__(self, *repositories: str) -> None:
        super().__init__()
        self.repositories: set[str] = set(repositories)
        self.packages: dict[tuple[str, str], Package] = {}
        self.granted: frozenset[str] = WRITER
        self.fail_next: dict[str, str] = {}  # route ("delete_version") -> the status its next call answers
        self.sizes: dict[str, int] = {}  # digest -> image size in bytes
        route = self.route
        route("GET", REPO)(self._get_repository)
        route("GET", r"/v1/(?P<parent>projects/[^/]+/locations/[^/]+)/repositories")(self._list_repositories)
        route("POST", REPO + r":testIamPermissions")(self._test_permissions)
        route("GET", REPO + r"/packages")(self._list_packages)
        route("GET", PKG)(self._get_package)
        route("GET", PKG + r"/versions")(self._list_versions)
        route("GET", PKG + r"/versions/(?P<version>[^/]+)")(self._get_version)
        route("DELETE", PKG + r"/versions/(?P<version>[^/]+)")(self._delete_version)
        route("GET", PKG + r"/tags")(self._list_tags)
        route("POST", PKG + r"/tags")(self._create_tag)
        route("GET", PKG + r"/tags/(?P<tag>[^/]+)")(self._get_tag)
        route("PATCH", PKG + r"/tags/(?P<tag>[^/]+)")(self._update_tag)
        route("DELETE", PKG + r"/tags/(?P<tag>[^/]+)")(self._delete_tag)
        route("GET", REPO + r"/dockerImages")(self._list_images)
        route("GET", REPO + r"/dockerImages/(?P<image>[^/@]+)@(?P<digest>sha256:[0-9a-f]{64})")(
            self._get_image
        )

    # -- helpers for tests --------------------------------------------------------------

    def push(
        self, repository: str, image: str, digest: str, tags: tuple[str, ...] = (), *, size: int = 0
    ) -> None:
        """A manifest `digest` arrives for `image` (a docker push or a Cloud Build build).

        `size` is what dockerImages report as `imageSizeBytes` (0: not reported).
        """
        with self.lock:
            if size:
                self.sizes[digest] = size
            package = self.packages.setdefault((repository, package_id(image)), Package())
            package.versions.setdefault(digest, time.time())
            for tag in tags:
                package.tags[tag] = digest

    def tags_of(self, repository: str, image: str) -> dict[str, str]:
        with self.lock:
            package = self.packages.get((repository, package_id(image)))
            return dict(package.tags) if package else {}

    def writes(self) -> list[FakeRequest]:
        """The requests that changed tags, in order."""
        return [r for r in self.sent() if r.method in {"POST", "PATCH", "DELETE"} and "/tags" in r.path]

    # -- names and lookups ----------------------------------------------------------------

    def _repository(self, request: FakeRequest) -> str:
        repo = request.groups["repo"]
        if repo not in self.repositories:
            raise GoogleError("NOT_FOUND", f"Requested entity was not found. Repository {repo}")
        return repo

    def _package(self, request: FakeRequest) -> Package:
        repo = self._repository(request)
        with self.lock:
            package = self.packages.get((repo, request.groups["package"]))
        if package is None:
            raise GoogleError(
                "NOT_FOUND", f"Requested entity was not found. Package {request.groups['package']}"
            )
        return package

    def _version_name(self, request: FakeRequest, digest: str) -> str:
        return f"{request.groups['repo']}/packages/{request.groups['package']}/versions/{digest}"

    def _tag_name(self, request: FakeRequest, tag: str) -> str:
        return f"{request.groups['repo']}/packages/{request.groups['package']}/tags/{tag}"

    def _tag(self, request: FakeRequest, tag: str, digest: str) -> Any:
        from google.cloud import artifactregistry_v1 as ar

        return ar.Tag(name=self._tag_name(request, tag), version=self._version_name(request, digest))

    def _version(self, request: FakeRequest, package: Package, digest: str, full: bool) -> Any:
        from google.cloud import artifactregistry_v1 as ar

        related = (
            [self._tag(request, t, d) for t, d in sorted(package.tags.items()) if d == digest] if full else []
        )
        return ar.Version(name=self._version_name(request, digest), related_tags=related)

    def _digest_of_version(self, request: FakeRequest, package: Package, version: str) -> str:
        prefix = f"{request.groups['repo']}/packages/{request.groups['package']}/versions/"
        if not version.startswith(prefix):
            raise GoogleError("INVALID_ARGUMENT", f"version {version!r} is not a version of this package")
        digest = version.removeprefix(prefix)
        if digest not in package.versions:
            raise GoogleError("NOT_FOUND", f"Requested entity was not found. Version {digest}")
        return digest

    def _check_permission(self, permission: str, resource: str) -> None:
        if permission not in self.granted:
            raise GoogleError(
                "PERMISSION_DENIED", f"Permission '{permission}' denied on resource '{resource}'"
            )

    # -- routes ----------------------------------------------------------------------------

    def _get_repository(self, request: FakeRequest) -> str:
        from google.cloud import artifactregistry_v1 as ar

        repo = self._repository(request)
        self._check_permission("artifactregistry.repositories.get", repo)
        return proto_json(ar.Repository(name=repo, format_=ar.Repository.Format.DOCKER))

    def _list_repositories(self, request: FakeRequest) -> dict[str, Any]:
        from google.cloud import artifactregistry_v1 as ar

        found = sorted(r for r in self.repositories if r.startswith(request.groups["parent"] + "/"))
        items = [
            json.loads(proto_json(ar.Repository(name=r, format_=ar.Repository.Format.DOCKER))) for r in found
        ]
        return pages(items, request, "repositories")

    def _test_permissions(self, request: FakeRequest) -> dict[str, Any]:
        self._repository(request)
        asked = request.json().get("permissions", [])
        return {"permissions": [p for p in asked if p in self.granted]}

    def _list_packages(self, request: FakeRequest) -> dict[str, Any]:
        repo = self._repository(request)
        with self.lock:
            ids = sorted(p for r, p in self.packages if r == repo)
        return pages([{"name": f"{repo}/packages/{p}"} for p in ids], request, "packages")

    def _get_package(self, request: FakeRequest) -> dict[str, Any]:
        self._package(request)
        return {"name": f"{request.groups['repo']}/packages/{request.groups['package']}"}

    def _get_version(self, request: FakeRequest) -> str:
        package = self._package(request)
        digest = request.groups["version"]
        self._check_permission("artifactregistry.versions.get", request.groups["repo"])
        with self.lock:
            if digest not in package.versions:
                raise GoogleError("NOT_FOUND", f"Requested entity was not found. Version {digest}")
            return proto_json(self._version(request, package, digest, _full(request)))

    def _list_versions(self, request: FakeRequest) -> dict[str, Any]:
        package = self._package(request)
        with self.lock:
            digests = sorted(package.versions, key=lambda d: package.versions[d], reverse=True)
            items = [
                json.loads(proto_json(self._version(request, package, d, _full(request)))) for d in digests
            ]
        return pages(items, request, "versions")

    def _delete_version(self, request: FakeRequest) -> str:
        self._check_permission("artifactregistry.versions.delete", request.groups["repo"])
        if failure := self.fail_next.pop("delete_version", None):
            raise GoogleError(failure, "fake: scripted failure of delete_version")
        package = self._package(request)
        digest = request.groups["version"]
        with self.lock:
            if digest not in package.versions:
                raise GoogleError("NOT_FOUND", f"Requested entity was not found. Version {digest}")
            if any(d == digest for d in package.tags.values()) and request.param("force") != "true":
                raise GoogleError("FAILED_PRECONDITION", f"version {digest} has tags; delete with force")
            del package.versions[digest]
            package.tags = {t: d for t, d in package.tags.items() if d != digest}
        from google.protobuf import empty_pb2

        # As Artifact Registry answers: a done operation whose response is Empty.
        return self.add_operation(
            f"{request.groups['repo']}/operations/delete-{digest[7:19]}",
            done=True,
            response=empty_pb2.Empty(),
        )

    def _get_tag(self, request: FakeRequest) -> str:
        package = self._package(request)
        tag = request.groups["tag"]
        self._check_permission("artifactregistry.tags.get", request.groups["repo"])
        with self.lock:
            digest = package.tags.get(tag)
        if digest is None:
            raise GoogleError("NOT_FOUND", f"Requested entity was not found. Tag {tag}")
        return proto_json(self._tag(request, tag, digest))

    def _list_tags(self, request: FakeRequest) -> dict[str, Any]:
        package = self._package(request)
        wanted = request.param("filter")
        match = re.fullmatch(r'version\s*=\s*"([^"]+)"', wanted) if wanted else None
        if wanted and not match:
            raise GoogleError("INVALID_ARGUMENT", f"fake: filter {wanted!r} is not served")
        with self.lock:
            items = [
                json.loads(proto_json(self._tag(request, t, d)))
                for t, d in sorted(package.tags.items())
                if match is None or self._version_name(request, d) == match[1]
            ]
        return pages(items, request, "tags")

    def _create_tag(self, request: FakeRequest) -> str:
        from google.cloud import artifactregistry_v1 as ar

        package = self._package(request)
        self._check_permission("artifactregistry.tags.create", request.groups["repo"])
        tag_id = request.param("tagId")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag_id):
            raise GoogleError("INVALID_ARGUMENT", f"invalid tag id {tag_id!r}")
        body = request.message(ar.Tag)
        with self.lock:
            if tag_id in package.tags:
                raise GoogleError("ALREADY_EXISTS", f"Tag {tag_id} already exists")
            digest = self._digest_of_version(request, package, body.version)
            package.tags[tag_id] = digest
            return proto_json(self._tag(request, tag_id, digest))

    def _update_tag(self, request: FakeRequest) -> str:
        from google.cloud import artifactregistry_v1 as ar

        package = self._package(request)
        self._check_permission("artifactregistry.tags.update", request.groups["repo"])
        tag = request.groups["tag"]
        body = request.message(ar.Tag)
        if body.name and body.name != self._tag_name(request, tag):
            raise GoogleError("INVALID_ARGUMENT", f"tag name {body.name!r} does not match the URL")
        mask = [p for p in request.param("updateMask").split(",") if p]
        if any(p != "version" for p in mask):
            raise GoogleError("INVALID_ARGUMENT", f"update mask {mask} names fields a tag can't change")
        with self.lock:
            if tag not in package.tags:
                raise GoogleError("NOT_FOUND", f"Requested entity was not found. Tag {tag}")
            package.tags[tag] = self._digest_of_version(request, package, body.version)
            return proto_json(self._tag(request, tag, package.tags[tag]))

    def _delete_tag(self, request: FakeRequest) -> dict[str, Any]:
        package = self._package(request)
        self._check_permission("artifactregistry.tags.delete", request.groups["repo"])
        with self.lock:
            if package.tags.pop(request.groups["tag"], None) is None:
                raise GoogleError("NOT_FOUND", f"Requested entity was not found. Tag {request.groups['tag']}")
        return {}

    def _image(self, repo: str, package: str, digest: str) -> Any:
        from google.cloud import artifactregistry_v1 as ar

        location = repo.split("/")[3]
        project, repository = repo.split("/")[1], repo.split("/")[5]
        image = package.replace("%2F", "/")
        with self.lock:
            found = self.packages[(repo, package)]
            tags = sorted(t for t, d in found.tags.items() if d == digest)
        return ar.DockerImage(
            name=f"{repo}/dockerImages/{package}@{digest}",
            uri=f"{location}-docker.pkg.dev/{project}/{repository}/{image}@{digest}",
            tags=tags,
            media_type="application/vnd.oci.image.manifest.v1+json",
            image_size_bytes=self.sizes.get(digest, 0),
        )

    def _get_image(self, request: FakeRequest) -> str:
        repo = self._repository(request)
        package, digest = request.groups["image"], request.groups["digest"]
        with self.lock:
            found = self.packages.get((repo, package))
            if found is None or digest not in found.versions:
                raise GoogleError("NOT_FOUND", f"Requested entity was not found. Image {package}@{digest}")
        return proto_json(self._image(repo, package, digest))

    def _list_images(self, request: FakeRequest) -> dict[str, Any]:
        repo = self._repository(request)
        with self.lock:
            keys = sorted((p, d) for (r, p), pkg in self.packages.items() if r == repo for d in pkg.versions)
        items = [json.loads(proto_json(self._image(repo, p, d))) for p, d in keys]
        return pages(items, request, "dockerImages")
