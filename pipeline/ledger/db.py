"""The ledger: the durable record of versions, test runs, pointers and every pointer move.

SQLAlchemy Core over a SQLite file by default, PostgreSQL by URL. The schema carries
its version in `schema_version` and migrates forward when opened behind; opening a
current ledger only reads it, so reads never wait for writers (SQLite runs in WAL mode).
Every write is one transaction: a crash leaves either the whole record or none of it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from pipeline.errors import ConfigError, Refused, Unavailable
from pipeline.ledger.model import REFRESH_LABEL as REFRESH_LABEL
from pipeline.ledger.model import STAGES, Event, Pointer, Stage, by_image_and_stage
from pipeline.ledger.model import TestRun as TestRun
from pipeline.ledger.model import Version as Version
from pipeline.ledger.model import _aware as _aware
from pipeline.ledger.model import now as now
from pipeline.ledger.model import reused_labels as reused_labels
from pipeline.ledger.quick import SQLITE_BUSY_MS

if TYPE_CHECKING:
    from pipeline.ledger.pointers import Change
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image", sa.String(128), nullable=False),
    sa.Column("sha", sa.String(40), nullable=False),
    sa.Column("tree", sa.String(40), nullable=False),
    sa.Column("inputs_key", sa.String(64), nullable=False),
    sa.Column("build_key", sa.String(64), nullable=False),
    sa.Column("digest", sa.String(71), nullable=False),
    sa.Column("image_ref", sa.String(512), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("reused_from", sa.String(40), nullable=True),
    sa.Column("labels", sa.Text, nullable=False, default="{}"),
    sa.Column("sbom", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("test_key", sa.String(64), nullable=True),
    sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True),  # its tags and manifest deleted
    sa.UniqueConstraint("image", "sha", name="uq_versions_image_sha"),
    sa.Index("ix_versions_build_key", "image", "build_key"),
    sa.Index("ix_versions_digest", "digest"),
)

test_runs = sa.Table(
    "test_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, unique=True),
    sa.Column("image", sa.String(128), nullable=False),
    sa.Column("sha", sa.String(40), nullable=False),
    sa.Column("digest", sa.String(71), nullable=False),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("summary", sa.Text, nullable=False, default="{}"),
    sa.Column("artifacts", sa.String(1024), nullable=False, default=""),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("test_key", sa.String(64), nullable=True),
    sa.Column("ran_on", sa.Text, nullable=True),  # JSON: local CPU, or the Vertex AI machine and accelerator
    sa.Index("ix_test_runs_digest", "image", "digest"),
)

environments = sa.Table(
    "environments",
    metadata,
    sa.Column("image", sa.String(128), primary_key=True),
    sa.Column("stage", sa.String(16), primary_key=True),
    sa.Column("sha", sa.String(40), nullable=True),
    sa.Column("digest", sa.String(71), nullable=True),
    sa.Column("generation", sa.Integer, nullable=False, default=0),
    sa.Column("pinned", sa.Boolean, nullable=False, default=False),
    sa.Column("pin_reason", sa.Text, nullable=True),
    sa.Column("pinned_by", sa.String(256), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("image", sa.String(128), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("from_sha", sa.String(40), nullable=True),
    sa.Column("to_sha", sa.String(40), nullable=True),
    sa.Column("from_digest", sa.String(71), nullable=True),
    sa.Column("to_digest", sa.String(71), nullable=True),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("ci_run_id", sa.String(256), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("forced", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_events_env", "image", "stage", "id"),
)

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, unique=True),
    sa.Column("branch", sa.String(255), nullable=False),
    sa.Column("sha", sa.String(40), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # running, passed, failed, noop
    sa.Column("verdicts", sa.Text, nullable=False, default="{}"),
    sa.Column("log", sa.String(1024), nullable=False, default=""),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("trigger", sa.String(32), nullable=False, default="manual"),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),  # why it ran, when not a push (a base refresh)
    sa.Index("ix_pipeline_runs_sha", "branch", "sha"),
)

signoffs = sa.Table(
    "signoffs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("image", sa.String(128), nullable=False),
    sa.Column("sha", sa.String(40), nullable=False),
    sa.Column("digest", sa.String(71), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Index("ix_signoffs_digest", "image", "digest"),
)


def _add_column(table: sa.Table, column: str) -> Callable[[Connection], None]:
    """A migration adding one nullable column (the first migration of a new ledger made it)."""

    def step(conn: Connection) -> None:
        if column in {c["name"] for c in sa.inspect(conn).get_columns(table.name)}:
            return
        kind = table.c[column].type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column} {kind}"))

    return step


# Each migration takes the schema from version i to i + 1; append, never edit.
MIGRATIONS: list[Callable[[Connection], None]] = [
    lambda conn: metadata.create_all(
        conn, tables=[versions, test_runs, environments, events], checkfirst=True
    ),
    lambda conn: metadata.create_all(conn, tables=[pipeline_runs], checkfirst=True),
    # The hash of the test inputs a test run used and a version would use (evidence).
    _add_column(test_runs, "test_key"),
    _add_column(versions, "test_key"),
    # Retention: when `envctl prune` deleted a version's tags and manifest (None: in the registry).
    _add_column(versions, "pruned_at"),
    # Why a pipeline ran, when not for a push: "base moved from sha256:… to sha256:…".
    _add_column(pipeline_runs, "reason"),
    # Testers' sign-offs on a staging version's digest (`envctl signoff`).
    lambda conn: metadata.create_all(conn, tables=[signoffs], checkfirst=True),
    # Where a test run ran (local CPU, or the Vertex AI machine and accelerator), as JSON.
    _add_column(test_runs, "ran_on"),
]
SCHEMA_VERSION = len(MIGRATIONS)
MIGRATION_LOCK = 0x656E76637472_6C  # a fixed advisory lock key for schema migrations
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for a denied grant or row-level policy


class Ledger:
    """One ledger database; open with `Ledger.open(url)`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def for_settings(cls, settings: Settings) -> Ledger:
        return cls.open(settings.ledger_url, password=settings.ledger_password)

    @classmethod
    def open(cls, url: str, *, password: str = "") -> Ledger:
        """Open (and migrate) the ledger at `url`; a password goes to the driver, never into the URL."""
        log.debug("opening the ledger at %s", _redact(url))
        if password and not url.startswith("postgresql"):
            raise ConfigError(
                f"ENVCTL_LEDGER_PASSWORD applies only to a PostgreSQL ledger URL, and the ledger is "
                f"{_redact(url)}; unset it, or set ENVCTL_LEDGER_URL to postgresql+psycopg://USER@HOST/DB"
            )
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            connect_args: dict[str, Any] = {"connect_timeout": 10} if url.startswith("postgresql") else {}
            if password:
                connect_args["password"] = password
            engine = sa.create_engine(url, future=True, pool_pre_ping=True, connect_args=connect_args)
            if engine.dialect.name == "sqlite":
                _sqlite_pragmas(engine)
            ledger = cls(engine)
            ledger.migrate()
        except (ArgumentError, NoSuchModuleError) as e:
            # exit 3: the ledger is a part that is unavailable until its URL is fixed
            raise Unavailable(
                f"ledger URL {_redact(url)} is not valid ({e}); fix ENVCTL_LEDGER_URL "
                "(e.g. sqlite:///PATH or postgresql+psycopg://USER@HOST/DB)"
            ) from e
        except (OperationalError, SQLAlchemyError, OSError) as e:
            raise Unavailable(
                f"the ledger at {_redact(url)} is unavailable: {str(e).splitlines()[0]}; "
                "check ENVCTL_LEDGER_URL"
            ) from e
        return ledger

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction; on SQLite it takes the write lock at once (BEGIN IMMEDIATE)."""
        try:
            with self.engine.connect() as conn:
                if self.engine.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.begin()
                try:
                    yield conn
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
        except OperationalError as e:
            raise Unavailable(
                f"the ledger at {_redact(str(self.engine.url))} is unavailable: {str(e).splitlines()[0]}; "
                "check ENVCTL_LEDGER_URL and that the database runs"
            ) from e
        except DBAPIError as e:
            if getattr(e.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise
            # A least-privilege role (see pipeline/ledger/roles.sql) was refused this write.
            raise Refused(
                f"the ledger does not let role {self.engine.url.username or '(default)'} make this change "
                f"({str(e.orig).splitlines()[0]}); nothing was changed. Run it with a role that may "
                "(README: PostgreSQL roles)"
            ) from e

    def migrate(self) -> None:
        """Bring the schema forward; a current schema is only read (no write lock, no advisory lock)."""
        if self._schema() == SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            if conn.dialect.name == "postgresql":
                # Processes opening a new database at once would race on CREATE TABLE;
                # SQLite's BEGIN IMMEDIATE already serialises them.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(schema_version.c.version)).scalar()
            if current is None:
                conn.execute(schema_version.insert().values(version=0))
                current = 0
            if current > SCHEMA_VERSION:
                raise Unavailable(
                    f"the ledger has schema {current}, newer than this envctl ({SCHEMA_VERSION}); "
                    "upgrade envctl"
                )
            for step in range(current, SCHEMA_VERSION):
                log.info("migrating the ledger schema %d -> %d", step, step + 1)
                MIGRATIONS[step](conn)
                conn.execute(schema_version.update().values(version=step + 1))

    def _schema(self) -> int | None:
        """The schema version, read without a lock; None when the ledger has no schema yet."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(schema_version.name):
                return None
            current = conn.execute(sa.select(schema_version.c.version)).scalar()
        if current is not None and current > SCHEMA_VERSION:
            raise Unavailable(
                f"the ledger has schema {current}, newer than this envctl ({SCHEMA_VERSION}); upgrade envctl"
            )
        return None if current is None else int(current)

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(schema_version.c.version)).scalar_one())

    # versions -----------------------------------------------------------------

    def get_version(self, image: str, sha: str) -> Version | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(versions).where(versions.c.image == image, versions.c.sha == sha)
            ).first()
        return Version.from_row(row) if row else None

    def find_by_build_key(self, image: str, build_key: str) -> Version | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(versions)
                .where(versions.c.image == image, versions.c.build_key == build_key)
                .order_by(versions.c.id)
                .limit(1)
            ).first()
        return Version.from_row(row) if row else None

    def list_versions(self, image: str) -> list[Version]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(versions).where(versions.c.image == image).order_by(versions.c.id)
            ).all()
        return [Version.from_row(r) for r in rows]

    def record_version(self, version: Version) -> Version:
        """Insert the version, or return the one already recorded for (image, sha)."""
        try:
            return self._record_version(version)
        except IntegrityError:
            # Another process recorded the same (image, sha) between our read and write.
            recorded = self.get_version(version.image, version.sha)
            if recorded is None:
                raise
            return recorded

    def _record_version(self, version: Version) -> Version:
        with self.transaction() as conn:
            row = conn.execute(
                sa.select(versions).where(versions.c.image == version.image, versions.c.sha == version.sha)
            ).first()
            if row is not None:
                return Version.from_row(row)
            conn.execute(
                versions.insert().values(
                    image=version.image,
                    sha=version.sha,
                    tree=version.tree,
                    inputs_key=version.inputs_key,
                    build_key=version.build_key,
                    digest=version.digest,
                    image_ref=version.image_ref,
                    size=version.size,
                    reused_from=version.reused_from,
                    labels=json.dumps(version.labels, sort_keys=True),
                    sbom=json.dumps(version.sbom, sort_keys=True),
                    created_at=version.created_at,
                    test_key=version.test_key,
                )
            )
        return version

    # what the move commands read and write (`pointers.MoveLedger`) ---------------

    def known_images(self) -> list[str]:
        with self.engine.connect() as conn:
            names: set[str] = set(conn.execute(sa.select(versions.c.image).distinct()).scalars())
            names |= set(conn.execute(sa.select(environments.c.image).distinct()).scalars())
        return sorted(names)

    def test_runs(self, image: str, digest: str) -> list[TestRun]:
        """Every test run of one digest, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(test_runs)
                .where(test_runs.c.image == image, test_runs.c.digest == digest)
                .order_by(test_runs.c.id)
            ).all()
        return [TestRun.from_row(r) for r in rows]

    def snapshot(self, image: str) -> dict[Stage, Pointer]:
        """Every environment of `image`, read without a lock (unset ones as empty pointers)."""
        found = {p.stage: p for p in self.pointers(image)}
        return {stage: found.get(stage) or Pointer.empty(image, stage) for stage in STAGES}

    def pointers(self, image: str | None = None) -> list[Pointer]:
        """Every environment that was ever set (or pinned), by image then stage order."""
        query = sa.select(environments)
        if image is not None:
            query = query.where(environments.c.image == image)
        with self.engine.connect() as conn:
            found = [Pointer.from_row(r) for r in conn.execute(query).all()]
        return by_image_and_stage(found)

    def history(self, image: str, stage: Stage | None = None) -> list[Event]:
        """Every event of an image (or one environment), oldest first."""
        query = sa.select(events).where(events.c.image == image)
        if stage is not None:
            query = query.where(events.c.stage == stage)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(events.c.id)).all()
        return [Event.from_row(r) for r in rows]

    def signers(self, image: str, digest: str) -> list[str]:
        from pipeline.ledger import signoffs

        return signoffs.people(signoffs.for_digest(self, image, digest))

    def apply(self, image: str, changes: list[Change]) -> list[Change]:
        from pipeline.ledger.pointers import apply_on

        with self.transaction() as conn:
            return apply_on(conn, image, changes)

    def set_pruned(self, image: str, digest: str, at: datetime | None) -> int:
        """Mark every version of `image` with `digest` pruned at `at` (None: back in the registry)."""
        with self.transaction() as conn:
            result = conn.execute(
                versions.update()
                .where(versions.c.image == image, versions.c.digest == digest)
                .values(pruned_at=at)
            )
        return int(result.rowcount or 0)


def _sqlite_pragmas(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are ours: BEGIN IMMEDIATE
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        _wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _wal(cursor: Any) -> None:
    """Put the ledger in WAL mode (kept in the file) unless it already is.

    Entering WAL mode on a new file can answer "database is locked" at once, without the
    busy handler, while another process creates the same ledger; two hooks that start
    together do. So it is retried until the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    delay = 0.01
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def record_test_run(ledger: Ledger, run: TestRun) -> None:
    with ledger.transaction() as conn:
        conn.execute(
            test_runs.insert().values(
                run_id=run.run_id,
                image=run.image,
                sha=run.sha,
                digest=run.digest,
                passed=run.passed,
                summary=json.dumps(run.summary, sort_keys=True, default=str),
                artifacts=run.artifacts,
                started_at=run.started_at,
                finished_at=run.finished_at,
                test_key=run.test_key,
                ran_on=None if run.ran_on is None else json.dumps(run.ran_on, sort_keys=True),
            )
        )


def test_runs_for(ledger: Ledger, image: str, digest: str) -> list[TestRun]:
    """Every test run of one digest, oldest first."""
    return ledger.test_runs(image, digest)
