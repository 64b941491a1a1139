"""Uploads: create a repo, validate a model card's YAML, preupload (every file is "regular"), and commit.

A commit's files are decoded from the NDJSON stream into temp files, moved into the blob store (sha256 and git
blob id computed in the same pass), then recorded in one transaction together with the registry version the
commit's adapter becomes. A `parentCommit` that is not the branch head is refused with 409.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, BinaryIO

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...card import AdapterCard
from ...errors import AlreadyExists, IntegrityError, PayloadTooLarge, UsageError
from ...fsutil import check_relative_path, check_segment
from ...store.hub_store import CARD_FILE, adapter_hook
from ..modelcard import front_matter
from ..oids import git_blob_sha1_file
from ..types import FileAddition
from .app import context, json_object
from .ndjson import CommitPayload, UploadedFile, read_commit_payload

router = APIRouter()


class _GitSha1Reader:
    """Wraps a file being copied into the blob store so git's blob id is computed in the same read."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh = fh
        self._h = hashlib.sha1(b"blob %d\0" % size)

    def read(self, n: int = -1) -> bytes:
        b = self._fh.read(n)
        self._h.update(b)
        return b

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _store(blobs: Any, f: UploadedFile) -> FileAddition:
    if blobs.has(f.sha256):  # already on the hub (a re-push, a shared file): only git's id is still needed
        return FileAddition(path=f.path, sha256=f.sha256, git_sha1=git_blob_sha1_file(f.tmp, f.size), size=f.size)
    with open(f.tmp, "rb") as fh:
        reader = _GitSha1Reader(fh, f.size)
        sha256, size = blobs.put_stream(reader, expected_sha256=f.sha256, what=f.path)  # type: ignore[arg-type]
    return FileAddition(path=f.path, sha256=sha256, git_sha1=reader.hexdigest(), size=size)


def _lfs_addition(blobs: Any, item: dict[str, Any]) -> FileAddition:
    """An `lfsFile` entry (a copy of bytes already on this hub, since preupload never answers "lfs")."""
    oid = str(item.get("oid", ""))
    if item.get("algo", "sha256") != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", oid) or not blobs.has(oid):
        raise UsageError(f"file {item.get('path')}: LFS object {oid[:12]} is not on this hub", hint="upload it as a regular file")
    path = blobs.path(oid)
    return FileAddition(path=item["path"], sha256=oid, git_sha1=git_blob_sha1_file(path), size=path.stat().st_size)


@router.post("/api/repos/create")
async def create_repo(request: Request) -> JSONResponse:
    ctx = context(request)
    body = await json_object(request)
    if body.get("type") not in (None, "model"):
        raise UsageError(f"this hub holds model repositories, not {body.get('type')}s")
    name = check_segment(str(body.get("name", "")), "repository name")
    caller = ctx.access.caller(request)
    namespace = check_segment(str(body.get("organization") or (caller.home_namespace if caller else "")), "namespace")
    ctx.access.require_write(request, namespace)
    private = bool(body.get("private")) or body.get("visibility") == "private"
    url = f"{str(request.base_url).rstrip('/')}/{namespace}/{name}"
    try:
        await run_in_threadpool(ctx.hub.create_repo, namespace, name, private=private)
    except AlreadyExists as exc:
        # huggingface_hub's create_repo(exist_ok=True) reads `url` from this 409.
        return JSONResponse({"error": str(exc), "url": url}, status_code=409)
    return JSONResponse({"url": url, "name": f"{namespace}/{name}", "id": f"{namespace}/{name}"})


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request) -> JSONResponse:
    """Check a model card's front matter parses as a YAML mapping (what the Hub checks before a README commit)."""
    body = await json_object(request)
    content = body.get("content")
    if not isinstance(content, str):
        raise UsageError("validate-yaml expects {'content': '<README text>'}")
    try:
        await run_in_threadpool(front_matter, content)  # YAML parsing is slow: off the event loop
    except ValueError as exc:
        return JSONResponse({"error": " ".join(str(exc).split())}, status_code=400)  # YAML errors span lines
    return JSONResponse({"errors": [], "warnings": []})


