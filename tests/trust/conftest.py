"""Fixtures for the trust tests: a real `adapterhub serve` per backend (SQLite file, fresh PostgreSQL database),
adapters big enough to interrupt, and the checks a crash must pass (fsck clean, no temp or partial files)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapterhub.fsutil import TMP_PREFIX
from adapterhub.hub.server.background import BackgroundHub, start_hub
from adapterhub.store.registry import Registry
from tests.factories import write_large_adapter
from tests.pg import fresh_database as new_postgres_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def fresh_database(backend: str) -> Iterator[str | None]:
    """None for SQLite (the hub's own file in its storage folder), else the URL of a new PostgreSQL database.

    The same skip/fail rule as the root `postgres_url` fixture: skipped locally without a server, failed under CI.
    """
    if backend == "sqlite":
        yield None
        return
    with new_postgres_database("ah_trust") as url:
        yield url


def serve(home: Path, db_url: str | None, *args: str, open_hub: bool = True) -> BackgroundHub:
    """`adapterhub serve` over `home` (blob store) and `db_url` (None: SQLite in `home`).

    `open_hub` passes `--open` (anonymous callers may write: the crash and input tests push without tokens); tests
    of access control pass False and use tokens."""
    return start_hub(home, args=[*(["--database-url", db_url] if db_url else []), *(["--open"] if open_hub else []), *args])


def hub_registry(home: Path, db_url: str | None) -> Registry:
    return Registry(home=home, database_url=db_url)


def big_adapter(folder: Path, *, seed: int = 0, layers: int = 4, width: int = 2048, rank: int = 64) -> Path:
    """A valid PEFT LoRA big enough that hashing, uploads and copies can be cut part-way."""
    return write_large_adapter(folder, seed=seed, layers=layers, width=width, rank=rank)


def leftovers(home: Path) -> list[Path]:
    """Temp files a crash could leave: blob-store temp files, hub upload scratch, atomic-write temp names.

    A live hub's own empty scratch folder and its lock file are not leftovers; any file inside a scratch folder is.
    """
    found = []
    for p in home.rglob("*"):
        rel = p.relative_to(home).parts
        if p.name.startswith(TMP_PREFIX) or (rel[:2] == ("blobs", "tmp") and len(rel) > 2):
            found.append(p)
        elif rel[0] == "hub-uploads" and len(rel) > 1 and not (len(rel) == 2 and (p.is_dir() or p.suffix == ".lock")):
            found.append(p)
    return found


def assert_store_consistent(reg: Registry, names: Sequence[str] = ()) -> None:
    """fsck clean; every blob at a final path hashes to its name; every hub commit's files are present;
    version numbers of `names` run 1..N without gaps or duplicates."""
    report = reg.fsck()
    assert report.clean, (report.missing, report.corrupt)
    for digest in reg.blobs.iter_digests():
        assert reg.blobs.verify(digest), f"partial blob {digest}"  # re-hashed, on the local folder and on S3
    from adapterhub.store.orm import HubCommitFileRow

    with reg.db.session() as s:
        for sha256 in s.scalars(sa.select(HubCommitFileRow.sha256).distinct()):
            assert reg.blobs.has(sha256), f"hub commit file {sha256} has no blob"
    for name in names:
        try:
            versions = sorted(c.version for c in reg.versions(name))
        except LookupError:
            versions = []
        assert versions == list(range(1, len(versions) + 1)), (name, versions)
