"""The registry's own JSON API beside the Hub API: search (task, base hash, rank range, score thresholds, tags,
sorted by a score) and cards with versions, aliases and lineage. Bodies are the pydantic types of `adapterhub.card`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from ...card import AdapterCard, SearchQuery, SearchResult
from ...errors import RepoNotFound, UsageError
from .app import context

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


def _hidden(request: Request) -> set[str]:
    """Private hub repositories the caller may not read: their adapters are left out of every answer here."""
    ctx = context(request)
    repos, _ = ctx.hub.list_repos(limit=1_000_000)
    private = [r for r in repos if r.private]
    if not private:
        return set()
    caller = ctx.access.caller(request)
    return {r.repo_id for r in private if caller is None or not caller.may(r.namespace, write=False)}


def _search(request: Request, query: SearchQuery) -> SearchResult:
    """Registry search without the caller's hidden adapters (searched in a wider window, then cut to `limit`)."""
    reg, hidden = context(request).registry, _hidden(request)
    if not hidden:
        return reg.search(query)
    wide = reg.search(query.model_copy(update={"limit": 1000}))
    items = [c for c in wide.items if c.full_name not in hidden]
    return SearchResult(query=query, total=wide.total - (len(wide.items) - len(items)), items=items[: query.limit])


def _check_visible(request: Request, namespace: str, name: str) -> None:
    """A private hub repository's adapter is RepoNotFound to a caller who may not read it, as on the Hub API."""
    if f"{namespace}/{name}" in _hidden(request):
        raise RepoNotFound(f"{namespace}/{name}")


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
    all_versions: bool = False,
) -> SearchResult:
    """The same search from a URL: `?task=sentiment&min_score=sst2/accuracy:0.9&sort=sst2/accuracy`."""
    try:
        query = SearchQuery.model_validate({
            "text": text, "task": task, "base": base, "rank_min": rank_min, "rank_max": rank_max,
            "min_scores": _parse_min_scores(min_score), "tags": tag, "method": method, "sort": sort, "limit": limit,
            "all_versions": all_versions,
        })  # fmt: skip
    except ValidationError as exc:  # a 400 like the POST form's, not a 500
        first = exc.errors()[0]
        raise UsageError(f"bad search: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    return _search(request, query)


@router.get("/adapters/{namespace}/{name}")
def adapter(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """The newest card plus every version, the aliases (alias -> version) and each version's lineage."""
    _check_visible(request, namespace, name)
    reg = context(request).registry
    versions = reg.versions(f"{namespace}/{name}")
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
    _check_visible(request, namespace, name)
    return context(request).registry.get(f"{namespace}/{name}@{selector}")
