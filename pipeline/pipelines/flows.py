"""The staging and production pipelines, as a git hook or Cloud Build runs them.

Staging, for a commit S: every image gets a version of S. When S's inputs equal a
version that already passed its tests (by the one evidence rule, `promote.policy`), S
is recorded as a version of that digest (a manifest-level retag of `<image>:<S>`; no
build, no test run); else it is built or reused and tested. Then staging moves to S.
Production, for a commit P: each image gets the tested version whose inputs equal P's
and is promoted to production (fallback := the old production); it never builds.
A re-run whose ledger is already done republishes the tags the registry lost.
Images are independent; one image's pipeline holds a lock so that runs for the same
image queue instead of interleaving pointer writes.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import sqlalchemy as sa

from pipeline import notify, output
from pipeline.backends import Publisher, publisher_for, test_runner_for
from pipeline.build.stage import build_version, inputs_key
from pipeline.errors import BuildFailed, EnvctlError, Refused, Unavailable, UsageError
from pipeline.ledger.db import Ledger, Version, now, reused_labels, test_runs_for
from pipeline.ledger.pointers import EnvId, current
from pipeline.promote.moves import promote
from pipeline.promote.policy import evidence, evidence_for
from pipeline.publish.tags import TagState, repair
from pipeline.settings import Settings
from pipeline.source import GitTree
from pipeline.spec import model as spec_module
from pipeline.spec.keys import tests_key
from pipeline.spec.model import images_at
from pipeline.testing import Result, TestReport

log = logging.getLogger(__name__)

Branch = Literal["staging", "production"]
BRANCHES: tuple[Branch, ...] = ("staging", "production")
ImageState = Literal["promoted", "noop", "unchanged", "failed", "refused", "invalid", "error"]
GOOD: frozenset[str] = frozenset({"promoted", "noop", "unchanged"})


@dataclass
class ImageVerdict:
    image: str
    state: ImageState
    detail: str = ""
    sha: str | None = None
    digest: str | None = None
    built: str | None = None  # built, reused, existing
    tested: str | None = None  # test run ID
    artifacts: str | None = None  # where that run's artifacts are kept (a folder or gs://…/<run id>/)
    unavailable: bool = False
    lint: list[dict[str, Any]] = field(default_factory=list)  # `envctl lint` findings, before the build
    ran_on: dict[str, Any] | None = None  # where the deciding test run ran

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "detail": self.detail,
            "sha": self.sha,
            "digest": self.digest,
            "built": self.built,
            "test_run": self.tested,
            "artifacts": self.artifacts,
            "ran_on": self.ran_on,
            "lint": self.lint,
        }


@dataclass
class Outcome:
    verdicts: dict[str, ImageVerdict] = field(default_factory=dict)

    @property
    def state(self) -> Literal["passed", "failed", "noop"]:
        states = {v.state for v in self.verdicts.values()}
        if not states <= GOOD:
            return "failed"
        return "passed" if "promoted" in states else "noop"

    @property
    def exit_code(self) -> int:
        if self.state != "failed":
            return 0
        bad = [v for v in self.verdicts.values() if v.state not in GOOD]
        if all(v.unavailable for v in bad):
            return 3
        return 2 if all(v.state == "invalid" for v in bad) else 1


def check_branch(branch: str) -> Branch:
    for known in BRANCHES:
        if branch == known:
            return known
    raise UsageError(f"pipelines run for the branches staging and production, not {branch!r}")


@contextmanager
def image_lock(settings: Settings, ledger: Ledger, image: str) -> Iterator[None]:
    """Hold the image's pipeline lock: a second run for the same image waits here.

    With a PostgreSQL ledger the lock is a session advisory lock, so runs on different
    hosts (Cloud Build workers) queue too; with SQLite it is a file lock on this host.
    """
    if ledger.engine.dialect.name == "postgresql":
        with _advisory_lock(ledger, image):
            yield
        return
    folder = settings.state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{image}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            output.info(f"{image}: another pipeline holds this image; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _advisory_lock(ledger: Ledger, image: str) -> Iterator[None]:
    # Not the key of environments.lock_image: promotions inside this run take that one.
    key = int.from_bytes(hashlib.sha256(f"envctl-pipeline:{image}".encode()).digest()[:8], "big", signed=True)
    with ledger.engine.connect() as conn:
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            output.info(f"{image}: another pipeline holds this image; waiting for it")
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()


def _tested_same_inputs(ledger: Ledger, image: str, tree: GitTree, here: str, tests: str) -> Version | None:
    """The newest version with the inputs of `tree` whose evidence passes for `tree`'s commit."""
    for version in reversed(ledger.list_versions(image)):
        if version.inputs_key != here:
            continue
        if evidence(ledger, image, version.digest, sha=tree.sha, test_key=tests).passed:
            return version
    return None


