"""The lint rules and image checks: ID, severity, what, why and the usual fix.

Kept free of heavy imports: the spec model validates `lint.ignore` against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    why: str
    fix: str


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "ENV001",
            "error",
            "package installed from the notebook",
            "a scheduled run starts from the image; installs made by hand in a session are gone "
            "and the run has no network",
            "add the package to the image (its Dockerfile or requirements file) and remove the install",
        ),
        Rule(
            "ENV002",
            "error",
            "import not provided by the image",
            "the module is not in the version's SBOM: the run fails with ModuleNotFoundError",
            "add the distribution that provides it to the image",
        ),
        Rule(
            "AUTH001",
            "error",
            "end-user credential flow",
            "scheduled runs use a service account: nobody is there to log in, and no user's "
            "gcloud credentials are in the container",
            "remove the login; grant the run's service account the roles it needs",
        ),
        Rule(
            "AUTH002",
            "warning",
            "Google Cloud client without an explicit project",
            "a service account may have no default project, so the client picks none or the wrong one",
            "pass project= explicitly (e.g. from an environment variable set in tests.env)",
        ),
        Rule(
            "ENVV001",
            "error",
            "environment variable read without a default",
            "the variable is set neither by the spec (tests.env) nor by the image; the scheduled "
            "run raises KeyError or gets None",
            "set it in tests.env or the Dockerfile (ENV), or give a default",
        ),
        Rule(
            "PATH001",
            "error",
            "path that exists only on someone's machine",
            "home folders and Workbench VM paths are not in the container, and a relative file "
            "that is not in the repository is not in the run's working folder",
            "commit the file beside the notebook and use a relative path, or read it from Cloud Storage",
        ),
        Rule(
            "INT001",
            "error",
            "interactive input",
            "a scheduled run is unattended: input(), getpass and click-to-run widgets wait forever",
            "make it a papermill parameter (a cell tagged `parameters`) or read it from the environment",
        ),
        Rule(
            "RES001",
            "error",
            "code that requires a GPU in an image without one",
            "the spec has no cloud.accelerator: the run has no GPU and the code fails or asserts",
            "fall back to the CPU (`'cuda' if torch.cuda.is_available() else 'cpu'`) or add "
            "cloud.accelerator to the spec",
        ),
    )
}

CHECKS: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        Rule(
            "IMG001",
            "error",
            "missing shared libraries",
            "a compiled extension needs a system library the image lacks; the import fails at run time",
            "install the system package that provides the library in the Dockerfile",
        ),
        Rule(
            "IMG002",
            "error",
            "prerequisites of a notebook run",
            "without a starting kernel Python, papermill and ipykernel, or with a missing entrypoint, "
            "no notebook can run",
            "install papermill and ipykernel in the image; fix ENTRYPOINT/CMD",
        ),
        Rule(
            "IMG003",
            "error",
            "batch contract",
            "batch jobs hand the container its locations in AIP_* variables; outputs written "
            "elsewhere are lost",
            "read AIP_MODEL_DIR and the other AIP_* variables and write the outputs there",
        ),
        Rule(
            "IMG004",
            "error",
            "the user of managed runs",
            "managed runs use the image's user and HOME (Workbench: jupyter); if HOME or the "
            "working folder isn't writable, the kernel and the notebooks can't write",
            "create the user's HOME and chown it (and the WORKDIR) in the Dockerfile",
        ),
    )
}
