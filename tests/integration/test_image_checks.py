"""The image checks IMG001-IMG004 on the real Docker Engine, with a broken and a fixed image.

The broken image has a wheel whose compiled extension needs libgomp.so.1 (missing),
no papermill, an ENTRYPOINT that doesn't exist, a user whose HOME isn't writable, and
a batch program that writes to /data instead of AIP_MODEL_DIR. The fixed image has
each of those fixed. Both are built FROM the local base from tests/data/checks.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from pipeline.backends import ContextFile
from pipeline.build.engine import build, connect, context_tar, push
from pipeline.ledger import db as ledger_db
from pipeline.ledger.db import Version, now
from pipeline.spec.model import Spec
from pipeline.testing.checks import run_checks
from pipeline.testing.model import Result
from pipeline.testing.runner import Limits, Tracker
from pipeline.testing.tasks import Run
from tests.helpers import DATA
from tests.integration.test_test_stage import BASE, containers_with, make_world

pytestmark = pytest.mark.integration
CHECKS = DATA / "checks"
SO = "fastmath/_fastmath.cpython-311-x86_64-linux-gnu.so"


def _wheel(folder: Path) -> dict[str, ContextFile]:
    """A wheel with a compiled extension that needs libgomp.so.1, and a stub of that library."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to compile the test extension")
    gcc = ["gcc", "-shared", "-fPIC", "-O1"]
    subprocess.run(
        [*gcc, "-o", folder / "libgomp.so.1", "-Wl,-soname,libgomp.so.1", CHECKS / "gomp_stub.c"], check=True
    )
    subprocess.run(
        [*gcc, "-o", folder / "ext.so", CHECKS / "fastmath.c", f"-L{folder}", "-l:libgomp.so.1"], check=True
    )
    # The auditwheel layout (scipy.libs/, numpy.libs/): a vendored library that needs its
    # sibling by a hashed name, which the extension's RPATH into that folder resolves at
    # run time; IMG001 must not report it (it did, for scipy's libgfortran in the example).
    (folder / "stub.c").write_text("int envctl_vendored(void) { return 1; }\n")
    subprocess.run(
        [*gcc, "-o", folder / "libsib-1a2b3c4d.so", "-Wl,-soname,libsib-1a2b3c4d.so", folder / "stub.c"],
        check=True,
    )
    subprocess.run(
        [*gcc, "-o", folder / "libvend-1a2b3c4d.so", "-Wl,-soname,libvend-1a2b3c4d.so", folder / "stub.c",
         f"-L{folder}", "-Wl,--no-as-needed", "-l:libsib-1a2b3c4d.so"],
        check=True,
    )  # fmt: skip
    wheel = folder / "fastmath-1.0-py3-none-any.whl"
    info = "fastmath-1.0.dist-info"
    members = {
        "fastmath/__init__.py": b"",
        SO: (folder / "ext.so").read_bytes(),
        "fastmath.libs/libvend-1a2b3c4d.so": (folder / "libvend-1a2b3c4d.so").read_bytes(),
        "fastmath.libs/libsib-1a2b3c4d.so": (folder / "libsib-1a2b3c4d.so").read_bytes(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: fastmath\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: envctl-tests\nRoot-Is-Purelib: false\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*members, f"{info}/RECORD"]).encode()
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in {**members, f"{info}/RECORD": record}.items():
            archive.writestr(name, data)
    files = {
        name: ContextFile((CHECKS / name).read_bytes()) for name in ("predict_aip.py", "predict_elsewhere.py")
    }
    files[wheel.name] = ContextFile(wheel.read_bytes())
    files["libgomp.so.1"] = ContextFile((folder / "libgomp.so.1").read_bytes())
    return files


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Local tags of the broken and the fixed image; the broken one also pushed, by digest."""
    client = connect()
    files = _wheel(tmp_path_factory.mktemp("wheel"))
    run = secrets.token_hex(4)
    made: dict[str, str] = {}
    try:
        for kind in ("broken", "fixed"):
            tag = f"localhost:5000/envctl-test/checks-{kind}:{run}"
            context = context_tar(
                {**files, "Dockerfile": ContextFile((CHECKS / f"Dockerfile.{kind}").read_bytes())}
            )
            build(
                client,
                context=context,
                dockerfile="Dockerfile",
                tag=tag,
                buildargs={"BASE_IMAGE": BASE},
                labels={},
            )
            made[kind] = tag
        made["broken@"] = f"{made['broken'].rsplit(':', 1)[0]}@{push(client, made['broken'])}"
        yield made
    finally:
        for tag in made.values():
            for image in client.images.list(name=tag.split("@")[0].rsplit(":", 1)[0]):
                client.images.remove(image.id, force=True)
        client.close()


def _spec(image: str) -> Spec:
    return Spec.model_validate(
        {
            "image": image,
            "build": {
                "dockerfile": f"docker/{image}/Dockerfile",
                "context": f"docker/{image}",
                "base": {"local": BASE, "gcp": "example.invalid/base:1"},
            },
            "tests": {"notebooks": ["nb/*.ipynb"], "resources": {"memory": "512m", "cpus": 1}},
            "batch": {"command": ["python", "/app/predict.py"], "timeout": 60},
        }
    )


def _checks(tag: str, folder: Path, writes: list[str]) -> dict[str, Result]:
    image = f"test.checks-{secrets.token_hex(3)}"
    version = Version(
        image=image,
        sha="0" * 40,
        tree="0" * 40,
        inputs_key="test",
        build_key="test",
        digest="sha256:" + "0" * 64,
        image_ref=tag,
        size=None,
        reused_from=None,
        labels={},
        sbom={},
        created_at=now(),
    )
    run = Run(
        client=connect(),
        tracker=Tracker(f"checks-{image}"),
        spec=_spec(image),
        version=version,
        run_dir=folder / "run",
        work=folder / "work",
        root="",
        limits=Limits(memory_bytes=512 * 1024**2, nano_cpus=10**9, network="none"),
        grace=30,
    )
    results = {r.name.split()[0]: r for r in run_checks(run, writes)}
    assert containers_with(f"org.envctl.image={image}") == []
    return results


@pytest.fixture(scope="module")
def broken(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    return _checks(images["broken"], tmp_path_factory.mktemp("broken"), ["/opt/results"])


@pytest.fixture(scope="module")
def fixed(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    return _checks(images["fixed"], tmp_path_factory.mktemp("fixed"), ["/home/jupyter/out/today"])


def test_fixed_image_passes_every_check(fixed: dict[str, Result]) -> None:
    assert sorted(fixed) == ["IMG001", "IMG002", "IMG003", "IMG004"]
    assert {name: r.verdict.error for name, r in fixed.items() if not r.passed} == {}


def test_img001_missing_library_names_the_distribution_and_the_package(broken: dict[str, Result]) -> None:
    verdict = broken["IMG001"].verdict
    assert verdict.outcome == "failed"
    assert f"/opt/conda/lib/python3.11/site-packages/{SO} of fastmath needs libgomp.so.1" in verdict.error
    assert "(Debian libgomp1, conda libgomp)" in verdict.error
    assert "apt-get install -y --no-install-recommends libgomp1" in verdict.hint
    assert "jupyterlab" not in verdict.error  # the base's own extensions resolve
    assert "libsib" not in verdict.error  # a vendored library's sibling in its .libs folder


def test_img002_missing_papermill_and_entrypoint(broken: dict[str, Result]) -> None:
    error = broken["IMG002"].verdict.error
    assert "papermill is not on PATH" in error
    assert "ENTRYPOINT '/usr/local/bin/start-notebook.sh' is not an executable file" in error
    assert "the kernel" not in error  # python3 and ipykernel are there
    assert "pip install papermill ipykernel" in broken["IMG002"].verdict.hint


def test_img003_batch_output_written_elsewhere(broken: dict[str, Result]) -> None:
    error = broken["IMG003"].verdict.error
    assert "nothing was written to AIP_MODEL_DIR" in error
    assert "written elsewhere: /data/model/predictions.json" in error
    assert "os.environ['AIP_MODEL_DIR']" in broken["IMG003"].verdict.hint


def test_img004_home_of_the_image_user_not_writable(broken: dict[str, Result]) -> None:
    error = broken["IMG004"].verdict.error
    assert "user jupyter" in error
    assert "HOME /home/jupyter is not writable" in error
    assert "/opt/results, which a notebook writes to, is not writable" in error
    assert "chown" in broken["IMG004"].verdict.hint


def test_failed_checks_are_evidence_and_fail_envctl_test(images: dict[str, str], tmp_path: Path) -> None:
    world = make_world(tmp_path, images["broken@"], ["passes.ipynb"])
    result = world.test("--json")
    assert result.returncode == 1, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    checks = {c["name"].split()[0]: c for c in report["checks"]}
    assert checks["IMG001"]["outcome"] == "failed" and checks["IMG001"]["hint"]
    assert "Traceback" not in result.stderr
    run_dir = Path(report["artifacts"])
    assert json.loads((run_dir / "summary.json").read_text())["checks"] == report["checks"]
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(run_dir / "junit.xml"))}
    assert suites[f"{world.image}.checks"].failures == 3  # IMG001, IMG002, IMG004 (no batch: section)
    (evidence,) = ledger_db.test_runs_for(world.ledger(), world.image, report["digest"])
    assert evidence.passed is False
    assert containers_with(f"org.envctl.image={world.image}") == []
