"""`adapterhub db`: apply and inspect the metadata store's migrations."""

from __future__ import annotations

import click


@click.group()
def db() -> None:
    """Database migrations (also applied automatically on first use)."""


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Migrate the database named by ADAPTERHUB_DATABASE_URL (default: the SQLite file in ADAPTERHUB_HOME)."""
    from ..sources import default_registry

    reg = default_registry(auto_migrate=False)
    click.echo(f"database at revision {reg.db.upgrade(revision)}")


@db.command()
def current() -> None:
    """Print the database's migration revision and the newest one this version ships."""
    from ..sources import default_registry
    from ..store.db import head_revision

    reg = default_registry(auto_migrate=False)
    click.echo(f"current {reg.db.current_revision() or '(empty)'}; head {head_revision()}")
