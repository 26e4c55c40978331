"""The data of a test run: what a container did, how each notebook ended, the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal[
    "passed",
    "failed",
    "timeout",
    "oom",
    "kernel_died",
    "missing_module",
    "papermill_missing",
    "malformed",
    "infrastructure",
    "quota",
    "image_pull",
]
#: Outcomes that say a part failed, not the version: such a run records no evidence.
INFRASTRUCTURE: frozenset[str] = frozenset({"infrastructure", "quota", "image_pull"})
#: Where a run ran, when it says nothing else: a local container on the CPU.
LOCAL_CPU: dict[str, Any] = {"backend": "local", "machine": "cpu", "accelerator": None}
Kind = Literal["notebook", "smoke", "check"]


@dataclass(frozen=True, kw_only=True)
class ContainerExit:
    """How one container ended; `exit_code` is None when it never ran to an exit."""

    exit_code: int | None = None
    oom_killed: bool = False
    deadline_hit: bool = False
    start_error: str = ""
    logs: str = ""
    seconds: float = 0.0
    changes: tuple[str, ...] = ()  # paths added or changed outside the mounts, when asked for


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """A classified result: the outcome, a one-line hint and where it went wrong."""

    outcome: Outcome
    hint: str = ""
    error: str = ""
    cell_index: int | None = None
    execution_count: int | None = None
    line: int | None = None
    source_line: str = ""

    def where(self, *, count: bool = True) -> str:
        """`cell 3, In [4], line 2` (0-based cell of the committed notebook); "" when unknown."""
        if self.cell_index is None:
            return ""
        run = f", In [{self.execution_count}]" if count and self.execution_count is not None else ""
        return f"cell {self.cell_index}{run}" + (f", line {self.line}" if self.line else "")


@dataclass(frozen=True, kw_only=True)
class Result:
    """One notebook or smoke check of a run. Artifact paths are relative to the run folder."""

    name: str
    kind: Kind
    verdict: Verdict
    seconds: float
    execution_seconds: float | None = None
    exit_code: int | None = None
    notebook: str | None = None
    html: str | None = None
    log: str | None = None
    warnings: tuple[str, ...] = ()
    html_error: str = ""  # why an executed notebook has no HTML rendering (not in the report)

    @property
    def passed(self) -> bool:
        return self.verdict.outcome == "passed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self.verdict)
        data.update(
            name=self.name,
            kind=self.kind,
            passed=self.passed,
            seconds=round(self.seconds, 3),
            execution_seconds=None if self.execution_seconds is None else round(self.execution_seconds, 3),
            exit_code=self.exit_code,
            notebook=self.notebook,
            html=self.html,
            log=self.log,
            warnings=list(self.warnings),
        )
        return data


@dataclass(frozen=True, kw_only=True)
class TestReport:
    """The results of one run of one version, and where its artifacts are."""

    __test__ = False  # not a pytest class

    run_id: str
    image: str
    sha: str
    digest: str
    image_ref: str
    artifacts: Path
    results: tuple[Result, ...]
    warnings: tuple[str, ...] = field(default=())
    started_at: str = ""
    finished_at: str = ""
    checks: tuple[Result, ...] = ()  # the image checks (IMG001-IMG004), before the notebooks
    kept_at: str = ""  # where the artifacts are kept besides `artifacts` (gs://…/<run id>/), if anywhere
    # Where it ran: {"backend": "local", "machine": "cpu", ...} or the Vertex AI machine and accelerator.
    ran_on: dict[str, Any] = field(default_factory=lambda: dict(LOCAL_CPU))

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in (*self.results, *self.checks))

    @property
    def infrastructure_failed(self) -> bool:
        """A part (engine, registry) failed during the run: the run says nothing of the version."""
        return any(r.verdict.outcome in INFRASTRUCTURE for r in (*self.results, *self.checks))

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.verdict.outcome] = counts.get(result.verdict.outcome, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "image": self.image,
            "sha": self.sha,
            "digest": self.digest,
            "image_ref": self.image_ref,
            "passed": self.passed,
            "counts": self.counts(),
            "artifacts": str(self.artifacts),
            "artifacts_url": self.kept_at or None,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "warnings": list(self.warnings),
            "results": [r.to_json() for r in self.results],
            "checks": [r.to_json() for r in self.checks],
            "ran_on": self.ran_on,
        }
