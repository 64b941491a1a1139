"""Migrations: what Alembic builds from an empty database is exactly what the ORM declares, on both databases."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from adapterhub.store import db as dbmod
from adapterhub.store.db import Database
from adapterhub.store.orm import all_metadata


def test_empty_database_migrated_to_head_matches_the_orm(database_url: str) -> None:
    database = Database(database_url)  # migrates on first use
    with database.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": dbmod.include_name})
        diffs = compare_metadata(ctx, all_metadata())
    database.dispose()
    assert diffs == []


def test_schema_head_constant_matches_the_scripts() -> None:
    assert dbmod.SCHEMA_HEAD == dbmod.head_revision()


def test_upgrade_is_idempotent_and_reports_revision(database_url: str) -> None:
    database = Database(database_url, auto_migrate=False)
    assert database.current_revision() is None
    assert database.upgrade() == dbmod.SCHEMA_HEAD
    assert database.upgrade() == dbmod.SCHEMA_HEAD
    database.dispose()


def test_bad_database_url_is_one_clear_error(tmp_path: Path) -> None:
    from adapterhub.errors import StoreError

    with pytest.raises(StoreError):
        Database("mysql://nobody@nowhere/x")
    with pytest.raises(StoreError):
        Database("not a url")


@pytest.mark.slow
def test_migrations_ship_inside_the_wheel(tmp_path: Path) -> None:
    """Build the wheel the way pip would and check the Alembic scripts are in it as adapterhub/migrations."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("adapterhub-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "adapterhub/migrations/env.py" in names
    assert "adapterhub/migrations/script.py.mako" in names
    versions = {Path(n).name for n in names if n.startswith("adapterhub/migrations/versions/") and n.endswith(".py")}
    shipped = {p.name for p in (root / "migrations" / "versions").glob("*.py")}
    assert versions == shipped
    assert any(n.startswith("adapterhub/data/") for n in names) or not any((root / "adapterhub" / "data").iterdir())


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'r.db'}")
    with database.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    database.dispose()
