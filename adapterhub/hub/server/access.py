"""Who may do what on the hub: bearer tokens from `adapterhub token create` (namespace + read/write scope, stored
hashed) and static `serve --token` tokens (write on every namespace).

Without a valid token a caller is anonymous and may only read public repositories, whatever the token table holds
(revoking the last token does not reopen the hub). Only a hub started with `serve --open` lets anonymous callers
read and write everything: an explicit choice for a single-user local hub, announced when it starts. Private
repositories are visible only to tokens that may read their namespace; to everyone else they do not exist
(RepoNotFound), as on the Hub.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import cast

from fastapi import Request

from ...card import TokenScope
from ...errors import PermissionDenied, RepoNotFound, Unauthenticated
from ...store.db import Database
from ...store.tokens import TokenStore
from ...store.visibility import Visibility
from ..types import HubRepo

OPEN_HUB_USER = "adapterhub"
WEB_TOKEN_COOKIE = "adapterhub_token"  # set by the web page's /login (HttpOnly, SameSite=Strict); read-only use


@dataclass(frozen=True)
class Caller:
    user: str
    namespace: str  # the namespace the token works on; "*" for all
    write: bool
    key: str = ""  # which credential this is (one token, one static secret, the open hub): uploads are staged per key

    def may(self, namespace: str, *, write: bool) -> bool:
        return self.namespace in ("*", namespace) and (self.write or not write)

    @property
    def visibility(self) -> Visibility:
        """The private repositories this caller may read, as the store's listing and search filter."""
        return Visibility.all() if self.namespace == "*" else Visibility.of(self.namespace)

    @property
    def home_namespace(self) -> str:
        """Where `create_repo("name")` without a namespace goes."""
        return self.namespace if self.namespace != "*" else self.user


_OPEN = Caller(OPEN_HUB_USER, "*", True, "open")
_UNSET = object()


class Access:
    def __init__(self, db: Database, static_tokens: dict[str, str] | None = None, *, open_hub: bool = False) -> None:
        self.tokens = TokenStore(db)
        self.static = dict(static_tokens or {})  # secret -> user name
        self.open_hub = open_hub  # `serve --open`: callers without a valid token may do everything

    def caller(self, request: Request) -> Caller | None:
        """The caller's rights from its bearer token; without a valid one None (anonymous), or full rights on an
        open hub (where a stray token, e.g. one meant for huggingface.co, must not lock the owner out)."""
        known = request.scope.get("adapterhub.caller", _UNSET)  # one token lookup per request, however many checks
        if known is not _UNSET:
            return cast("Caller | None", known)
        auth = request.headers.get("authorization", "")
        secret = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not secret and request.method in ("GET", "HEAD"):  # the web login cookie: never for writes (no CSRF)
            secret = request.cookies.get(WEB_TOKEN_COOKIE, "").strip()
        caller = self._from_token(secret) if secret else None
        caller = _OPEN if caller is None and self.open_hub else caller
        request.scope["adapterhub.caller"] = caller
        return caller

    def visibility(self, request: Request) -> Visibility:
        """What this request may see of private repositories (public only for an anonymous caller)."""
        caller = self.caller(request)
        return caller.visibility if caller is not None else Visibility.public_only()

    def _from_token(self, secret: str) -> Caller | None:
        for known, user in self.static.items():
            if hmac.compare_digest(secret.encode(), known.encode()):
                return Caller(user, "*", True, f"static:{user}")
        info = self.tokens.verify(secret)
        if info is None:
            return None
        user = info.namespace if info.namespace != "*" else (info.label or info.prefix)
        write = info.allows(info.namespace, TokenScope.WRITE, now=datetime.now(timezone.utc))
        return Caller(user, info.namespace, write, f"token:{info.id}")

    def require_write(self, request: Request, namespace: str) -> Caller:
        caller = self.caller(request)
        if caller is None:
            raise Unauthenticated("writing to this hub needs a token", hint="pass token=... / set HF_TOKEN to a write token")
        if not caller.may(namespace, write=True):
            raise PermissionDenied(f"the token may not write to namespace {namespace!r}")
        return caller

    def check_readable(self, request: Request, repo: HubRepo) -> None:
        if repo.private and not self.can_read(request, repo):
            raise RepoNotFound(repo.repo_id)

    def can_read(self, request: Request, repo: HubRepo) -> bool:
        if not repo.private:
            return True
        caller = self.caller(request)
        return caller is not None and caller.may(repo.namespace, write=False)
