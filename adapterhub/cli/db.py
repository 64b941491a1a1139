"""`adapterhub db`: apply and inspect the metadata store's migrations."""

from __future__ import annotations

import click

from ._common import json_option, print_json


@click.group()
def db() -> None:
    """Database migrations (also applied automatically on first use)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate to this revision.")
@json_option
def upgrade(revision: str, as_json: bool) -> None:
    """Migrate the database named by ADAPTERHUB_DATABASE_URL (default: the SQLite file in ADAPTERHUB_HOME)."""
    from ..sources import default_registry

    reg = default_registry(auto_migrate=False)
    rev = reg.db.upgrade(revision)
    print_json({"revision": rev}) if as_json else click.echo(f"database at revision {rev}")


@db.command()
@json_option
def current(as_json: bool) -> None:
    """Print the database's migration revision and the newest one this version ships."""
    from ..sources import default_registry
    from ..store.db import head_revision

    reg = default_registry(auto_migrate=False)
    cur, head = reg.db.current_revision(), head_revision()
    print_json({"current": cur, "head": head}) if as_json else click.echo(f"current {cur or '(empty)'}; head {head}")
