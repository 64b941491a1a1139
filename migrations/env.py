"""Alembic environment: runs from code (adapterhub.store.db) with a live connection, or from `alembic` with a URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from adapterhub.store.db import include_name
from adapterhub.store.orm import all_metadata

config = context.config
target_metadata = all_metadata()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
