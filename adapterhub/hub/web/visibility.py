"""What the web pages may show a caller: the registry JSON API's rule (a private hub repository exists only for a
caller whose token may read its namespace), applied to the names a page is about to show (index probes), never by
loading every repository per request.

TEMPORARY twin of registry_api._search/_hidden, kept fast for pages of 100 results at 100,000 adapters: when the
API's SQL-side `visible_search` lands, these two functions should call it and this module shrinks to that.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request

from ...card import SearchQuery, SearchResult
from ...store.browse import private_repos
from ..server.access import Caller
from ..server.app import context

MAX_WINDOW = 1000  # SearchQuery's own limit
SLACK = 8  # extra matches fetched so that a few hidden ones on a page cost no second query


def caller(request: Request) -> Caller | None:
    """The request's caller, decided once per request (token lookups are database queries)."""
    if not hasattr(request.state, "web_caller"):
        request.state.web_caller = context(request).access.caller(request)
    return request.state.web_caller  # type: ignore[no-any-return]


def hidden(request: Request, names: Iterable[str]) -> set[str]:
    """Those of `names` (`ns/name`) that are private hub repositories this caller may not read."""
    who = caller(request)
    names = list(dict.fromkeys(names))
    if not names or (who is not None and who.namespace == "*"):
        return set()  # reads every namespace: nothing to hide, no query
    return {n for n in private_repos(context(request).registry.db, names) if who is None or not who.may(n.split("/", 1)[0], write=False)}


def search(request: Request, query: SearchQuery) -> SearchResult:
    """Registry search without the caller's hidden adapters. The window starts a little past `limit` and grows by
    the hidden ones it held until it has `limit` visible matches (or all of them, or the registry's 1,000): one
    query unless more than SLACK hidden adapters fall on the page asked for."""
    reg, size = context(request).registry, min(MAX_WINDOW, query.limit + SLACK)
    who = caller(request)
    if who is not None and who.namespace == "*":
        return reg.search(query)  # reads every namespace (an open hub, or a '*' token): nothing to hide
    while True:
        window = reg.search(query.model_copy(update={"limit": size}))
        hide = hidden(request, (c.full_name for c in window.items))
        items = [c for c in window.items if c.full_name not in hide]
        if len(items) >= query.limit or len(window.items) < size or size >= MAX_WINDOW:
            return SearchResult(query=query, total=window.total - len(hide), items=items[: query.limit])
        size = min(MAX_WINDOW, query.limit + len(hide) + SLACK)