def _retag(
    ledger: Ledger, publisher: Publisher, tree: GitTree, tested: Version, tests: str
) -> Version | None:
    """Record `tree`'s commit as a version of `tested`'s digest: `<image>:<sha>` by retag, no build."""
    if publisher.digest_of(tested.image, tested.digest) is None:
        output.warn(f"{tested.image_ref} is gone from the registry; building {tree.sha[:12]} instead")
        return None
    digest = publisher.tag(tested.image, tested.digest, tree.sha)
    version = replace(
        tested,
        sha=tree.sha,
        tree=tree.tree_sha,
        test_key=tests,
        digest=digest,
        image_ref=publisher.image_ref(tested.image, digest),
        reused_from=tested.reused_from or tested.sha,
        labels=reused_labels(tested.labels),
        pruned_at=None,
        created_at=now(),
    )
    return ledger.record_version(version)


def _republish(settings: Settings, ledger: Ledger, publisher: Publisher, version: Version) -> list[str]:
    """Put back the tags of a done commit that the registry lost: `<image>:<sha>` and `:staging`."""
    fixed = []
    if publisher.digest_of(version.image, version.sha) != version.digest:
        publisher.tag(version.image, version.digest, version.sha)
        fixed.append(publisher.tag_ref(version.image, version.sha))
    found: list[TagState] = []
    fixed += repair(ledger, publisher, version.image, ["staging"], found=found)
    notify.drifts(settings, publisher, found, repaired=True)
    return fixed


def _artifacts_of(ledger: Ledger, version: Version, run_id: str | None) -> str | None:
    """Where the artifacts of the test run `run_id` of `version`'s digest are kept."""
    found = [r for r in test_runs_for(ledger, version.image, version.digest) if r.run_id == run_id]
    return found[-1].artifacts or None if found else None


def _report_failures(report: TestReport) -> str:
    return "; ".join(_describe(result) for result in (*report.checks, *report.results) if not result.passed)


def _describe(result: Result) -> str:
    v = result.verdict
    where = f" at {v.where()}" if v.where() else ""
    error = f": {v.error}" if v.error else ""
    return f"{result.name} {v.outcome}{where}{error}"


def _print_report(image: str, report: TestReport) -> None:
    for result in (*report.checks, *report.results):
        mark = "ok  " if result.passed else "FAIL"
        output.info(f"  {mark} {result.name} ({result.seconds:.1f} s)")
        if not result.passed:
            v = result.verdict
            if v.where():
                output.info(f"       {v.where()}" + (f": {v.source_line.strip()}" if v.source_line else ""))
            if v.error:
                output.info(f"       error: {v.error}")
            output.info(f"       hint: {v.hint}")
    output.info(
        f"  artifacts: {report.artifacts}" + (f" (kept in {report.kept_at})" if report.kept_at else "")
    )


def _lint(spec: spec_module.Spec, tree: GitTree, ledger: Ledger, verdict: ImageVerdict) -> bool:
    """Lint the notebooks against the staging version's SBOM; False when an error blocks the build."""
    from pipeline.spec.lint.report import lines
    from pipeline.spec.lint.runner import lint_spec

    pointer = current(ledger, spec.image, "staging")
    at = ledger.get_version(spec.image, pointer.sha) if pointer is not None and pointer.sha else None
    report = lint_spec(spec, tree, sbom=at.sbom if at is not None else None)
    verdict.lint = [f.to_json() for f in report.findings]
    for line in lines(report):
        output.info(f"  {line}")
    if not report.errors:
        return True
    first = report.errors[0]
    verdict.state = "failed"
    verdict.detail = (
        f"lint found {len(report.errors)} error(s), staging unchanged: {first.rule} at {first.where()}: "
        f"{first.message}; fix: {first.fix}"
    )
    return False


