"""Refs and repository management, as `huggingface_hub` calls them: `list_repo_refs`, `create_tag`/`delete_tag`,
`create_branch`/`delete_branch`, `delete_repo` and `move_repo`.

What a tag means (a registry version `vN` or alias) is decided in `hub.tags`. Every write needs a token that may write
the repository's namespace, checked before the repository is looked up: a caller without one learns nothing about
which repositories exist. Reads follow the download rule: a private repository the caller may not read is a 404.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import UsageError
from ...fsutil import check_segment
from .context import context, json_object, read_body

router = APIRouter()
_OK: dict[str, Any] = {"success": True}


def _ref(name: str, kind: str, commit: str) -> dict[str, str]:
    return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": commit}


@router.get("/api/models/{namespace}/{name}/refs")
def refs(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """Branches (`main` first) and tags (`v1`, `v2`, ... then aliases) with the commits they point at."""
    ctx = context(request)
    ctx.resolve(request, namespace, name, "main")  # names checked, access decided
    branches, tags = ctx.hub.refs(namespace, name)
    return {
        "branches": [_ref(b, "heads", c) for b, c in branches],
        "converts": [],
        "tags": [_ref(t, "tags", c) for t, c in tags],
        "pullRequests": [],
    }


def _writable(request: Request, namespace: str, name: str) -> None:
    check_segment(namespace, "namespace")
    check_segment(name, "repository name")
    context(request).access.require_write(request, namespace)


def _string(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise UsageError(f"the request body needs {key!r} as a string")
    return value


@router.post("/api/models/{namespace}/{name}/tag/{revision}")
async def create_tag(namespace: str, name: str, revision: str, request: Request) -> JSONResponse:
    """Tag a revision: the tag becomes a registry alias of the version that revision recorded."""
    _writable(request, namespace, name)
    tag = _string(await json_object(request), "tag")
    assert tag is not None
    await run_in_threadpool(context(request).hub.create_tag, namespace, name, tag, revision)
    return JSONResponse(_OK)


@router.delete("/api/models/{namespace}/{name}/tag/{tag}")
async def delete_tag(namespace: str, name: str, tag: str, request: Request) -> JSONResponse:
    _writable(request, namespace, name)
    await run_in_threadpool(context(request).hub.delete_tag, namespace, name, tag)
    return JSONResponse(_OK)


@router.post("/api/models/{namespace}/{name}/branch/{branch}")
async def create_branch(namespace: str, name: str, branch: str, request: Request) -> JSONResponse:
    """A branch at `startingPoint` (default: `main`'s head); commits still go to `main` only."""
    _writable(request, namespace, name)
    body = _optional_object(await read_body(request))
    start = _string(body, "startingPoint", required=False) or "main"
    await run_in_threadpool(context(request).hub.create_branch, namespace, name, branch, start)
    return JSONResponse(_OK)


@router.delete("/api/models/{namespace}/{name}/branch/{branch}")
async def delete_branch(namespace: str, name: str, branch: str, request: Request) -> JSONResponse:
    _writable(request, namespace, name)
    await run_in_threadpool(context(request).hub.delete_branch, namespace, name, branch)
    return JSONResponse(_OK)


def _optional_object(raw: bytes) -> dict[str, Any]:
    """An optional JSON object body (`create_branch` sends none without a starting point)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise UsageError("the request body is not valid JSON", hint="send one JSON object") from None
    if not isinstance(value, dict):
        raise UsageError("the request body must be a JSON object", hint="send one JSON object")
    return value


def _repo_type(body: dict[str, Any]) -> None:
    if body.get("type") not in (None, "model"):
        raise UsageError(f"this hub holds model repositories, not {str(body.get('type'))[:40]}s")


@router.delete("/api/repos/delete")
async def delete_repo(request: Request) -> JSONResponse:
    """Delete a repository and the registry versions its pushes recorded (blobs stay until `gc`)."""
    ctx = context(request)
    body = await json_object(request)
    _repo_type(body)
    name = _string(body, "name") or ""
    caller = ctx.access.caller(request)
    namespace = _string(body, "organization", required=False) or (caller.home_namespace if caller else "")
    _writable(request, namespace, name)
    await run_in_threadpool(ctx.hub.delete_repo, namespace, name)
    return JSONResponse(_OK)


def _repo_id(value: str | None, key: str) -> tuple[str, str]:
    namespace, sep, name = (value or "").partition("/")
    if not sep:
        raise UsageError(f"{key} must be NAMESPACE/NAME")
    return check_segment(namespace, "namespace"), check_segment(name, "repository name")


@router.post("/api/repos/move")
async def move_repo(request: Request) -> JSONResponse:
    """Rename or transfer a repository; the token must write both namespaces."""
    ctx = context(request)
    body = await json_object(request)
    _repo_type(body)
    src_ns, src = _repo_id(_string(body, "fromRepo"), "fromRepo")
    dst_ns, dst = _repo_id(_string(body, "toRepo"), "toRepo")
    _writable(request, src_ns, src)
    _writable(request, dst_ns, dst)
    await run_in_threadpool(ctx.hub.move_repo, src_ns, src, dst_ns, dst)
    return JSONResponse(_OK)
