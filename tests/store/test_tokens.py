"""Hub tokens: hashed at rest, scoped to a namespace, revocable, expiring; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from adapterhub.card import TokenScope
from adapterhub.errors import InvalidReference, NotFound, UsageError
from adapterhub.store.orm import TokenRow
from adapterhub.store.tokens import TokenStore, hash_token, parse_duration


def test_token_lifecycle(registry) -> None:  # type: ignore[no-untyped-def]
    store = TokenStore(registry.db)
    info, secret = store.create("team", "write", label="ci")
    assert secret.startswith("ah_") and len(secret) > 40
    with registry.db.session() as s:
        stored = s.scalars(sa.select(TokenRow.token_hash)).all()
    assert stored == [hash_token(secret)] and secret not in str(stored)  # only the hash is kept
    got = store.verify(secret)
    now = datetime.now(timezone.utc)
    assert got is not None and got.id == info.id
    assert got.allows("team", TokenScope.WRITE, now=now) and got.allows("team", TokenScope.READ, now=now)
    assert not got.allows("other", TokenScope.READ, now=now)
    assert store.verify(secret + "x") is None and store.verify("") is None
    store.revoke(info.id)
    assert store.verify(secret) is None
    assert store.list() == [] and len(store.list(include_revoked=True)) == 1
    with pytest.raises(NotFound):
        store.revoke(999)


def test_read_scope_and_wildcard_and_expiry(registry) -> None:  # type: ignore[no-untyped-def]
    store = TokenStore(registry.db)
    _, reader = store.create("team", TokenScope.READ)
    _, admin = store.create("*", TokenScope.WRITE)
    now = datetime.now(timezone.utc)
    r = store.verify(reader)
    assert r.allows("team", TokenScope.READ, now=now) and not r.allows("team", TokenScope.WRITE, now=now)
    assert store.verify(admin).allows("anyone", TokenScope.WRITE, now=now)
    info, short = store.create("team", "read", expires_in=timedelta(hours=1))
    assert store.verify(short) is not None
    assert not info.allows("team", TokenScope.READ, now=now + timedelta(hours=2))
    with registry.db.write() as s:
        s.get(TokenRow, info.id).expires_at = now - timedelta(seconds=1)
    assert store.verify(short) is None


def test_bad_token_arguments(registry) -> None:  # type: ignore[no-untyped-def]
    store = TokenStore(registry.db)
    with pytest.raises(UsageError):
        store.create("team", "admin")
    with pytest.raises(InvalidReference):
        store.create("../etc", "read")
    with pytest.raises(UsageError):
        parse_duration("forever")
    assert parse_duration("2w") == timedelta(days=14)


def test_token_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from click.testing import CliRunner

    from adapterhub.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["token", "create", "--namespace", "team", "--scope", "read", "--json"])
    assert out.exit_code == 0
    created = json.loads(out.output)
    listed = json.loads(runner.invoke(main, ["token", "list", "--json"]).output)
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]
    assert runner.invoke(main, ["token", "revoke", str(created["id"])]).exit_code == 0
    assert json.loads(runner.invoke(main, ["token", "list", "--json"]).output) == []
    assert runner.invoke(main, ["token", "create", "--namespace", "team", "--scope", "root"]).exit_code == 2
    assert runner.invoke(main, ["token", "revoke", "42"]).exit_code == 1
