"""What the web pages may show a caller: the registry JSON API's rule (a private hub repository exists only for a
caller whose token may read its namespace), applied without loading every repository per request.

TEMPORARY twin of registry_api._search/_hidden, kept fast for pages of 100 results at 100,000 adapters: when the
API's SQL-side `visible_search` lands, these two functions should call it and this module shrinks to that.
"""

from __future__ import annotations

from fastapi import Request

from ...card import SearchQuery, SearchResult
from ...store.browse import private_repos
from ..server.access import Caller
from ..server.app import context

MAX_WINDOW = 1000  # SearchQuery's own limit


def caller(request: Request) -> Caller | None:
    """The request's caller, decided once per request (token lookups are database queries)."""
    if not hasattr(request.state, "web_caller"):
        request.state.web_caller = context(request).access.caller(request)
    return request.state.web_caller  # type: ignore[no-any-return]


def hidden(request: Request, namespace: str | None = None) -> set[str]:
    """`ns/name` of the private hub repositories (of `namespace`, when given) this caller may not read."""
    who = caller(request)
    if who is not None and who.namespace == "*":
        return set()  # reads every namespace: nothing to hide, no query
    if not hasattr(request.state, "web_private"):
        request.state.web_private = private_repos(context(request).registry.db)
    return {
        f"{ns}/{name}" for ns, name in request.state.web_private
        if (namespace is None or ns == namespace) and (who is None or not who.may(ns, write=False))
    }  # fmt: skip


def search(request: Request, query: SearchQuery) -> SearchResult:
    """Registry search without the caller's hidden adapters. The window starts at `limit` and grows by the hidden
    ones it held until it has `limit` visible matches (or all of them, or the registry's 1,000): usually one query,
    since hidden adapters are few and rarely on the page asked for."""
    reg, hide = context(request).registry, hidden(request)
    if not hide:
        return reg.search(query)
    size = query.limit
    while True:
        window = reg.search(query.model_copy(update={"limit": size}))
        items = [c for c in window.items if c.full_name not in hide]
        seen_hidden = len(window.items) - len(items)
        if len(items) >= query.limit or len(window.items) < size or size >= MAX_WINDOW:
            return SearchResult(query=query, total=window.total - seen_hidden, items=items[: query.limit])
        size = min(MAX_WINDOW, query.limit + seen_hidden)
