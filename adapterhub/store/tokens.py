"""Hub access tokens: created with a namespace and a scope, stored as sha256 hashes, revocable, optionally expiring.

The secret (`ah_...`) is returned once by `create`; afterwards only its hash and first characters are known, so a
leaked database does not leak working tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from ..card import TokenInfo, TokenScope
from ..errors import NotFound, UsageError
from ..fsutil import check_segment
from .db import Database
from .orm import TokenRow

TOKEN_PREFIX = "ah_"
_DURATION = re.compile(r"(\d{1,6})([hdw])")  # full match only; at most 999,999 units (a timedelta overflows beyond)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """`12h`, `30d`, `2w` -> timedelta. Zero, negative and malformed durations are refused: a token with
    `--expires 0h` must not quietly become a token that never expires."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise UsageError(f"bad duration {text!r}", hint="use a positive number followed by h, d or w, e.g. 30d")
    n, unit = int(m.group(1)), m.group(2)
    if n <= 0:
        raise UsageError(f"bad duration {text!r}: a token's lifetime must be positive", hint="use e.g. 12h or 30d; leave --expires out for no expiry")
    return {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]


def _utc(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def _info(row: TokenRow) -> TokenInfo:
    return TokenInfo(
        id=row.id, prefix=row.prefix, label=row.label, namespace=row.namespace, scope=TokenScope(row.scope),
        created_at=_utc(row.created_at), expires_at=_utc(row.expires_at), revoked_at=_utc(row.revoked_at),
    )  # fmt: skip


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, namespace: str, scope: TokenScope | str, *, label: str = "", expires_in: timedelta | None = None) -> tuple[TokenInfo, str]:
        """A new token; returns its info and the secret (shown once)."""
        if namespace != "*":
            check_segment(namespace, "namespace")
        try:
            scope = TokenScope(scope)
        except ValueError:
            raise UsageError(f"bad scope {scope!r}", hint="use read or write") from None
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(timezone.utc)
        with self.db.write() as s:
            row = TokenRow(
                token_hash=hash_token(secret), prefix=secret[:10], label=label, namespace=namespace, scope=scope.value,
                created_at=now, expires_at=now + expires_in if expires_in is not None else None,
            )  # fmt: skip
            s.add(row)
            s.flush()
            return _info(row), secret

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        with self.db.session() as s:
            q = sa.select(TokenRow).order_by(TokenRow.id)
            if not include_revoked:
                q = q.where(TokenRow.revoked_at.is_(None))
            return [_info(r) for r in s.scalars(q)]

    def revoke(self, token_id: int) -> TokenInfo:
        with self.db.write() as s:
            row = s.get(TokenRow, token_id)
            if row is None:
                raise NotFound(f"token {token_id} not found", hint="see `adapterhub token list`")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(timezone.utc)
            return _info(row)

    def verify(self, secret: str) -> TokenInfo | None:
        """The token's info when `secret` is a known, unrevoked, unexpired token; otherwise None."""
        if not secret:
            return None
        with self.db.session() as s:
            row = s.scalar(sa.select(TokenRow).where(TokenRow.token_hash == hash_token(secret)))
            if row is None:
                return None
            info = _info(row)
        now = datetime.now(timezone.utc)
        if info.revoked_at is not None or (info.expires_at is not None and info.expires_at <= now):
            return None
        return info