@router.post("/api/models/{namespace}/{name}/preupload/{revision}")
async def preupload(namespace: str, name: str, revision: str, request: Request) -> dict[str, Any]:
    """Every file is "regular" (inline base64 in the commit), so clients never take the LFS or Xet path.

    `oid` is the git blob id of the file already at that path, which lets clients skip unchanged files.
    """
    ctx = context(request)
    ctx.access.require_write(request, namespace)
    body = await json_object(request)
    repo, commit = await run_in_threadpool(ctx.hub.resolve, namespace, name, revision)
    current = {f.path: f.git_sha1 for f in await run_in_threadpool(ctx.hub.files, commit.id)}
    files = body.get("files") if isinstance(body.get("files"), list) else []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise UsageError("preupload: each file must be an object with a string 'path'")
        check_relative_path(f["path"])
    return {
        "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": current.get(f["path"])} for f in files],
        "commitOid": commit.id,
    }


@router.post("/api/models/{namespace}/{name}/commit/{revision}")
async def commit(namespace: str, name: str, revision: str, request: Request) -> JSONResponse:
    ctx = context(request)
    ctx.access.require_write(request, namespace)
    if request.query_params.get("create_pr") in ("1", "true", "True"):
        raise UsageError("this hub has no pull requests", hint="commit to main")
    await run_in_threadpool(ctx.hub.repo, namespace, name)  # 404 before reading a large body
    limit = ctx.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"commit of {declared} bytes is over this hub's limit of {limit} bytes", hint="upload fewer or smaller files")
    payload: CommitPayload = await read_commit_payload(request.stream(), ctx.scratch, max_bytes=limit)
    try:
        info = await run_in_threadpool(_apply, ctx, namespace, name, revision, payload)
    finally:
        payload.cleanup()
    base = str(request.base_url).rstrip("/")
    return JSONResponse({
        "success": True, "commitOid": info.id, "commitUrl": f"{base}/{namespace}/{name}/commit/{info.id}",
        "pullRequestUrl": None, "adapterhub": {"adapter_ref": info.adapter_ref},
    })  # fmt: skip


def _check_declared(payload: CommitPayload) -> None:
    """Each file's sha256 and size as `adapterhub.json` declares them, against what this server computed while
    receiving the bytes: a mismatch is refused before any blob is stored."""
    card = next((f for f in payload.files if f.path == CARD_FILE), None)
    if card is None:
        return
    try:
        declared = AdapterCard.model_validate_json(card.tmp.read_bytes()).files
    except ValueError:
        return  # an unreadable card is reported by the commit hook, with the reason
    received = {f.path: f for f in payload.files}
    for d in declared:
        got = received.get(d.path)
        if got is not None and (got.sha256, got.size) != (d.sha256, d.size):
            raise IntegrityError(d.path, f"sha256 {d.sha256}, {d.size} bytes (per {CARD_FILE})", f"sha256 {got.sha256}, {got.size} bytes received")


def _apply(ctx: Any, namespace: str, name: str, revision: str, payload: CommitPayload) -> Any:
    header = payload.header
    parent = header.get("parentCommit")
    if parent is not None and not isinstance(parent, str):
        raise UsageError("commit payload: parentCommit must be a commit id string")
    for f in payload.files:
        check_relative_path(f.path)
    for item in payload.lfs_files:
        check_relative_path(str(item.get("path", "")))
    _check_declared(payload)
    additions = [_store(ctx.registry.blobs, f) for f in payload.files]
    additions += [_lfs_addition(ctx.registry.blobs, item) for item in payload.lfs_files]
    return ctx.hub.commit(
        namespace, name, additions=additions, deletions=payload.deletions, branch=revision,
        summary=str(header.get("summary") or "Upload"), description=str(header.get("description") or ""),
        parent=parent or None, hook=adapter_hook(ctx.registry.blobs, ctx.scratch),
    )  # fmt: skip