def staging_image(
    settings: Settings,
    repo: Any,
    tree: GitTree,
    image: str,
    ledger: Ledger,
    run_id: str,
    *,
    force_all: bool,
    reason: str | None = None,
    allow_cpu: bool = False,
) -> ImageVerdict:
    verdict = ImageVerdict(image=image, state="noop", sha=tree.sha)
    try:
        spec = spec_module.load(tree, image)
    except UsageError as e:
        return ImageVerdict(image=image, state="invalid", detail=str(e).replace("\n", "; "), sha=tree.sha)
    with output.step(f"{image}: lint"):
        if not _lint(spec, tree, ledger, verdict):
            return verdict
    here, tests = inputs_key(spec, tree), tests_key(spec, tree)
    publisher = publisher_for(settings)
    pointer = current(ledger, image, "staging")
    done = ledger.get_version(image, tree.sha)
    if pointer is not None and pointer.sha == tree.sha and done is not None and not force_all:
        verdict.digest = done.digest
        verdict.detail = f"staging already points at {tree.sha[:12]}"
        fixed = _republish(settings, ledger, publisher, done)
        if fixed:
            verdict.detail += "; " + "; ".join(
                f"republished {ref}, which the registry had lost" for ref in fixed
            )
        return verdict
    tested = _tested_same_inputs(ledger, image, tree, here, tests) if done is None and not force_all else None
    version = _retag(ledger, publisher, tree, tested, tests) if tested is not None else None
    if tested is not None and version is not None:
        output.info(
            f"{image}: inputs equal {tested.sha[:12]}, which passed its tests; "
            f"{tree.sha[:12]} is a version of {version.digest[:19]} (retagged, no build, no test)"
        )
        verdict.built, verdict.digest = "reused", version.digest
        proof = evidence_for(ledger, version)
        verdict.tested, verdict.ran_on = proof.run_id, proof.ran_on
        verdict.artifacts = _artifacts_of(ledger, version, verdict.tested)
        return _to_staging(settings, ledger, version, run_id, verdict, reason)
    progress = output.BuildProgress()
    with output.step(f"{image}: build"):
        try:
            built = build_version(settings, repo, tree, image, ledger=ledger, on_line=progress)
        finally:
            progress.close()
    version = built.version
    verdict.built, verdict.digest = built.action, version.digest
    proof = evidence_for(ledger, version)
    passing = proof.run_id if proof.passed else None
    if passing is None:
        with output.step(f"{image}: test {version.digest[:19]}"):
            report = test_runner_for(settings, allow_cpu=allow_cpu).run(
                spec,
                tree,
                version,
                ledger=ledger,
                run_id=f"{run_id}.{image}",
                on_warning=output.warn,
            )
        verdict.tested, verdict.ran_on = report.run_id, report.ran_on
        verdict.artifacts = report.kept_at or str(report.artifacts)
        _print_report(image, report)
        if report.infrastructure_failed:
            raise Unavailable(
                f"the test run {report.run_id} hit an infrastructure error; no evidence recorded"
            )
        if not report.passed:
            verdict.state = "failed"
            verdict.detail = f"tests failed, staging unchanged: {_report_failures(report)}"
            return verdict
    else:
        output.info(f"{image}: {version.digest[:19]} already passed its tests ({passing}); not testing again")
        verdict.tested, verdict.ran_on = passing, proof.ran_on
        verdict.artifacts = _artifacts_of(ledger, version, passing)
    return _to_staging(settings, ledger, version, run_id, verdict, reason)


def _to_staging(
    settings: Settings,
    ledger: Ledger,
    version: Version,
    run_id: str,
    verdict: ImageVerdict,
    reason: str | None = None,
) -> ImageVerdict:
    why = f"pipeline {run_id}" + (f": {reason}" if reason else "")
    moved = promote(settings, ledger, EnvId(version.image, "staging"), version.sha, reason=why)
    verdict.state = "promoted" if moved.changed else "noop"
    verdict.detail = f"staging := {version.sha[:12]}" if moved.changed else "staging already there"
    verdict.detail += "".join(
        f"; republished {ref}, which the registry had lost" for ref in moved.republished
    )
    return verdict


