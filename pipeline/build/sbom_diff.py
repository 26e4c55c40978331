"""What changed between two versions: packages, base image and Python, from stored SBOMs.

`versions.sbom` is `{"pip": [{"name", "version"}], "dpkg": [...], "conda": [...]}`
(conda optional); entries written as `"name==version"` strings are read too. The base
image comes from the OCI labels `org.opencontainers.image.base.name` / `.base.digest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.ledger.db import Version

KINDS = ("pip", "conda", "dpkg")
BASE_NAME = "org.opencontainers.image.base.name"
BASE_DIGEST = "org.opencontainers.image.base.digest"


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    old: str | None
    new: str | None

    def to_json(self) -> dict[str, str | None]:
        return {"kind": self.kind, "name": self.name, "from": self.old, "to": self.new}


@dataclass(frozen=True, kw_only=True)
class SbomDiff:
    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    base: tuple[str | None, str | None] = (None, None)
    python: tuple[str | None, str | None] = (None, None)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [c.to_json() for c in self.added],
            "removed": [c.to_json() for c in self.removed],
            "changed": [c.to_json() for c in self.changed],
            "base": {"from": self.base[0], "to": self.base[1], "changed": self.base[0] != self.base[1]},
            "python": {
                "from": self.python[0],
                "to": self.python[1],
                "changed": self.python[0] != self.python[1],
            },
        }

    def lines(self) -> list[str]:
        out = []
        if self.base[0] != self.base[1]:
            out.append(f"base    {self.base[0] or '-'} -> {self.base[1] or '-'}")
        if self.python[0] != self.python[1]:
            out.append(f"python  {self.python[0] or '-'} -> {self.python[1] or '-'}")
        out += [f"+ {c.kind:<5} {c.name} {c.new}" for c in self.added]
        out += [f"- {c.kind:<5} {c.name} {c.old}" for c in self.removed]
        out += [f"~ {c.kind:<5} {c.name} {c.old} -> {c.new}" for c in self.changed]
        return out


def _entry(item: Any) -> tuple[str, str] | None:
    if isinstance(item, dict):
        name = item.get("name") or item.get("package") or item.get("Package")
        version = item.get("version") or item.get("Version") or ""
        return (str(name), str(version)) if name else None
    if isinstance(item, str):
        for separator in ("==", "=", " "):
            if separator in item:
                name, _, version = item.partition(separator)
                return name.strip(), version.strip()
        return item.strip(), ""
    return None


def packages(sbom: dict[str, Any], kind: str) -> dict[str, str]:
    """name -> version for one kind; pip names compare case- and `_`/`-`-insensitively."""
    found: dict[str, str] = {}
    for item in sbom.get(kind) or []:
        entry = _entry(item)
        if entry is None:
            continue
        name = entry[0].lower().replace("_", "-") if kind == "pip" else entry[0]
        found[name] = entry[1]
    return found


def python_version(sbom: dict[str, Any]) -> str | None:
    """The `python` field when present, else the python3 package of dpkg or conda."""
    field_value = sbom.get("python")
    if isinstance(field_value, dict):
        field_value = field_value.get("version")
    if field_value:
        return str(field_value)
    for kind in ("conda", "dpkg"):
        listed = packages(sbom, kind)
        for name in ("python", "python3", "python3-minimal"):
            if listed.get(name):
                return listed[name]
        minors = sorted(n for n in listed if n.startswith("python3.") and n[8:].isdigit())
        if minors:
            return listed[minors[-1]]
    return None


def base(version: Version) -> str | None:
    name, digest = version.labels.get(BASE_NAME), version.labels.get(BASE_DIGEST)
    if name and digest:
        return f"{name}@{digest}"
    return name or digest


def diff(old: Version, new: Version) -> SbomDiff:
    result = SbomDiff(
        base=(base(old), base(new)), python=(python_version(old.sbom), python_version(new.sbom))
    )
    for kind in KINDS:
        before, after = packages(old.sbom, kind), packages(new.sbom, kind)
        for name in sorted(after.keys() - before.keys()):
            result.added.append(Change(kind, name, None, after[name]))
        for name in sorted(before.keys() - after.keys()):
            result.removed.append(Change(kind, name, before[name], None))
        for name in sorted(before.keys() & after.keys()):
            if before[name] != after[name]:
                result.changed.append(Change(kind, name, before[name], after[name]))
    return result


def summary(version: Version) -> dict[str, Any]:
    """Counts per kind, Python and base, for `envctl describe`."""
    return {
        "packages": {kind: len(packages(version.sbom, kind)) for kind in KINDS},
        "python": python_version(version.sbom),
        "base": base(version),
    }
