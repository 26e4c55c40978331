"""The OCI distribution publisher: tags moved through the registry protocol.

Used for the local registry and any registry that speaks the protocol. A retag reads
the manifest's bytes and writes them under the new tag, so the digest is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import Refused, UsageError
from pipeline.publish import login
from pipeline.publish.oci import Manifest, Registry
from pipeline.settings import Settings


@dataclass
class OciPublisher:
    """Tags under `<host>/<prefix>/<image>` in a distribution registry."""

    registry: Registry
    prefix: str = ""
    _seen: dict[tuple[str, str], Manifest] = field(default_factory=dict, repr=False)

    @classmethod
    def for_settings(cls, settings: Settings, *, timeout: float = 30.0) -> OciPublisher:
        host, _, prefix = settings.registry.partition("/")
        token = settings.registry_token or None
        credentials = None if token else login.credentials(settings, host)
        registry = Registry(
            host, token=token, credentials=credentials, timeout=timeout, auth_hosts=settings.auth_hosts
        )
        return cls(registry, prefix.strip("/"))

    @property
    def host(self) -> str:
        return self.registry.host

    def repo(self, image: str) -> str:
        return f"{self.prefix}/{image}" if self.prefix else image

    def tag_ref(self, image: str, tag: str) -> str:
        return f"{self.registry.host}/{self.repo(image)}:{tag}"

    def image_ref(self, image: str, digest: str) -> str:
        return f"{self.registry.host}/{self.repo(image)}@{digest}"

    def ping(self) -> bool:
        return self.registry.ping()

    def require(self) -> None:
        self.registry.require()

    def digest_of(self, image: str, reference: str) -> str | None:
        manifest = self.registry.manifest(self.repo(image), reference)
        if manifest is None:
            return None
        self._seen[(image, manifest.digest)] = manifest
        return manifest.digest

    def tag(self, image: str, digest: str, tag: str) -> str:
        """Point `tag` at `digest`; the manifest just read by `digest_of` is not read again."""
        manifest = self._seen.get((image, digest)) or self.registry.manifest(self.repo(image), digest)
        if manifest is None:
            raise UsageError(f"{self.image_ref(image, digest)} is not in the registry")
        return self.registry.put_manifest(self.repo(image), tag, manifest)

    def tags(self, image: str) -> dict[str, str]:
        repo = self.repo(image)
        found = {}
        for tag in self.registry.tags(repo):
            manifest = self.registry.manifest(repo, tag)
            if manifest is not None:
                found[tag] = manifest.digest
        return found

    def delete(self, image: str, digest: str, tags: list[str]) -> bool:
        """DELETE the manifest by digest (the registry drops the tags naming it with it)."""
        repo = self.repo(image)
        others = sorted(t for t, d in self.tags(image).items() if d == digest and t not in tags)
        if others:
            raise Refused(f"{self.image_ref(image, digest)} is named by the tag(s) {', '.join(others)}; kept")
        return self.registry.delete_manifest(repo, digest)