def production_image(
    settings: Settings, tree: GitTree, image: str, ledger: Ledger, run_id: str
) -> ImageVerdict:
    try:
        spec = spec_module.load(tree, image)
    except UsageError as e:
        return ImageVerdict(image=image, state="invalid", detail=str(e).replace("\n", "; "), sha=tree.sha)
    here = inputs_key(spec, tree)
    candidates = [v for v in ledger.list_versions(image) if v.inputs_key == here]
    tested = [v for v in reversed(candidates) if evidence_for(ledger, v).passed]
    # Versions the registry still serves first; among them P's own (or a rebuild of it on a
    # moved base, newest first), then the newest.
    tested.sort(key=lambda v: (v.pruned_at is not None, v.origin != tree.sha))
    if not tested:
        why = "was built but never passed its tests" if candidates else "was never tested"
        return ImageVerdict(
            image=image,
            state="refused",
            sha=tree.sha,
            detail=(
                f"{image} as of {tree.sha[:12]} {why}; production takes only tested bytes. "
                f"Push it to staging first: `git push origin {tree.sha[:12]}:staging` "
                f"or `envctl pipeline run --branch staging --rev {tree.sha[:12]}`"
            ),
        )
    version = tested[0]
    moved = promote(
        settings,
        ledger,
        EnvId(image, "production"),
        version.sha,
        reason=f"pipeline {run_id} ({tree.sha[:12]})",
        spec=spec,
    )
    return ImageVerdict(
        image=image,
        state="promoted" if moved.changed else "noop",
        sha=version.sha,
        digest=version.digest,
        tested=evidence_for(ledger, version).run_id,
        ran_on=evidence_for(ledger, version).ran_on,
        detail=(
            f"production := {version.sha[:12]} (tested as {version.digest[:19]})"
            if moved.changed
            else "production already points at the tested version"
        )
        + "".join(f"; republished {ref}, which the registry had lost" for ref in moved.republished),
    )


def run_pipeline(
    settings: Settings,
    repo: Any,
    tree: GitTree,
    branch: Branch,
    ledger: Ledger,
    run_id: str,
    *,
    force_all: bool = False,
    only: dict[str, str] | None = None,
    allow_cpu: bool = False,
) -> Outcome:
    """Run `branch`'s pipeline for every image of `tree`, or for the images of `only` (image -> reason)."""
    outcome = Outcome()
    images = images_at(tree)
    if not images:
        raise UsageError(f"{tree.label} has no environments/*.yaml; nothing to run")
    if only is not None:
        images = [image for image in images if image in only]
    for image in images:
        # the image's events (moves, repairs, verdict) go out after its lock is released,
        # within one deadline
        with notify.deferred(settings):
            with image_lock(settings, ledger, image):
                try:
                    if branch == "staging":
                        verdict = staging_image(
                            settings,
                            repo,
                            tree,
                            image,
                            ledger,
                            run_id,
                            force_all=force_all,
                            reason=(only or {}).get(image),
                            allow_cpu=allow_cpu,
                        )
                    else:
                        verdict = production_image(settings, tree, image, ledger, run_id)
                except BuildFailed as e:
                    verdict = ImageVerdict(image=image, state="failed", detail=str(e), sha=tree.sha)
                except Refused as e:
                    verdict = ImageVerdict(image=image, state="refused", detail=str(e), sha=tree.sha)
                except Unavailable as e:
                    verdict = ImageVerdict(
                        image=image, state="error", detail=str(e), sha=tree.sha, unavailable=True
                    )
                except EnvctlError as e:
                    verdict = ImageVerdict(
                        image=image, state="failed", detail=str(e).replace("\n", " | "), sha=tree.sha
                    )
            outcome.verdicts[image] = verdict
            output.info(f"{image}: {verdict.state}" + (f": {verdict.detail}" if verdict.detail else ""))
            notify.send(
                settings,
                notify.verdict_event(
                    image=image,
                    branch=branch,
                    run_id=run_id,
                    state=verdict.state,
                    sha=verdict.sha,
                    digest=verdict.digest,
                    detail=verdict.detail,
                ),
            )
    return outcome
