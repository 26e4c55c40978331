"""Pipeline runs in the ledger: ID, branch, SHA, start, end, verdict per image, log.

A run that was killed mid-way stays `running` with a PID that no longer lives; the
next run marks it `failed` and removes the containers its test runs left behind.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import docker.errors
import sqlalchemy as sa

from pipeline.build.engine import TRANSPORT_ERRORS
from pipeline.errors import UsageError
from pipeline.ledger.db import Ledger, _aware, now, pipeline_runs
from pipeline.testing.runner import RUN_LABEL, remove

RunState = Literal["running", "passed", "failed", "noop"]
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PipelineRun:
    run_id: str
    branch: str
    sha: str
    state: str
    verdicts: dict[str, Any]
    log: str
    pid: int | None
    host: str | None
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    reason: str | None = None  # why it ran, when not for a push (a base refresh)

    @classmethod
    def from_row(cls, row: Any) -> PipelineRun:
        return cls(
            run_id=row.run_id,
            branch=row.branch,
            sha=row.sha,
            state=row.state,
            verdicts=json.loads(row.verdicts or "{}"),
            log=row.log,
            pid=row.pid,
            host=row.host,
            trigger=row.trigger,
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at) if row.finished_at else None,
            reason=row.reason,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "branch": self.branch,
            "sha": self.sha,
            "state": self.state,
            "verdicts": self.verdicts,
            "log": self.log,
            "trigger": self.trigger,
            "reason": self.reason,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round((self.finished_at - self.started_at).total_seconds(), 2)
            if self.finished_at
            else None,
        }


def new_run_id() -> str:
    return f"p{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def log_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "pipelines" / f"{run_id}.log"


def start(
    ledger: Ledger, *, run_id: str, branch: str, sha: str, log: Path, trigger: str, reason: str | None = None
) -> None:
    with ledger.transaction() as conn:
        conn.execute(
            pipeline_runs.insert().values(
                run_id=run_id,
                branch=branch,
                sha=sha,
                state="running",
                verdicts="{}",
                log=str(log),
                pid=os.getpid(),
                host=socket.gethostname(),
                trigger=trigger,
                reason=reason,
                started_at=now(),
            )
        )


def finish(ledger: Ledger, run_id: str, state: RunState, verdicts: dict[str, Any]) -> None:
    with ledger.transaction() as conn:
        conn.execute(
            pipeline_runs.update()
            .where(pipeline_runs.c.run_id == run_id)
            .values(
                state=state, verdicts=json.dumps(verdicts, sort_keys=True, default=str), finished_at=now()
            )
        )


def listing(ledger: Ledger, limit: int = 50) -> list[PipelineRun]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(pipeline_runs).order_by(pipeline_runs.c.id.desc()).limit(limit)).all()
    return [PipelineRun.from_row(r) for r in rows]


def get(ledger: Ledger, run_id: str) -> PipelineRun:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(pipeline_runs).where(pipeline_runs.c.run_id.startswith(run_id, autoescape=True))
        ).all()
    if not rows:
        raise UsageError(f"no pipeline run {run_id!r}; `envctl pipeline list` shows them")
    if len(rows) > 1:
        raise UsageError(f"pipeline run {run_id!r} is ambiguous; give more characters")
    return PipelineRun.from_row(rows[0])


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return True
    return state != "Z"


def reap(ledger: Ledger, client: Any | None) -> list[str]:
    """Mark runs of this host whose process died as failed; remove their containers."""
    host = socket.gethostname()
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(pipeline_runs).where(pipeline_runs.c.state == "running", pipeline_runs.c.host == host)
        ).all()
    dead = [PipelineRun.from_row(r) for r in rows if not _alive(r.pid)]
    for run in dead:
        with ledger.transaction() as conn:
            conn.execute(
                pipeline_runs.update()
                .where(pipeline_runs.c.run_id == run.run_id, pipeline_runs.c.state == "running")
                .values(
                    state="failed",
                    finished_at=now(),
                    verdicts=json.dumps({**run.verdicts, "_": KILLED}),
                )
            )
        if client is not None:
            _remove_containers(client, run.run_id)
    return [r.run_id for r in dead]


KILLED = "the run was killed before it finished"


def _remove_containers(client: Any, run_id: str) -> None:
    """Remove what the killed run's test stage left; the engine may be gone too."""
    try:
        found = client.containers.list(all=True, filters={"label": RUN_LABEL})
    except (docker.errors.DockerException, *TRANSPORT_ERRORS) as e:
        log.warning("could not list the containers of run %s: %s", run_id, e)
        return
    for container in found:
        if str(container.labels.get(RUN_LABEL, "")).startswith(run_id):
            remove(container)
