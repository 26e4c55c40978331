"""The environment spec: `environments/<image>.yaml`, its model and its validation.

Every error names the file, the field, what is wrong and, where it can, the fix.
"""

from __future__ import annotations

import datetime
import difflib
import keyword
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import SpecError, shown
from pipeline.source import Tree, glob, leaves_tree
from pipeline.spec.lint.catalog import RULES
from pipeline.spec.names import IMAGE_RE as IMAGE_RE
from pipeline.spec.names import SPEC_DIR as SPEC_DIR
from pipeline.spec.names import STAGES as STAGES
from pipeline.spec.names import check_image_name as check_image_name
from pipeline.spec.names import spec_path as spec_path

MEMORY_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?[bkmg]?$", re.IGNORECASE)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Base(_Model):
    local: str = Field(min_length=1)
    gcp: str = Field(min_length=1)
    # A regular expression over the base repository's tags naming its releases (`^m(\\d+)$`);
    # `envctl bases` lists the tags whose numbers are above the current tag's.
    track: str | None = None

    @field_validator("track")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            compiled = re.compile(value)
        except re.error as e:
            raise ValueError(f"is not a regular expression: {e}") from e
        if compiled.groups < 1:
            raise ValueError(r"needs a group around the release number, e.g. ^m(\d+)$")
        return value


class Build(_Model):
    dockerfile: str
    context: str
    base: Base
    args: dict[str, str] = Field(default_factory=dict)

    @field_validator("dockerfile", "context")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in PurePosixPath(value).parts:
            raise ValueError("must be a path inside the repository, without '..'")
        return value.rstrip("/") or "."

    @field_validator("args")
    @classmethod
    def _no_base_override(cls, value: dict[str, str]) -> dict[str, str]:
        if "BASE_IMAGE" in value:
            raise ValueError("BASE_IMAGE comes from build.base; remove it from build.args")
        return value


class Resources(_Model):
    memory: str = "2g"
    cpus: float = Field(default=1.0, gt=0, le=64)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY_RE.match(value):
            raise ValueError("write a size such as 512m or 2g")
        return value.lower()

    @property
    def memory_bytes(self) -> int:
        units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
        value = self.memory
        unit = value[-1] if value[-1] in units else "b"
        return int(float(value.rstrip("bkmg")) * units[unit])


def _inside_repository(pattern: str) -> str:
    if not pattern.strip():
        raise ValueError("an empty pattern; write a path such as test-notebooks/IMAGE/*.ipynb")
    if leaves_tree(pattern):
        raise ValueError("must be a pattern inside the repository, without '..' or a leading '/'")
    return pattern


def _identifier(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            "not a Python identifier: papermill assigns each parameter to a variable of that name "
            "(letters, digits and '_', e.g. min_accuracy)"
        )
    return name


_NOT_JSON = {
    datetime.datetime: "a YAML timestamp",
    datetime.date: "a YAML date",
    set: "a YAML set",
    bytes: "YAML binary data",
    tuple: "a YAML tuple",
}


def _plain_json(value: Any, where: str = "") -> Any:
    """The value when it is plain JSON (null, true, a number, a string, a list, a mapping of strings)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}{value} is not a JSON number; quote it to pass a string")
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            _plain_json(item, f"{where}item {i}: ")
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}key {shown(key)} is not a string; quote it")
            _plain_json(item, f"{where}{key}: ")
        return value
    kind = next((k for t, k in _NOT_JSON.items() if isinstance(value, t)), type(value).__name__)
    fix = (
        "quote it ('2024-01-31') to pass a string"
        if isinstance(value, datetime.date)
        else "use null, true/false, a number, a string, a list or a mapping"
    )
    raise ValueError(f"{where}{kind} is not a plain JSON value; {fix}")


NotebookGlob = Annotated[str, AfterValidator(_inside_repository)]
ParameterName = Annotated[str, AfterValidator(_identifier)]
ParameterValue = Annotated[Any, AfterValidator(_plain_json)]
Parameters = dict[ParameterName, ParameterValue]


class Tests(_Model):
    notebooks: list[NotebookGlob] = Field(min_length=1)
    parameters: Parameters = Field(default_factory=dict)
    notebook_parameters: dict[str, Parameters] = Field(default_factory=dict)
    timeout: int = Field(default=600, gt=0, le=86400)
    kernel: str | None = None
    resources: Resources = Field(default_factory=Resources)
    network: Literal["none", "host"] = "none"
    smoke: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # notebook: a fresh container per notebook; run: one container for the run's notebooks
    isolation: Literal["notebook", "run"] = "notebook"

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not an environment variable name (letters, digits, _)")
        return value

    @field_validator("smoke")
    @classmethod
    def _commands(cls, value: list[str]) -> list[str]:
        for command in value:
            try:
                if not shlex.split(command):
                    raise ValueError("an empty command")
            except ValueError as e:
                raise ValueError(f"can't parse {command!r}: {e}") from e
        return value


class Lint(_Model):
    """`envctl lint` beyond the test notebooks: the users' own notebooks, rules turned off."""

    paths: list[NotebookGlob] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)

    @field_validator("ignore")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for rule in value:
            if rule not in RULES:
                close = difflib.get_close_matches(rule, list(RULES), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; rules: {', '.join(RULES)}"
                raise ValueError(f"unknown rule {rule!r}{hint}")
        return value


BATCH_ALWAYS = ("AIP_STORAGE_URI", "AIP_MODEL_DIR")


class Batch(_Model):
    """How a batch prediction job runs the image: its command and the AIP_* locations it reads.

    Every variable points at a mounted temporary folder; `outputs` must hold files afterwards.
    """

    command: list[str] = Field(default_factory=list)
    variables: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=lambda: ["AIP_MODEL_DIR"])
    timeout: int = Field(default=600, gt=0, le=86400)

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if value and not value[0].strip():
            raise ValueError("the program (first word) is empty")
        return value

    @field_validator("variables", "outputs")
    @classmethod
    def _aip(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.startswith("AIP_") or not ENV_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not an AIP_* variable (e.g. AIP_MODEL_DIR)")
        return value

    @property
    def all_variables(self) -> list[str]:
        return list(dict.fromkeys([*BATCH_ALWAYS, *self.variables, *self.outputs]))


ACCELERATOR_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
MACHINE_TYPE_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)+$")
SERVICE_ACCOUNT_RE = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]@[a-z0-9.-]+\.gserviceaccount\.com$")
NETWORK_RE = re.compile(r"^projects/[^/\s]+/global/networks/[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")


