"""`adapterhub token create --expires` refuses zero, negative and malformed lifetimes with one line and exit 2, and
creates nothing: `--expires 0h` used to make a token that never expires (a zero timedelta read as "no expiry")."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from adapterhub.cli import main
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore, parse_duration

from .conftest import BACKENDS, fresh_database


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("text", ["0h", "0d", "0w", "00h", "-1d", "-0h", "1.5d", "1 d", "12", "h", "99999999w", "1y"])
def test_non_positive_or_malformed_expiry_is_refused(backend: str, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database(backend) as db_url:
        if db_url:
            monkeypatch.setenv("ADAPTERHUB_DATABASE_URL", db_url)
        result = CliRunner().invoke(main, ["token", "create", "--namespace", "alice", "--scope", "write", "--expires", text])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "bad duration" in result.output
        reg = Registry()
        try:
            assert TokenStore(reg.db).list(include_revoked=True) == []  # nothing created
        finally:
            reg.db.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_positive_expiry_sets_an_expiry(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database(backend) as db_url:
        if db_url:
            monkeypatch.setenv("ADAPTERHUB_DATABASE_URL", db_url)
        result = CliRunner().invoke(main, ["token", "create", "--namespace", "alice", "--scope", "write", "--expires", "1h", "--json"])
        assert result.exit_code == 0, result.output
        reg = Registry()
        try:
            (info,) = TokenStore(reg.db).list()
            assert info.expires_at is not None and info.expires_at > info.created_at
        finally:
            reg.db.dispose()


def test_parse_duration_units() -> None:
    assert parse_duration("12h").total_seconds() == 12 * 3600
    assert parse_duration(" 2w ").days == 14
    with pytest.raises(ValueError):
        parse_duration("0h")
