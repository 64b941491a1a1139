"""Engine, sessions and migrations: one SQLite file by default, PostgreSQL when ADAPTERHUB_DATABASE_URL says so.

SQLite runs in WAL mode with a busy timeout, and write transactions start with BEGIN IMMEDIATE so concurrent
writers queue instead of failing half-way. Migrations (Alembic, shipped as `adapterhub.migrations`) are applied
on first use under a lock, so eight processes opening a new registry at once migrate it exactly once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseBusy, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

DATABASE_URL_ENV = "ADAPTERHUB_DATABASE_URL"
_WRITE_OPTION = "adapterhub_write"
SQLITE_BUSY_TIMEOUT_MS = 60_000
# How long a writer waits for another's lock before giving up with DatabaseBusy (SQLite busy_timeout, PostgreSQL
# lock_timeout); the environment variable overrides it (tests use a short one).
LOCK_TIMEOUT_ENV = "ADAPTERHUB_LOCK_TIMEOUT_MS"


def lock_timeout_ms() -> int:
    value = os.environ.get(LOCK_TIMEOUT_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else SQLITE_BUSY_TIMEOUT_MS


# The newest migration this version ships. Checked against Alembic's scripts by a test; knowing it here lets a
# registry that is already migrated open without importing Alembic (which costs ~0.1 s on every command).
SCHEMA_HEAD = "0007"


# Tables created by migrations but not declared in the ORM (SQLite's FTS5 index and its shadow tables).
UNMAPPED_TABLE_PREFIXES = ("adapters_fts",)


def include_name(name: str | None, type_: str, _parents: dict[str, str | None]) -> bool:
    """Alembic filter: leave the unmapped full-text tables out of ORM comparisons."""
    return not (type_ == "table" and name is not None and name.startswith(UNMAPPED_TABLE_PREFIXES))


def default_database_url(home: Path) -> str:
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{home / 'registry.db'}"


def _make_engine(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"bad database URL {url!r}", hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = lock_timeout_ms()
        engine = sa.create_engine(url, connect_args={"timeout": busy_ms / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so BEGIN IMMEDIATE below is what really runs.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "BEGIN")

        return engine
    if parsed.get_backend_name() == "postgresql":
        # A row or table lock held past the timeout fails the statement (55P03 -> DatabaseBusy) instead of waiting forever.
        # Planner settings for this session only: every registry query is a short index-driven read, so index probes
        # are costed as on SSDs (random_page_cost 1.1, PostgreSQL's advice for them) and no parallel workers are
        # started (their start costs more than these queries): a filtered, metric-sorted page went from 26-33 ms of hash
        # joins over every score to 5-8 ms of index probes at 100,000 adapters.
        options = f"-c lock_timeout={lock_timeout_ms()} -c random_page_cost=1.1 -c max_parallel_workers_per_gather=0"
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"options": options})
    raise StoreError(f"unsupported database {parsed.get_backend_name()!r}", hint="use SQLite or PostgreSQL")


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("adapterhub.migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


class Database:
    """A database URL made usable: engine, read sessions, write transactions, migrations."""

    def __init__(self, url: str, *, lock_dir: Path | None = None, auto_migrate: bool = True) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        self._lock_dir = lock_dir
        if auto_migrate:
            self.ensure_migrated()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        """A session for reads (and autoflushed writes the caller commits)."""
        return self._sessions()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back entirely on any error.

        A lock held by another writer past the busy timeout is DatabaseBusy (one line; HTTP 503), not a raw error."""
        try:
            with self._write_sessions() as s, s.begin():
                yield s
        except sa.exc.OperationalError as exc:
            if is_busy(exc):
                raise DatabaseBusy() from None
            raise

    def _stamped_revision(self) -> str | None:
        """The revision in alembic_version, read with plain SQL; None for an empty database."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def ensure_migrated(self) -> None:
        """Upgrade to head if needed; cheap when already there."""
        try:
            if self._stamped_revision() == SCHEMA_HEAD:
                return
        except sa.exc.OperationalError as exc:
            raise StoreError(
                f"cannot open database {self.engine.url!r}: {exc.orig}", hint="check the URL and that the server is running"
            ) from exc
        self.upgrade()

    def upgrade(self, revision: str = "head") -> str | None:
        """Apply migrations under a cross-process lock; returns the revision now in place."""
        from alembic import command

        with self._migration_lock() as conn:
            command.upgrade(alembic_config(conn), revision)
            conn.commit()
        return self.current_revision()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[Connection]:
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(b"adapterhub-migrate").digest()[:7], "big")
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield conn
                finally:
                    conn.rollback()
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        from filelock import FileLock

        db_path = self.engine.url.database or "memory"
        lock_path = (self._lock_dir or Path(db_path).parent) / ".migrate.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path), timeout=120), self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def is_busy(exc: BaseException) -> bool:
    """An OperationalError that means "another transaction holds the lock" (SQLite busy/locked, PostgreSQL lock
    timeouts, serialization failures and deadlocks): retrying later can succeed."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("55P03", "40001", "40P01", "57014"):
        return True
    text = str(orig or exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text
