"""Info and listings in the Hub's JSON shapes: model info, tree (recursive, Link-paginated), model search, refs,
commits, and a minimal `whoami-v2` so clients that ask who they are keep working."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import EntryNotFound, UsageError
from ...fsutil import check_relative_path
from ..adapters import CARD_FILE, README_FILE
from ..modelcard import MAX_CARD_BYTES, front_matter
from ..repos import HubStore
from ..types import HubCommit, HubFile, HubRepo
from .context import context, read_body

router = APIRouter()


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


_META_CACHE: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
_META_CACHE_SIZE = 4096
_META_LOCK = threading.Lock()


def repo_meta(hub: HubStore, files: list[HubFile]) -> dict[str, Any]:
    """What a revision's files say about it: the README front matter (cardData), tags, library and task.

    Kept in a small LRU keyed by what it depends on (README and card by sha256, so content-addressed, and which
    kinds of files exist), so a listing page does not re-read and re-parse the same cards on every request."""
    by_path = {f.path: f for f in files}
    key = (
        hub.blobs.location,
        by_path[README_FILE].sha256 if README_FILE in by_path else None,
        by_path[CARD_FILE].sha256 if CARD_FILE in by_path else None,
        "adapter_config.json" in by_path,
        any(p.endswith(".safetensors") for p in by_path),
    )
    with _META_LOCK:
        if key in _META_CACHE:
            _META_CACHE.move_to_end(key)
            return _META_CACHE[key]
    meta = _read_meta(hub, by_path)
    with _META_LOCK:
        _META_CACHE[key] = meta
        while len(_META_CACHE) > _META_CACHE_SIZE:
            _META_CACHE.popitem(last=False)
    return meta


def _read_meta(hub: HubStore, by_path: dict[str, HubFile]) -> dict[str, Any]:
    card: dict[str, Any] = {}
    if README_FILE in by_path:
        try:
            data = hub.blob_bytes(by_path[README_FILE], limit=MAX_CARD_BYTES + 1)
            text = None if len(data) > MAX_CARD_BYTES else data.decode("utf-8", "replace")  # as read_card: none if too big
            card = front_matter(text) if text is not None else {}
        except (ValueError, OSError):
            card = {}  # a broken README does not hide the repository
    tags = [str(t) for t in (card.get("tags") or []) if isinstance(t, (str, int, float))]
    library = card.get("library_name") or ("peft" if "adapter_config.json" in by_path else None)
    if library and library not in tags:
        tags.append(str(library))
    if any(p.endswith(".safetensors") for p in by_path) and "safetensors" not in tags:
        tags.append("safetensors")
    task = None
    if CARD_FILE in by_path:
        try:
            task = json.loads(hub.blob_bytes(by_path[CARD_FILE])).get("task")
        except (ValueError, OSError, AttributeError):
            task = None
    return {
        "cardData": card or None,
        "tags": tags,
        "library_name": library,
        "pipeline_tag": card.get("pipeline_tag"),
        "task": task,
    }


def _sibling(f: HubFile, blobs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"rfilename": f.path}
    if blobs:
        out["size"] = f.size
        out["blobId"] = f.oid
        if f.lfs:
            out["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
    return out


def model_json(
    hub: HubStore, repo: HubRepo, commit: HubCommit, files: list[HubFile], *, blobs: bool = False, full: bool = True
) -> dict[str, Any]:
    meta = repo_meta(hub, files)
    out: dict[str, Any] = {
        "_id": commit.id, "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.namespace, "sha": commit.id,
        "lastModified": _iso(commit.created_at), "createdAt": _iso(repo.created_at), "private": repo.private,
        "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": list(meta["tags"]),
        "library_name": meta["library_name"], "pipeline_tag": meta["pipeline_tag"],
    }  # fmt: skip
    if full:
        out["cardData"] = meta["cardData"]
        out["siblings"] = [_sibling(f, blobs) for f in files]
        out["usedStorage"] = sum(f.size for f in files)
        out["adapterhub"] = {"task": meta["task"], "adapter_ref": commit.adapter_ref}
    return out


def _tree_entry(f: HubFile) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
    if f.lfs:
        out["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    return out


def _dir_entry(path: str, files: list[HubFile]) -> dict[str, Any]:
    # A stable id for the folder's content, shaped like git's tree id.
    listing = "".join(f"{f.oid} {f.path}\n" for f in files if f.path.startswith(path + "/"))
    return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": path}


def tree_entries(files: list[HubFile], path: str, recursive: bool) -> list[dict[str, Any]]:
    """The Hub's tree listing of `path` (the root when empty): files and folders, sorted by path."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    under = [f for f in files if f.path.startswith(prefix)]
    dirs: set[str] = set()
    entries: dict[str, dict[str, Any]] = {}
    for f in under:
        rest = f.path[len(prefix) :]
        parts = rest.split("/")
        if recursive:
            for i in range(1, len(parts)):
                dirs.add(prefix + "/".join(parts[:i]))
            entries[f.path] = _tree_entry(f)
        elif len(parts) == 1:
            entries[f.path] = _tree_entry(f)
        else:
            dirs.add(prefix + parts[0])
    for d in dirs:
        entries[d] = _dir_entry(d, files)
    return [entries[k] for k in sorted(entries)]


