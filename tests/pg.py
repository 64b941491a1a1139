"""A fresh PostgreSQL database per test or module, on the server named by ADAPTERHUB_TEST_POSTGRES_URL."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def fresh_database(prefix: str = "ah_test") -> Iterator[str]:
    """Create a database, yield its URL, drop it. Skips locally without a server; under CI (CI=true) that fails."""
    base = os.environ.get("ADAPTERHUB_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CI=true but ADAPTERHUB_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL")
        pytest.skip(
            "PostgreSQL tests need ADAPTERHUB_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5433/postgres); `make test-pg` starts one"
        )
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
