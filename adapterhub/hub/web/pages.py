"""The web pages: search (`/`), an adapter (`/{ns}/{name}`) with its card, versions, files, scores and lineage,
a base's adapters (`/bases/{fingerprint}`), compare (`/compare`) and a namespace (`/{ns}`).

Every page sees what the registry JSON API shows the same caller, through the same functions (`visible_search`,
`visible_adapter`, the store's SQL visibility filter): private adapters only with a read token (bearer header or
the login cookie). Bad input renders an HTML error page with a 4xx, never a traceback.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...card import MAX_SEARCH_OFFSET, AdapterCard, AdapterMethod, AdapterRef, EvalScore, SearchQuery, SearchResult
from ...errors import AdapterHubError, NotFound, UsageError
from ...fsutil import check_segment
from ...store.browse import children as lineage_children
from ..modelcard import body as card_body
from ..server.context import context
from ..server.registry_api import visible_adapter, visible_search
from .render import page, render_card, score_source
from .svg import Node, bar_chart, lineage_graph

router = APIRouter()
PER_PAGE = (20, 50, 100)
MAX_NAMESPACE = 1000  # adapters listed on a namespace page
MAX_COMPARE = 12
README = "README.md"
MAX_README_BYTES = 512 * 1024


def guarded(fn: Callable[..., Response]) -> Callable[..., Response]:
    """Registry errors become an HTML error page with the API's status (404 for anything not found or hidden)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return fn(*args, **kwargs)
        except AdapterHubError as exc:
            request = kwargs["request"]
            if isinstance(exc, (NotFound, LookupError)):
                return page(request, "error.html", 404, title="Not found", message=str(exc))
            status = 400 if isinstance(exc, (UsageError, ValueError)) else 500
            return page(request, "error.html", status, title="Cannot show this page", message=str(exc))

    return wrapper


COUNTED = 1_000  # a page counts matches up to this many (or ten pages past its own), then says "1,000+"


def search(request: Request, query: SearchQuery) -> SearchResult:
    """The registry search as this request's caller sees it (hidden adapters filtered in SQL). Matches are counted up to
    COUNTED or ten pages past this one: counting 100,000 matches exactly costs more than rendering the page."""
    ctx = context(request)
    return visible_search(ctx, ctx.access.caller(request), query, max(COUNTED, query.offset + 10 * query.limit))


def visible(request: Request, full_name: str) -> AdapterRef | None:
    """The adapter `ns/name` if this caller may see it (it need not exist), None if it is hidden or not a name."""
    ctx = context(request)
    namespace, _, name = full_name.partition("/")
    try:
        return visible_adapter(ctx, ctx.access.caller(request), namespace, name)
    except (AdapterHubError, LookupError, ValueError):
        return None


# --- search ----------------------------------------------------------------------------------------------------


