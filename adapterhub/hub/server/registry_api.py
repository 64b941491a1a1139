"""The registry's own JSON API beside the Hub API: search (task, base hash, rank range, score thresholds, tags,
sorted by a score) and cards with versions, aliases and lineage. Bodies are the pydantic types of `adapterhub.card`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from ...card import AdapterCard, AdapterRef, SearchQuery, SearchResult
from ...errors import AdapterNotFound, RepoNotFound, UsageError
from ...store.visibility import Visibility
from .access import Caller
from .context import HubContext, context

router = APIRouter(prefix="/api/adapterhub")


def _parse_min_scores(items: list[str]) -> dict[str, float]:
    """`dataset/metric:value` (or `=value`) query items -> {"dataset/metric": value}."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.replace("=", ":").rpartition(":")
        try:
            if not sep or "/" not in key:
                raise ValueError
            out[key] = float(value)
        except ValueError:
            raise UsageError(f"bad min_score {item!r}", hint="use DATASET/METRIC:VALUE, e.g. sst2/accuracy:0.9") from None
    return out


def visible_search(ctx: HubContext, caller: Caller | None, query: SearchQuery, count_limit: int | None = None) -> SearchResult:
    """Registry search as `caller` (None: anonymous) sees it: adapters of private hub repositories it may not read
    are filtered inside the SQL, so `total` counts only what it could open. `base` is never a path on the server.
    The one search every remote view (this API, web pages) goes through; pages count only up to `count_limit`."""
    visibility = caller.visibility if caller is not None else Visibility.public_only()
    return ctx.registry.search(query, visibility=visibility, local_paths=False, count_limit=count_limit)


def visible_adapter(ctx: HubContext, caller: Caller | None, namespace: str, name: str, selector: str | None = None) -> AdapterRef:
    """The reference `namespace/name[@selector]` if `caller` may see that adapter. The text is parsed strictly first
    and visibility is decided on the parsed name, the one the lookup uses; a hidden adapter fails exactly like a
    missing one (same status, same message)."""
    ref = AdapterRef.parse(f"{namespace}/{name}" + (f"@{selector}" if selector is not None else ""))
    try:
        repo = ctx.hub.repo(ref.namespace, ref.name)
    except RepoNotFound:
        return ref  # not a hub repository: a registry adapter, public
    visibility = caller.visibility if caller is not None else Visibility.public_only()
    if not visibility.may_read(repo.namespace, repo.private):
        raise AdapterNotFound(str(ref))  # the registry's own message for a missing name or version
    return ref


def _search(request: Request, query: SearchQuery) -> SearchResult:
    ctx = context(request)
    return visible_search(ctx, ctx.access.caller(request), query)


@router.post("/search")
def search_post(query: SearchQuery, request: Request) -> SearchResult:
    """The lossless form `remote_search` uses: a SearchQuery as JSON."""
    return _search(request, query)


@router.get("/search")
def search_get(
    request: Request,
    text: str | None = None,
    task: str | None = None,
    base: str | None = None,
    rank_min: int | None = None,
    rank_max: int | None = None,
    min_score: list[str] = Query(default=[]),
    tag: list[str] = Query(default=[]),
    method: str | None = None,
    sort: str | None = None,
    limit: int = 20,
    offset: int = 0,
    all_versions: bool = False,
) -> SearchResult:
    """The same search from a URL: `?task=sentiment&min_score=sst2/accuracy:0.9&sort=sst2/accuracy`."""
    try:
        query = SearchQuery.model_validate({
            "text": text, "task": task, "base": base, "rank_min": rank_min, "rank_max": rank_max,
            "min_scores": _parse_min_scores(min_score), "tags": tag, "method": method, "sort": sort, "limit": limit,
            "offset": offset, "all_versions": all_versions,
        })  # fmt: skip
    except ValidationError as exc:  # a 400 like the POST form's, not a 500
        first = exc.errors()[0]
        raise UsageError(f"bad search: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    return _search(request, query)


@router.get("/adapters/{namespace}/{name}")
def adapter(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """The newest card plus every version, the aliases (alias -> version) and each version's lineage."""
    ctx = context(request)
    ref = visible_adapter(ctx, ctx.access.caller(request), namespace, name)
    versions = ctx.registry.versions(ref.full_name)
    aliases = {a: c.version for c in versions for a in c.aliases}
    return {
        "card": versions[0].model_dump(mode="json"),
        "versions": [v.model_dump(mode="json") for v in versions],
        "aliases": aliases,
        "lineage": {str(v.version): v.lineage.model_dump(mode="json") if v.lineage else None for v in versions},
    }


@router.get("/adapters/{namespace}/{name}/{selector}")
def adapter_version(namespace: str, name: str, selector: str, request: Request) -> AdapterCard:
    """One version by number or alias (`3`, `latest`, `prod`)."""
    ctx = context(request)
    return ctx.registry.get(visible_adapter(ctx, ctx.access.caller(request), namespace, name, selector))
