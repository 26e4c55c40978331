"""Image names (`TEAM.TASK`) and stages: checked without loading the spec model (pydantic)."""

from __future__ import annotations

import re

SPEC_DIR = "environments"
IMAGE_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
STAGES = ("staging", "production", "fallback")


def spec_path(image: str) -> str:
    """The spec file of an image, relative to the repository root."""
    return f"{SPEC_DIR}/{image}.yaml"


def check_image_name(name: str) -> str:
    """Return the name when it is a valid `TEAM.TASK` image name, else raise ValueError."""
    if len(name) > 128:
        raise ValueError(f"{len(name)} characters; at most 128")
    if not IMAGE_RE.match(name):
        raise ValueError(
            "use lowercase letters, digits and single '.', '_' or '-' between them "
            "(Docker repository name rules), e.g. nlp.keras-batch"
        )
    if "." not in name:
        raise ValueError("name it TEAM.TASK, e.g. nlp.keras-batch")
    if name.rsplit(".", 1)[1] in STAGES:
        raise ValueError(f"the last part can't be a stage name ({', '.join(STAGES)})")
    return name
