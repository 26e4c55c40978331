"""What a test result depends on: the tests key of an image at one commit.

A test run's verdict depends on the image's bytes (its digest) and on what the run
reads from the commit: the spec's `tests` section (notebooks, parameters, timeout,
resources, network, smoke checks), the accelerator it asks for, and the files the run
mounts (every file under the test notebooks' common folder). Two commits with the same
digest and the same tests key would run the same tests on the same bytes, so one's
result is the other's evidence.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath

from pipeline.source import Tree
from pipeline.spec.model import Spec, notebooks

TEST_KEY_FORMAT = "envctl-test-key/1"


def common_root(paths: list[str]) -> str:
    """The deepest folder that holds every path ("" for the repository root)."""
    parents = [PurePosixPath(p).parent.parts for p in paths]
    shared: list[str] = []
    for parts in zip(*parents, strict=False):
        if len(set(parts)) != 1:
            break
        shared.append(parts[0])
    return "/".join(shared)


def tests_key(spec: Spec, tree: Tree) -> str:
    """A hash of the test inputs of `spec` in `tree`: its tests section and the files a run mounts."""
    digest = hashlib.sha256()
    digest.update(TEST_KEY_FORMAT.encode() + b"\0")
    tests = spec.tests.model_dump(mode="json")
    if tests.get("isolation") == "notebook":
        del tests["isolation"]  # the default: keys recorded before the setting existed stay as they were
    digest.update(json.dumps(tests, sort_keys=True).encode() + b"\0")
    if spec.cloud.accelerator is not None:
        # Only when asked for, so the keys of specs without one stay as they were.
        digest.update(b"accelerator\0" + str(spec.cloud.accelerator).encode() + b"\0")
    root = common_root(notebooks(spec, tree))
    for path in sorted(tree.files(root)):
        digest.update(path.encode() + b"\0" + hashlib.sha256(tree.read(path) or b"").digest())
    return digest.hexdigest()
