"""Local commands never pay for the Google client libraries: they load only on the gcp backend."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, cli_env

PROBE = """
import sys
before = set(sys.modules)  # namespace stubs a google-*-nspkg.pth creates at interpreter start
import pipeline.cli.main
import pipeline.backends
import pipeline.publish.tags
from pathlib import Path
from pipeline.backends import publisher_for
from pipeline.settings import Settings
publisher_for(Settings(repo=Path(".")))  # the local publisher (its registry client checks the host)
publisher_for(Settings(repo=Path("."), registry="europe-west4-docker.pkg.dev/p/r"))  # OCI client on AR: ADC only when challenged
loaded = sorted(m for m in set(sys.modules) - before if m == "google" or m.startswith("google."))
print(",".join(loaded))
"""


def test_cli_start_imports_no_google_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported at CLI start: {done.stdout.strip()}"