def _cursor(request: Request) -> int:
    try:
        return max(int(request.query_params.get("cursor", "0")), 0)
    except ValueError:
        raise UsageError("cursor must be an integer offset") from None


def _next_link(request: Request, cursor: int) -> dict[str, str]:
    return {"Link": f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'}


def _page(request: Request, items: list[Any], page_size: int) -> JSONResponse:
    """One page of `items` from `?cursor=` on, with a `Link: <...>; rel="next"` header when more remain."""
    start = _cursor(request)
    page = items[start : start + page_size]
    return JSONResponse(page, headers=_next_link(request, start + page_size) if start + page_size < len(items) else {})


@router.get("/api/models/{namespace}/{name}")
@router.get("/api/models/{namespace}/{name}/revision/{revision:path}")
def model_info(namespace: str, name: str, request: Request, revision: str = "main", blobs: bool = False) -> dict[str, Any]:
    ctx = context(request)
    repo, commit = ctx.resolve(request, namespace, name, revision)
    return model_json(ctx.hub, repo, commit, ctx.hub.files(commit.id), blobs=blobs)


@router.get("/api/models/{namespace}/{name}/tree/{revision}")
@router.get("/api/models/{namespace}/{name}/tree/{revision}/{path:path}")
def tree(namespace: str, name: str, revision: str, request: Request, path: str = "", recursive: bool = False) -> JSONResponse:
    ctx = context(request)
    if path.strip("/"):
        check_relative_path(path.strip("/"))
    repo, commit = ctx.resolve(request, namespace, name, revision)
    entries = tree_entries(ctx.hub.files(commit.id), path, recursive)
    if path.strip("/") and not entries:
        raise EntryNotFound(repo.repo_id, commit.id, path)
    return _page(request, entries, ctx.page_size)


@router.post("/api/models/{namespace}/{name}/paths-info/{revision}")
async def paths_info(namespace: str, name: str, revision: str, request: Request) -> list[dict[str, Any]]:
    """Entries for the given paths (files or folders; unknown paths are left out), as `get_paths_info` expects."""
    ctx = context(request)
    # access first (RepoNotFound for a hidden repository, whatever revision or body), then the body
    _, commit = await run_in_threadpool(ctx.resolve, request, namespace, name, revision)
    form = parse_qs((await read_body(request)).decode("utf-8", "replace"))
    files = await run_in_threadpool(ctx.hub.files, commit.id)
    return await run_in_threadpool(_paths_entries, files, form.get("paths", []))


def _paths_entries(files: list[HubFile], paths: list[str]) -> list[dict[str, Any]]:
    """paths-info's answer, in time linear in files plus paths (a body may name a hundred thousand paths)."""
    by_path = {f.path: f for f in files}
    wanted = list(dict.fromkeys(p.strip("/") for p in paths))
    asked = {p for p in wanted if p not in by_path}
    under: dict[str, list[HubFile]] = {}
    for f in files:  # one pass: each asked-for folder collects the files below it
        for i, c in enumerate(f.path):
            if c == "/" and f.path[:i] in asked:
                under.setdefault(f.path[:i], []).append(f)
    out = []
    for path in wanted:
        if path in by_path:
            out.append(_tree_entry(by_path[path]))
        elif path in under:
            out.append(_dir_entry(path, under[path]))
    return out


@router.get("/api/models/{namespace}/{name}/commits/{revision}")
def commits(namespace: str, name: str, revision: str, request: Request) -> JSONResponse:
    ctx = context(request)
    repo, _ = ctx.resolve(request, namespace, name, revision)
    items = [
        {"id": c.id, "title": c.summary, "message": c.description, "authors": [], "date": _iso(c.created_at)}
        for c in ctx.hub.history(namespace, name, revision)
    ]
    return _page(request, items, ctx.page_size)


MAX_FILTER_SCAN = 2000  # repositories whose cards one filtered listing request may read


@router.get("/api/models")
def list_models(
    request: Request,
    search: str | None = None,
    author: str | None = None,
    filter: list[str] = Query(default=[]),  # noqa: A002 - the Hub's parameter name
    sort: str = "lastModified",
    limit: int | None = Query(default=None, ge=1),
    full: bool = False,
    cardData: bool = False,  # noqa: N803 - the Hub's parameter name
) -> JSONResponse:
    """Repositories the caller may see whose id contains `search`, owned by `author`, carrying every `filter` tag;
    newest first. Paged in SQL (`cursor` is the position in that order): a page costs its own rows, not the hub's."""
    ctx = context(request)
    page = min(limit or ctx.page_size, ctx.page_size)
    visibility = ctx.access.visibility(request)
    # Tags live in each README, not in the database: with `filter`, scan on in SQL order until the page is full,
    # but at most MAX_FILTER_SCAN repositories per request; a short page then links to where the scan stopped.
    step = page if not filter else max(page, 200)
    items: list[dict[str, Any]] = []
    pos, more = _cursor(request), True
    scan_end = pos + max(MAX_FILTER_SCAN, page)
    while more and len(items) < page and pos < scan_end:
        batch = ctx.hub.list_heads(search=search, author=author, sort=sort, visibility=visibility, offset=pos, limit=step + 1)
        more, batch = len(batch) > step, batch[:step]
        files = ctx.hub.files_of(c.id for _, c in batch)
        for i, (repo, commit) in enumerate(batch):
            item = model_json(ctx.hub, repo, commit, files[commit.id], full=full)
            if cardData and not full:
                item["cardData"] = repo_meta(ctx.hub, files[commit.id])["cardData"]
            if all(f in item["tags"] or f == item["library_name"] for f in filter):
                items.append(item)
            if len(items) == page:
                more, pos = more or i + 1 < len(batch), pos + i + 1
                break
        else:
            pos += len(batch)
    return JSONResponse(items, headers=_next_link(request, pos) if more else {})


@router.get("/api/whoami-v2")
def whoami(request: Request) -> Response:
    """Enough of the Hub's answer for `HfApi.whoami()` and tools that check the token's role first."""
    caller = context(request).access.caller(request)
    if caller is None:
        return JSONResponse({"error": "invalid or missing token"}, status_code=401,
                            headers={"X-Error-Message": "Invalid credentials in Authorization header"})  # fmt: skip
    user = caller.user
    return JSONResponse({
        "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
        "email": None, "emailVerified": False, "isPro": False, "orgs": [], "canPay": False, "periodEnd": None,
        "auth": {"type": "access_token", "accessToken": {"displayName": user, "role": "write" if caller.write else "read", "createdAt": None}},
    })  # fmt: skip
