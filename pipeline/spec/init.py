"""`envctl init`: scaffold a repository for a new image, or import an existing layout.

An existing layout is the one the upgrade-process document's sample repository has: a
root `Dockerfile` FROM a Deep Learning Containers image, test notebooks in
`test_notebooks/`, and Cloud Build files whose substitution `_IMAGE_NAME` names the
image. Import moves the Dockerfile to docker/<image>/, makes its base a build argument
(`ARG BASE_IMAGE` + `FROM ${BASE_IMAGE}`, the original FROM kept as the spec's cloud
base) and writes the spec; the notebooks stay where they are.

Everything is planned first and written only after the plan holds, so a refusal leaves
nothing half-written. A file that exists is never overwritten without `force`; a plan
whose every file is already as it would be written is "nothing to do".
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from pipeline.errors import UsageError, shown
from pipeline.spec.model import check_image_name, spec_path

DEFAULT_GCP_BASE = "us-docker.pkg.dev/deeplearning-platform-release/gcr.io/base-cpu.py310"
GITIGNORE_LINES = (".envctl/",)
NOTEBOOK_DIR_RE = re.compile(r"^tests?[-_]?notebooks$")
FROM_RE = re.compile(r"^(\s*FROM\s+)((?:--\S+\s+)*)(\S+)(.*)$", re.IGNORECASE)
COPIES_CONTEXT_RE = re.compile(r"^\s*(COPY|ADD)\s+(?!.*--from=)", re.IGNORECASE)


@dataclass
class Action:
    """One file init writes: new content at `path`, or `source` moved there (with new content)."""

    kind: Literal["write", "move"]
    path: str
    data: bytes
    source: str = ""
    why: str = ""
    mode: int | None = None  # a copied file's permission bits
    append: bool = False  # .gitignore: the file's own lines stay, init's are added at the end
    needs: bytes = b""  # an existing file without this is not what init writes (offer --force)


@dataclass
class Plan:
    image: str
    actions: list[Action] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # existing files the user edited, left as they are
    stale: list[str] = field(default_factory=list)  # existing files lacking what envctl relies on
    notes: list[str] = field(default_factory=list)  # what to check next


def _template(name: str) -> bytes:
    return resources.files("pipeline.spec").joinpath("templates", name).read_bytes()


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode()
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from e


def _image_name(name: str, where: str) -> str:
    try:
        return check_image_name(name)
    except ValueError as e:
        raise UsageError(f"invalid image name {shown(name)} ({where}): {e}") from e


def substituted_image_names(folder: Path) -> dict[str, str]:
    """`_IMAGE_NAME` of each Cloud Build file at the top of `folder`, by file name."""
    found: dict[str, str] = {}
    for path in sorted([*folder.glob("cloudbuild*.yaml"), *folder.glob("cloudbuild*.yml")]):
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        substitutions = data.get("substitutions") if isinstance(data, dict) else None
        value = substitutions.get("_IMAGE_NAME") if isinstance(substitutions, dict) else None
        if isinstance(value, str) and value.strip():
            found[path.name] = value.strip()
    return found


def parametrize_base(dockerfile: str) -> tuple[str, str]:
    """The Dockerfile with its final stage's base taken from `ARG BASE_IMAGE`, and the original base.

    In a multi-stage file the final stage may start FROM an earlier stage; its external
    base (followed through the stage names) is the one parametrized. `ARG BASE_IMAGE`
    goes before the first FROM, the only place a FROM line can see it.
    """
    lines = dockerfile.splitlines(keepends=True)
    froms: list[tuple[int, re.Match[str]]] = []
    for i, line in enumerate(lines):
        match = FROM_RE.match(line.rstrip("\n"))
        if match:
            froms.append((i, match))
    if not froms:
        raise UsageError(
            "the Dockerfile has no FROM line; add the Deep Learning Containers image it derives from"
        )
    stages: dict[str, int] = {}  # stage name -> index in froms
    for k, (_, match) in enumerate(froms):
        named = re.match(r"\s+AS\s+(\S+)", match.group(4), re.IGNORECASE)
        if named:
            stages[named.group(1).lower()] = k
    chosen = len(froms) - 1
    seen: set[int] = set()
    while froms[chosen][1].group(3).lower() in stages and chosen not in seen:
        seen.add(chosen)
        chosen = stages[froms[chosen][1].group(3).lower()]
    i, match = froms[chosen]
    prefix, flags, ref, rest = match.groups()
    if ref in ("${BASE_IMAGE}", "$BASE_IMAGE"):
        declared = re.search(r"^\s*ARG\s+BASE_IMAGE=(\S+)", "".join(lines[:i]), re.MULTILINE | re.IGNORECASE)
        return dockerfile, declared.group(1) if declared else ""
    if "$" in ref:
        raise UsageError(
            f"the Dockerfile's base {ref} is a build argument; write the Deep Learning Containers "
            "image itself in its final stage's FROM, or ARG BASE_IMAGE=<image> and FROM ${BASE_IMAGE}"
        )
    header = (
        "# envctl passes BASE_IMAGE from the spec's build.base: the local stand-in here,\n"
        "# the Deep Learning Containers image below on Google Cloud.\n"
        f"ARG BASE_IMAGE={ref}\n"
    )
    newline = "\n" if lines[i].endswith("\n") else ""
    lines[i] = f"{prefix}{flags}${{BASE_IMAGE}}{rest}{newline}"
    first = froms[0][0]
    return "".join(lines[:first]) + header + "".join(lines[first:]), ref


def spec_text(image: str, *, dockerfile: str, context: str, local: str, gcp: str, notebooks: str) -> str:
    gpu = re.search(r"gpu|cu\d", gcp.rsplit("/", 1)[-1]) is not None
    accelerator = (
        "  # The cloud base is a GPU image: set the accelerator its notebooks need on Google Cloud,\n"
        "  # e.g. accelerator: {type: NVIDIA_TESLA_T4, count: 1}. Local tests run on CPU.\n"
        if gpu
        else "  # Set accelerator: {type: ..., count: 1} when the notebooks need a GPU on Google Cloud.\n"
    )
    return (
        f"# Written by `envctl init`; see README.md for every key.\n"
        f"image: {image}\n"
        f"description: ''\n"
        f"build:\n"
        f"  dockerfile: {dockerfile}\n"
        f"  context: {context}\n"
        f"  base:\n"
        f"    # The local stand-in, built by `envctl stack up` from docker/base/.\n"
        f"    local: {local}\n"
        f"    # The real Deep Learning Containers image, used on Google Cloud.\n"
        f"    gcp: {gcp}\n"
        f"  args: {{}}\n"
        f"tests:\n"
        f"  notebooks:\n"
        f"    - {notebooks}\n"
        f"  # Seconds each cell may run (papermill); a whole notebook stops at timeout + 60.\n"
        f"  timeout: 600\n"
        f"  resources:\n"
        f"    memory: 2g\n"
        f"    cpus: 1\n"
        f"  network: none\n"
        f"cloud:\n"
        f"  machine_type: n1-standard-4\n"
        f"{accelerator}"
    )


def _notebooks(folder: Path) -> list[Path]:
    """The notebooks under `folder`, not those in hidden folders such as .ipynb_checkpoints."""
    return [
        p
        for p in folder.rglob("*.ipynb")
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def _notebook_dirs(folder: Path) -> list[Path]:
    return sorted(
        d for d in folder.iterdir() if d.is_dir() and NOTEBOOK_DIR_RE.match(d.name) and _notebooks(d)
    )


def _common(plan: Plan, repo: Path, ignored: tuple[str, ...] = ()) -> None:
    """cloudbuild/ and the .gitignore lines envctl needs (and `ignored`, an imported folder's)."""
    for branch in ("staging", "production"):
        plan.actions.append(
            Action("write", f"cloudbuild/{branch}.yaml", _template(f"cloudbuild-{branch}.yaml"))
        )
    ignore = repo / ".gitignore"
    current = _text(ignore) if ignore.is_file() else ""
    lines = current.splitlines()
    missing = [line for line in dict.fromkeys([*ignored, *GITIGNORE_LINES]) if line not in lines]
    text = (
        current + ("" if not current or current.endswith("\n") else "\n") + "".join(f"{m}\n" for m in missing)
    )
    plan.actions.append(Action("write", ".gitignore", text.encode(), why=", ".join(missing), append=True))


def scaffold(repo: Path, image: str, local_base: str) -> Plan:
    """A new image: spec, Dockerfile on the Deep Learning Containers CPU base, one notebook."""
    plan = Plan(_image_name(image, "--image"))
    notebooks = f"test-notebooks/{image}"
    plan.actions += [
        Action(
            "write",
            spec_path(image),
            spec_text(
                image,
                dockerfile=f"docker/{image}/Dockerfile",
                context=f"docker/{image}",
                local=local_base,
                gcp=DEFAULT_GCP_BASE,
                notebooks=f"{notebooks}/*.ipynb",
            ).encode(),
        ),
        Action(
            "write",
            f"docker/{image}/Dockerfile",
            _template("Dockerfile").replace(b"__IMAGE__", image.encode()),
            needs=b"${BASE_IMAGE}",
        ),
        Action("write", f"{notebooks}/smoke.ipynb", _template("smoke.ipynb")),
    ]
    _common(plan, repo)
    plan.notes += [
        f"add what the image needs to docker/{image}/Dockerfile",
        f"add test notebooks to {notebooks}/",
        "commit, then `envctl validate` and `envctl build "
        f"{image} --rev HEAD` / `envctl test {image} --rev HEAD`",
    ]
    return plan


def _is_venv(folder: Path) -> bool:
    """A virtual environment (venv or conda) or a bytecode cache: never part of a layout."""
    return (
        folder.name in ("venv", "__pycache__")
        or (folder / "pyvenv.cfg").is_file()
        or (folder / "conda-meta").is_dir()
    )


def _copied_files(source: Path, skipped: list[str]) -> list[Path]:
    """What `--from DIR` copies: a git repository's tracked files, else every file but those in
    hidden folders and virtual environments and hidden files other than .gitignore/.dockerignore.
    Symbolic links are never followed out of `source`; each one skipped is added to `skipped`."""
    if (source / ".git").exists():
        listed = subprocess.run(
            ["git", "-C", str(source), "ls-files", "-z"], capture_output=True, check=False
        )
        if listed.returncode != 0:
            raise UsageError(
                f"--from {source}: git ls-files failed: {listed.stderr.decode(errors='replace').strip()}"
            )
        candidates = [source / name for name in listed.stdout.decode().split("\0") if name]
    else:
        candidates = []
        for folder, dirs, files in os.walk(source):
            here = Path(folder)
            kept_dirs = []
            for d in sorted(dirs):
                if (here / d).is_symlink():
                    skipped.append((here / d).relative_to(source).as_posix())
                elif not d.startswith(".") and not _is_venv(here / d):
                    kept_dirs.append(d)
            dirs[:] = kept_dirs
            candidates += [
                here / f for f in files if not f.startswith(".") or f in (".gitignore", ".dockerignore")
            ]
    copied: list[Path] = []
    for path in sorted(candidates):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # tracked but deleted
        if stat.S_ISLNK(info.st_mode):
            target = path.resolve()
            if not target.is_relative_to(source) or not target.is_file():
                skipped.append(path.relative_to(source).as_posix())
                continue
        elif not stat.S_ISREG(info.st_mode):
            continue
        copied.append(path)
    return copied


def import_layout(repo: Path, source: Path, image: str | None, local_base: str) -> Plan:
    """An existing layout in `source` (the repository itself, or a folder copied into it)."""
    source = source.resolve()
    if not source.is_dir():
        raise UsageError(f"--from {source}: not a folder")
    in_place = source == repo
    if not in_place and repo.is_relative_to(source):
        raise UsageError(f"--from {source} contains the repository {repo}; give the folder to import")
    if not in_place and source.is_relative_to(repo):
        raise UsageError(
            f"--from {source} is inside the repository {repo}; run `envctl init --from .` in it, "
            "or give a folder outside the repository"
        )
    named = substituted_image_names(source)
    if image is None:
        distinct = sorted(set(named.values()))
        if len(distinct) > 1:
            listed = ", ".join(f"{v} ({k})" for k, v in named.items())
            raise UsageError(f"the Cloud Build files name several images ({listed}); choose one with --image")
        if not distinct:
            raise UsageError(
                f"no _IMAGE_NAME substitution in {source}/cloudbuild*.yaml; give --image TEAM.TASK"
            )
        image = _image_name(distinct[0], f"_IMAGE_NAME in {next(iter(named))}")
    else:
        image = _image_name(image, "--image")
    plan = Plan(image)
    target = f"docker/{image}/Dockerfile"
    root_dockerfile = source / "Dockerfile"
    if root_dockerfile.is_file():
        original = _text(root_dockerfile)
    elif (repo / target).is_file():
        original = _text(repo / target)  # imported before
    else:
        raise UsageError(f"no Dockerfile in {source}; init --from imports a root Dockerfile")
    dockerfile, gcp = parametrize_base(original)
    if not gcp:
        raise UsageError(
            f"{target}: FROM ${{BASE_IMAGE}} without a default; write ARG BASE_IMAGE=<cloud base>"
        )
    copies_context = any(COPIES_CONTEXT_RE.match(line) for line in original.splitlines())
    context = "." if copies_context else f"docker/{image}"

    ignored: tuple[str, ...] = ()
    if in_place:
        if root_dockerfile.is_file():
            plan.actions.append(
                Action("move", target, dockerfile.encode(), source="Dockerfile", needs=b"${BASE_IMAGE}")
            )
    else:
        skipped: list[str] = []
        for path in _copied_files(source, skipped):
            relative = path.relative_to(source).as_posix()
            if relative == "Dockerfile":
                plan.actions.append(
                    Action("write", target, dockerfile.encode(), why=f"from {path}", needs=b"${BASE_IMAGE}")
                )
            elif relative == ".gitignore":
                ignored = tuple(
                    line for line in path.read_text(errors="replace").splitlines() if line.strip()
                )
            else:
                try:
                    mode = path.stat().st_mode & 0o777
                    data = path.read_bytes()
                except OSError as e:
                    raise UsageError(f"--from: cannot read {path}: {e.strerror}") from e
                plan.actions.append(Action("write", relative, data, why=f"from {path}", mode=mode))

        if skipped:
            plan.notes.append(
                "not copied (symbolic links to folders or out of the folder): " + ", ".join(skipped)
            )
    found = _notebook_dirs(source)
    if found:
        folder = found[0].relative_to(source).as_posix()
        nested = any(p.parent != found[0] for p in _notebooks(found[0]))
        pattern = f"{folder}/**/*.ipynb" if nested else f"{folder}/*.ipynb"
        plan.notes.append(f"the test notebooks stay in {folder}/ (tests.notebooks: {pattern})")
    else:
        pattern = f"test-notebooks/{image}/*.ipynb"
        plan.actions.append(Action("write", f"test-notebooks/{image}/smoke.ipynb", _template("smoke.ipynb")))
        plan.notes.append(f"no test notebooks found: add yours to test-notebooks/{image}/")
    plan.actions.append(
        Action(
            "write",
            spec_path(image),
            spec_text(
                image, dockerfile=target, context=context, local=local_base, gcp=gcp, notebooks=pattern
            ).encode(),
        )
    )
    _common(plan, repo, ignored)
    if copies_context:
        plan.notes.append(
            f"the Dockerfile COPYs from the repository root, so build.context is '.': move those files "
            f"to docker/{image}/ and set build.context to docker/{image} to rebuild only when they change"
        )
    if re.search(r"gpu|cu\d", gcp.rsplit("/", 1)[-1]):
        plan.notes.append(
            f"{gcp} is a GPU image: set cloud.accelerator in {spec_path(image)} for Google Cloud"
        )
    if named:
        plan.notes.append(
            f"{', '.join(named)} still build a root Dockerfile: run the pipelines from cloudbuild/ "
            "(`envctl cloud setup`) and retire them"
        )
    plan.notes.append(
        f"commit, then `envctl validate`, `envctl build {image} --rev HEAD`, `envctl test {image} --rev HEAD`"
    )
    return plan


def _only_adds(path: Path, data: bytes) -> bool:
    """Whether writing `data` keeps the file's content as it is and adds to its end (.gitignore)."""
    return path.is_file() and data.startswith(path.read_bytes())


def _check_target(repo: Path, relative: str) -> None:
    path = repo / relative
    for folder in reversed(path.relative_to(repo).parents[:-1]):
        if (repo / folder).exists() and not (repo / folder).is_dir():
            raise UsageError(f"{folder.as_posix()} is not a folder; init writes {relative} inside it")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{relative} exists and is not a plain file; move it away and run init again")


def apply(repo: Path, plan: Plan, *, force: bool) -> list[str]:
    """Write the plan; return one line per change. Existing files that differ are kept unless
    `force`, but for .gitignore, whose missing lines are added. Every target is checked first."""
    todo: list[Action] = []
    for action in plan.actions:
        _check_target(repo, action.path)
        path = repo / action.path
        if path.is_file() and path.read_bytes() == action.data:
            if action.kind == "move" and (repo / action.source).exists():
                todo.append(action)  # the target is right; the source is left over
            continue
        if path.exists() and not force and not (action.append and _only_adds(path, action.data)):
            if action.needs and action.needs not in path.read_bytes():
                plan.stale.append(action.path)
            else:
                plan.kept.append(action.path)
            continue
        todo.append(action)
    done: list[str] = []
    for action in todo:
        path = repo / action.path
        path.parent.mkdir(parents=True, exist_ok=True)
        appended = action.append and _only_adds(path, action.data)
        existed = path.exists()
        temporary = path.with_name(f".{path.name}.envctl-init")
        try:
            temporary.write_bytes(action.data)
            if action.mode is not None:
                temporary.chmod(action.mode)
            temporary.replace(path)
        finally:
            temporary.unlink(missing_ok=True)
        if action.kind == "move":
            (repo / action.source).unlink()
            done.append(
                f"moved {action.source} to {action.path} (FROM ${{BASE_IMAGE}}, default: the original base)"
            )
        elif appended:
            done.append(f"added {action.why} to {action.path}")
        else:
            verb = "rewrote" if existed else "wrote"
            done.append(f"{verb} {action.path}" + (f" ({action.why})" if action.why else ""))
    return done


def init(
    repo: Path, *, image: str | None, source: Path | None, force: bool, local_base: str
) -> tuple[Plan, list[str]]:
    """Plan and apply `envctl init`; the plan's notes say what to check next."""
    if source is None:
        if image is None:
            raise UsageError(
                "give --image TEAM.TASK for a new image, or --from DIR to import an existing layout"
            )
        plan = scaffold(repo, image, local_base)
    else:
        plan = import_layout(repo, source, image, local_base)
    return plan, apply(repo, plan, force=force)