class Accelerator(_Model):
    """A GPU for the tests on Vertex AI, as Vertex names it (`nvidia-tesla-t4` reads as NVIDIA_TESLA_T4)."""

    type: str
    count: int = Field(default=1, ge=1, le=16)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        key = re.sub(r"[-\s]+", "_", value.strip()).upper()
        if not ACCELERATOR_RE.match(key):
            raise ValueError("write Vertex AI's accelerator type, e.g. NVIDIA_TESLA_T4 or NVIDIA_L4")
        return key

    def __str__(self) -> str:
        return f"{self.count} x {self.type}"


class Cloud(_Model):
    """Where the tests run on the gcp backend (one Vertex AI custom job per notebook).

    `timeout` is the seconds one notebook's job may run (Vertex's `Scheduling.timeout`:
    image pull, kernel start and every cell); None: tests.timeout + 600.
    `region` overrides the region of the settings (where the accelerator is offered).
    """

    machine_type: str = "n1-standard-4"
    accelerator: Accelerator | None = None
    service_account: str | None = None
    network: str | None = None
    timeout: int | None = Field(default=None, gt=0, le=604800)
    region: str | None = None

    @field_validator("machine_type")
    @classmethod
    def _machine_type(cls, value: str) -> str:
        if not MACHINE_TYPE_RE.match(value):
            raise ValueError("write a Compute Engine machine type, e.g. n1-standard-4 or g2-standard-8")
        return value

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        if value is not None and not SERVICE_ACCOUNT_RE.match(value):
            raise ValueError(
                "write a service account's email, e.g. notebook-tests@PROJECT.iam.gserviceaccount.com"
            )
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is not None and not NETWORK_RE.match(value):
            raise ValueError(
                "write the VPC network's full name, projects/PROJECT_NUMBER/global/networks/NAME"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not REGION_RE.match(value):
            raise ValueError("write a Google Cloud region, e.g. us-central1")
        return value


class ProductionRules(_Model):
    """What production asks of a version beyond passing evidence."""

    signoffs: int = Field(default=0, ge=0, le=20)  # distinct testers' `envctl signoff` on its digest


class Promotion(_Model):
    production: ProductionRules = Field(default_factory=ProductionRules)


class Spec(_Model):
    """One image family: how to build it and how to test it."""

    image: str
    description: str = ""
    build: Build
    tests: Tests
    cloud: Cloud = Field(default_factory=Cloud)
    lint: Lint = Field(default_factory=Lint)
    batch: Batch | None = None
    promotion: Promotion = Field(default_factory=Promotion)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image_name(value)

    def base_for(self, backend: str) -> str:
        return self.build.base.gcp if backend == "gcp" else self.build.base.local


@dataclass(frozen=True)
class Problem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}" if self.field else f"{self.file}: {self.message}"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return model