def _int(params: dict[str, str], key: str, errors: list[str], *, lo: int = 0, hi: int = 1 << 30) -> int | None:
    raw = params.get(key, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{key} must be a whole number, not {raw!r}")
        return None
    if not lo <= value <= hi:
        errors.append(f"{key} must be between {lo} and {hi}")
        return None
    return value


def _metric(raw: str, errors: list[str]) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    dataset, sep, metric = raw.rpartition("/")
    if not sep or not dataset or not metric:
        errors.append(f"metric must look like DATASET/METRIC (e.g. sst2/accuracy), not {raw!r}")
        return None
    return raw


def parse_search(params: dict[str, str]) -> tuple[SearchQuery, int, int, list[str]]:
    """The search form's fields (all in the URL) -> (query for exactly this page, page, per page, errors)."""
    errors: list[str] = []
    metric = _metric(params.get("metric", ""), errors)
    sort_raw = params.get("sort", "").strip()
    sort = metric if sort_raw == "metric" else (_metric(sort_raw, errors) if "/" in sort_raw else None)
    if sort_raw == "metric" and metric is None and not errors:
        errors.append("sorting by a metric needs the metric field (DATASET/METRIC)")
    min_scores: dict[str, float] = {}
    min_raw = params.get("min", "").strip()
    if min_raw:
        try:
            threshold = float(min_raw)
            if not math.isfinite(threshold):
                raise ValueError
        except ValueError:
            errors.append(f"minimum score must be a number, not {min_raw!r}")
        else:
            if metric is None:
                errors.append("a minimum score needs the metric field (DATASET/METRIC)")
            else:
                min_scores[metric] = threshold
    method_raw = params.get("method", "").strip()
    method = None
    if method_raw:
        try:
            method = AdapterMethod(method_raw)
        except ValueError:
            errors.append(f"method must be one of {', '.join(m.value for m in AdapterMethod)}")
    per = _int(params, "per", errors, lo=1, hi=max(PER_PAGE)) or PER_PAGE[0]
    page_no = _int(params, "page", errors, lo=1, hi=last_page(per)) or 1
    tag = params.get("tag", "").strip()
    query = SearchQuery(
        text=params.get("q", "").strip()[:200] or None, task=params.get("task", "").strip()[:128] or None,
        base=params.get("base", "").strip()[:255] or None, rank_min=_int(params, "rank_min", errors),
        rank_max=_int(params, "rank_max", errors), min_scores=min_scores, tags=[tag[:64]] if tag else [],
        method=method, sort=sort, limit=per, offset=(page_no - 1) * per,
    )  # fmt: skip
    return query, page_no, per, errors


def last_page(per: int) -> int:
    """The deepest page a search can show: its offset may not pass SearchQuery's bound."""
    return MAX_SEARCH_OFFSET // per + 1


def page_count(total: int, per: int) -> int:
    return max(1, min(last_page(per), math.ceil(total / per)))


def best_scores(card: AdapterCard, first: str | None, n: int = 3) -> list[EvalScore]:
    """Up to `n` of the card's scores to show in a row: the searched/sorted metric first, then the rest in order."""
    ordered = sorted(card.scores, key=lambda s: (s.key != first, s.key))
    return ordered[:n]


@router.get("/")
@guarded
def search_page(request: Request) -> Response:
    params = {k: v for k, v in request.query_params.items()}
    query, page_no, per, errors = parse_search(params)
    items: list[AdapterCard] = []
    total, exact = 0, True
    if not errors:
        try:
            result = search(request, query)
        except UsageError as exc:
            errors.append(str(exc))
        else:
            total, exact, items = result.total, result.total_exact, result.items
    first = query.sort or next(iter(query.min_scores), None)
    pages = page_count(total, per)
    keep = {k: v for k, v in params.items() if v and k != "page"}

    def page_url(n: int) -> str:
        return "/?" + urlencode({**keep, "page": n})

    rows = [{"card": c, "scores": best_scores(c, first)} for c in items]
    return page(
        request, "search.html", 400 if errors else 200, title="Search adapters", params=params, errors=errors, rows=rows,
        total=total, exact=exact, page_no=page_no, pages=pages, per=per, per_choices=PER_PAGE, page_url=page_url, capped=pages * per < total,
        methods=[m.value for m in AdapterMethod], first_metric=first,
    )  # fmt: skip


# --- pages reached from search -----------------------------------------------------------------------------------


def _split_ref(ref: str) -> tuple[str, str, str]:
    name, _, version = ref.partition("@")
    return name, version, f"/{name}"


def _readme(request: Request, namespace: str, name: str, card: AdapterCard) -> str:
    """The model card Markdown: the hub repo's README.md at its head (front matter removed), else the description."""
    hub = context(request).hub
    try:
        _, commit = hub.resolve(namespace, name, "main")
        entry = next((f for f in hub.files(commit.id) if f.path == README), None)
        if entry is not None and entry.size <= MAX_README_BYTES:
            return card_body(hub.blob_bytes(entry).decode("utf-8", "replace"))
    except (AdapterHubError, OSError):
        pass
    return card.description


def _lineage(request: Request, card: AdapterCard) -> tuple[Any, list[Node], list[Node]] | None:
    """The graph of what `card` was made from and what was made from it, hidden adapters left unnamed or out."""
    reg = context(request).registry
    kids, merged = lineage_children(reg.db, card.full_name, visibility=context(request).access.visibility(request))
    parents: list[Node] = []
    if card.lineage is not None:
        for p in card.lineage.parents:
            name, version, href = _split_ref(p.ref)
            if visible(request, name) is None:
                parents.append(Node("(private adapter)", f"× {p.weight:g}", None, "parent"))
                continue
            try:
                reg.versions(name)
            except (AdapterHubError, LookupError, ValueError):
                parents.append(Node(name, f"v{version} × {p.weight:g} (not on this hub)", None, "parent"))
            else:
                parents.append(Node(name, f"v{version} × {p.weight:g}", href, "parent"))
        if not card.lineage.parents and card.lineage.base:
            bases = [b for b in reg.list_bases() if b.content_hash == card.lineage.base]
            label = bases[0].name if bases else card.lineage.base[:16]
            parents.append(Node(label, f"base ({card.lineage.method})", f"/bases/{card.lineage.base}", "base"))
    seen: set[str] = set()
    children: list[Node] = []
    for c in kids:  # hidden ones were left out by the query
        if c.full_name in seen:
            continue
        seen.add(c.full_name)
        method = c.lineage.method if c.lineage else ""
        children.append(Node(c.full_name, f"v{c.version} {method}", f"/{c.full_name}", "child"))
    for b in merged:
        children.append(Node(b.name, "merged base", f"/bases/{b.content_hash}", "base"))
    if not parents and not children:
        return None
    me = Node(card.full_name, f"v{card.version}" + (f" {card.lineage.method}" if card.lineage else ""), None, "self")
    return lineage_graph(parents, me, children), parents, children


@router.get("/compare")
@guarded
def compare_page(request: Request) -> Response:
    reg = context(request).registry
    names = list(dict.fromkeys(v.strip() for v in request.query_params.getlist("a") if v.strip()))[:MAX_COMPARE]
    task = request.query_params.get("task", "").strip()[:128]
    cards: list[AdapterCard] = []
    missing: list[str] = []
    for n in names:
        try:
            ref = visible(request, n) if n.count("/") == 1 else None
            if ref is None:
                raise NotFound(n)
            cards.append(reg.versions(ref.full_name)[0])
        except (AdapterHubError, LookupError, ValueError):
            missing.append(n)
    task = task or (cards[0].task if cards else "")
    candidates = search(request, SearchQuery(task=task, limit=100)).items if task else []
    metrics: dict[str, bool] = {}
    for c in cards:
        for s in c.scores:
            metrics.setdefault(s.key, s.higher_is_better)
    charts = [
        bar_chart(key, [(c.full_name, c.score(key)) for c in cards], higher_is_better=hib) for key, hib in sorted(metrics.items())
    ]
    sources = {(c.full_name, s.key): score_source(s) for c in cards for s in c.scores}
    mixed = len({c.task for c in cards}) > 1
    return page(
        request, "compare.html", title="Compare adapters", cards=cards, missing=missing, task=task, candidates=candidates,
        metrics=sorted(metrics), charts=charts, sources=sources, chosen=set(names), mixed=mixed,
    )  # fmt: skip


@router.get("/bases/{fingerprint}")
@guarded
def base_page(fingerprint: str, request: Request) -> Response:
    """Every adapter for one base (content or arch hash prefix), 100 a page, grouped by task within the page."""
    key = fingerprint.lower()
    if not (6 <= len(key) <= 64 and all(c in "0123456789abcdef" for c in key)):
        raise UsageError(
            f"{fingerprint[:80]!r} is not a base fingerprint", hint="use 6-64 hex characters of a content or arch hash"
        )
    reg = context(request).registry
    bases = [b for b in reg.list_bases() if b.content_hash.startswith(key) or b.arch_hash.startswith(key)]
    if not bases:
        raise NotFound(f"no base model with fingerprint {key}")
    errors: list[str] = []
    per = PER_PAGE[-1]
    page_no = _int(dict(request.query_params), "page", errors, lo=1, hi=last_page(per)) or 1
    result = search(request, SearchQuery(base=key, limit=per, offset=(page_no - 1) * per))
    groups: dict[str, list[AdapterCard]] = {}
    for c in sorted(result.items, key=lambda c: (c.task, c.full_name)):
        groups.setdefault(c.task, []).append(c)
    links = [(_split_ref(p.ref)[0], p.weight) for b in bases if b.lineage for p in b.lineage.parents]
    lineage_links = [(name, weight, visible(request, name) is not None) for name, weight in links]
    pages = page_count(result.total, per)
    return page(request, "base_model.html", title=f"Base {bases[0].name}", bases=bases, groups=groups, total=result.total,
                exact=result.total_exact, key=key, lineage_links=lineage_links, page_no=page_no, pages=pages)  # fmt: skip


@router.get("/{namespace}/{name}")
@guarded
def adapter_page(namespace: str, name: str, request: Request) -> Response:
    check_segment(namespace, "namespace")
    check_segment(name, "name")
    ctx = context(request)
    full = visible_adapter(ctx, ctx.access.caller(request), namespace, name).full_name  # hidden: the not-found error
    reg = ctx.registry
    versions = reg.versions(full)
    card = versions[0]
    compatible = [b for b in reg.list_bases() if card.base_model and b.arch_hash == card.base_model.arch_hash]
    lineage = _lineage(request, card)
    endpoint = str(request.base_url).rstrip("/")
    return page(
        request, "adapter.html", title=full, card=card, versions=versions, card_html=render_card(_readme(request, namespace, name, card)),
        compatible=compatible, lineage=lineage, endpoint=endpoint, on_hub=_on_hub(request, namespace, name),
    )  # fmt: skip


def _on_hub(request: Request, namespace: str, name: str) -> bool:
    try:
        context(request).hub.repo(namespace, name)
    except AdapterHubError:
        return False
    return True


@router.get("/{namespace}")
@guarded
def namespace_page(namespace: str, request: Request) -> Response:
    check_segment(namespace, "namespace")
    cards = context(request).registry.list(
        namespace=namespace, limit=MAX_NAMESPACE, visibility=context(request).access.visibility(request)
    )
    if not cards:
        raise NotFound(f"no adapters in namespace {namespace}")
    rows = [{"card": c, "scores": best_scores(c, None)} for c in cards]
    return page(request, "namespace.html", title=namespace, namespace=namespace, rows=rows, first_metric=None)
