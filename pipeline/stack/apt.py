"""Debian packages the stack installs when they are missing (root on Debian only)."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import output
from pipeline.errors import Unavailable
from pipeline.proc import run

_updated = False


def can_install() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists()


def install(*packages: str) -> None:
    """`apt-get install` the packages, after one `apt-get update` per process."""
    global _updated
    if not can_install():
        raise Unavailable(f"{', '.join(packages)} missing and this is not root on Debian; install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with output.step(f"installing Debian's {', '.join(packages)}"):
        if not _updated:
            run(["apt-get", "update", "-q"], timeout=600, env=env)
            _updated = True
        run(["apt-get", "install", "-y", "-q", *packages], timeout=900, env=env)