def _describe(error: Any) -> tuple[str, str]:
    loc: tuple[int | str, ...] = tuple(p for p in error["loc"] if p != "[key]")
    field = ".".join(str(p) for p in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
        return field, f"unknown key{hint}"
    if kind == "missing":
        return field, "required; add it"
    message = str(error["msg"]).removeprefix("Value error, ")
    if "input" in error and kind not in {"model_type", "dict_type"}:
        message += f" (got {shown(error['input'])})"
    return field, message


def parse(text: bytes | str, file: str) -> Spec:
    """Parse one spec, raising `SpecError` with every problem, one per line."""
    problems = parse_problems(text, file)
    if isinstance(problems, Spec):
        return problems
    raise SpecError("\n".join(str(p) for p in problems))


def parse_problems(text: bytes | str, file: str) -> Spec | list[Problem]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return [Problem(file, "", f"malformed YAML: {where}{problem}")]
    if not isinstance(data, dict):
        return [Problem(file, "", "must be a mapping with image, build and tests")]
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        described = [(tuple(err["loc"]), *_describe(err)) for err in e.errors()]
    # A misspelt key also shows up as a missing one; report the misspelling only.
    suggested = {
        (*loc[:-1], m.split("'")[1]) for loc, _, m in described if m.startswith("unknown key; did you mean")
    }
    return [
        Problem(file, field, message)
        for loc, field, message in described
        if not (message.startswith("required") and loc in suggested)
    ]


def check_files(spec: Spec, tree: Tree, file: str) -> list[Problem]:
    """Problems a spec has against the files of one tree."""
    problems: list[Problem] = []
    stem = PurePosixPath(file).name.removesuffix(".yaml").removesuffix(".yml")
    if spec.image != stem:
        problems.append(
            Problem(file, "image", f"'{spec.image}' does not match the file name; rename one to match")
        )
    if tree.read(spec.build.dockerfile) is None:
        problems.append(
            Problem(file, "build.dockerfile", f"{spec.build.dockerfile} does not exist in the {tree.label}")
        )
    if not tree.is_dir(spec.build.context) and spec.build.context != ".":
        problems.append(
            Problem(file, "build.context", f"{spec.build.context} is not a folder in the {tree.label}")
        )
    matched: set[str] = set()
    for i, pattern in enumerate(spec.tests.notebooks):
        hits = [f for f in glob(tree, pattern) if f.endswith(".ipynb")]
        if not hits:
            problems.append(Problem(file, f"tests.notebooks.{i}", f"'{pattern}' matches no .ipynb file"))
        matched.update(hits)
    names = {PurePosixPath(f).name for f in matched} | matched
    for name in spec.tests.notebook_parameters if matched else ():
        if name not in names:
            problems.append(
                Problem(
                    file,
                    f"tests.notebook_parameters.{name}",
                    "names no test notebook; use a notebook's file name or path",
                )
            )
    return problems


def notebooks(spec: Spec, tree: Tree) -> list[str]:
    found: set[str] = set()
    for pattern in spec.tests.notebooks:
        found.update(f for f in glob(tree, pattern) if f.endswith(".ipynb"))
    return sorted(found)


def lint_notebooks(spec: Spec, tree: Tree) -> list[str]:
    """The test notebooks and the users' notebooks under `lint.paths`."""
    found = set(notebooks(spec, tree))
    for pattern in spec.lint.paths:
        found.update(f for f in glob(tree, pattern) if f.endswith(".ipynb"))
    return sorted(found)


def spec_files(tree: Tree) -> list[str]:
    return [f for f in tree.files(SPEC_DIR) if f.endswith((".yaml", ".yml"))]


def images_at(tree: Tree) -> list[str]:
    """The images the tree's specs define, by name."""
    return sorted(PurePosixPath(f).stem for f in spec_files(tree))


def validate(tree: Tree, files: list[str] | None = None) -> tuple[list[Spec], list[Problem]]:
    """Every spec of the tree (or the given files), with every problem found."""
    specs: list[Spec] = []
    problems: list[Problem] = []
    chosen = files if files is not None else spec_files(tree)
    if not chosen:
        problems.append(Problem(SPEC_DIR, "", "no spec found; add environments/<TEAM.TASK>.yaml"))
    for file in chosen:
        text = tree.read(file)
        if text is None:
            problems.append(Problem(file, "", "no such file"))
            continue
        result = parse_problems(text, file)
        if isinstance(result, Spec):
            found = check_files(result, tree, file)
            problems.extend(found)
            if not found:
                specs.append(result)
        else:
            problems.extend(result)
    return specs, problems


def load(tree: Tree, image: str) -> Spec:
    """The spec of one image in a tree; `SpecError` naming what is wrong."""
    try:
        check_image_name(image)
    except ValueError as e:
        raise SpecError(f"invalid image name {shown(image)}: {e}") from e
    file = spec_path(image)
    text = tree.read(file)
    if text is None:
        known = [PurePosixPath(f).stem for f in spec_files(tree)]
        close = difflib.get_close_matches(image, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known) or 'none'}"
        raise SpecError(f"unknown image '{image}': no {file} in the {tree.label}{hint}")
    spec = parse(text, file)
    problems = check_files(spec, tree, file)
    if problems:
        raise SpecError("\n".join(str(p) for p in problems))
    return spec
