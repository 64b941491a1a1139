"""Uploads: create a repo, validate a model card's YAML, preupload (every file is "regular"), and commit.

A commit's files are decoded from the NDJSON stream into this server's scratch folder and checked there: paths,
the sizes and hashes `adapterhub.json` declares, `lfsFile` copies (only of blobs this repository already holds),
and the adapter the new tree holds (config, safetensors header, shapes, NaN/Inf), all before any lock is taken.
Only an accepted commit's files are moved into the blob store; then one short transaction records the commit
and the registry version its adapter becomes. A refused commit leaves the blob store as it was. A
`parentCommit` that is not the branch head is refused with 409.
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...card import AdapterCard
from ...errors import AlreadyExists, CommitConflict, IntegrityError, PayloadTooLarge, UsageError
from ...fsutil import check_relative_path, check_segment
from ...store.blobs import local_file
from ..adapters import CARD_FILE, prepare_adapter
from ..modelcard import front_matter
from ..oids import git_blob_sha1_file
from ..repos import DEFAULT_BRANCH, HeadMoved, apply_changes
from ..types import FileAddition
from .access import Caller
from .context import context, json_object
from .ndjson import CommitPayload, read_commit_payload
from .uploads import StagedUploads, staged_uploads

router = APIRouter()


MAX_COMMIT_FILES = 1000  # additions, copies and deletions in one commit; an adapter repo holds a handful
_LFS_REFUSED = ("file {path}: an lfsFile may only name the sha256 of a file this repository holds or this commit uploads"
                " (or that you uploaded to it)")  # fmt: skip


def _lfs_oid(item: dict[str, Any]) -> str:
    """The sha256 an `lfsFile` entry names; anything else is refused with the same words as a foreign blob."""
    oid = item.get("oid")
    if item.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid):
        raise UsageError(_LFS_REFUSED.format(path=item.get("path")), hint="upload it as a regular file")
    return oid


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
    raw = body.get("files")
    files: list[Any] = raw if isinstance(raw, list) else []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise UsageError("preupload: each file must be an object with a string 'path'")
        check_relative_path(f["path"])
    return {
        "files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": current.get(f["path"])} for f in files
        ],
        "commitOid": commit.id,
    }


@router.post("/api/models/{namespace}/{name}/commit/{revision}")
async def commit(namespace: str, name: str, revision: str, request: Request) -> JSONResponse:
    ctx = context(request)
    caller = ctx.access.require_write(request, namespace)
    if request.query_params.get("create_pr") in ("1", "true", "True"):
        raise UsageError("this hub has no pull requests", hint="commit to main")
    await run_in_threadpool(ctx.hub.repo, namespace, name)  # 404 before reading a large body
    limit = ctx.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"commit of {declared} bytes is over this hub's limit of {limit} bytes", hint="upload fewer or smaller files"
        )
    payload: CommitPayload = await read_commit_payload(request.stream(), ctx.scratch, max_bytes=limit)
    try:
        info = await run_in_threadpool(_apply, ctx, namespace, name, revision, payload, caller, staged_uploads(request))
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
            raise IntegrityError(
                d.path, f"sha256 {d.sha256}, {d.size} bytes (per {CARD_FILE})", f"sha256 {got.sha256}, {got.size} bytes received"
            )


def _apply(
    ctx: Any, namespace: str, name: str, revision: str, payload: CommitPayload, caller: Caller, staging: StagedUploads
) -> Any:
    """`_apply_with` and a scratch folder for the stored blobs it must read locally (a remote blob store), removed after."""
    fetched = ctx.scratch / f"fetched-{secrets.token_hex(8)}"
    try:
        return _apply_with(ctx, namespace, name, revision, payload, caller, staging, fetched)
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


def _apply_with(
    ctx: Any,
    namespace: str,
    name: str,
    revision: str,
    payload: CommitPayload,
    caller: Caller,
    staging: StagedUploads,
    fetched: Path,
) -> Any:
    """Check everything against the current head, move the uploads into the blob store, record; if the head moved
    in between (another writer), check again on the new head.

    An `lfsFile` may name a blob of this repository, a file of this commit, or a file this caller staged for this
    repository (`uploads.upload`); never another caller's staged file, nor another repository's blob."""
    header = payload.header
    parent = header.get("parentCommit")
    if parent is not None and not isinstance(parent, str):
        raise UsageError("commit payload: parentCommit must be a commit id string")
    if revision != DEFAULT_BRANCH:
        raise UsageError(f"cannot commit to {revision!r}: this hub has one branch, {DEFAULT_BRANCH}")
    count = len(payload.files) + len(payload.lfs_files) + len(payload.deletions)
    if count > MAX_COMMIT_FILES:
        raise PayloadTooLarge(
            f"commit of {count} files is over this hub's limit of {MAX_COMMIT_FILES}", hint="split it into several commits"
        )
    for f in payload.files:
        check_relative_path(f.path)
    for item in payload.lfs_files:
        check_relative_path(str(item.get("path", "")))
    for d in payload.deletions:
        check_relative_path(d.rstrip("/") or d)
    _check_declared(payload)
    blobs, repo_id = ctx.registry.blobs, f"{namespace}/{name}"
    uploaded = {f.sha256: f.tmp for f in payload.files}

    oids = {_lfs_oid(item) for item in payload.lfs_files}
    staged = staging.find(repo_id, caller, oids - uploaded.keys())
    held = ctx.hub.referenced_blobs(namespace, name, oids - uploaded.keys() - staged.keys())
    known = held.keys() | uploaded.keys() | staged.keys()

    def path_of(sha256: str) -> Path:
        tmp = uploaded.get(sha256)
        return tmp if tmp is not None and tmp.exists() else local_file(blobs, sha256, fetched)

    def present(sha256: str) -> bool:
        tmp = uploaded.get(sha256)
        return (tmp is not None and tmp.exists()) or blobs.has(sha256)

    additions = [
        FileAddition(path=f.path, sha256=f.sha256, git_sha1=git_blob_sha1_file(f.tmp, f.size), size=f.size) for f in payload.files
    ]
    for item in payload.lfs_files:
        oid = _lfs_oid(item)
        if oid not in known or not present(oid):  # unknown and foreign answer alike
            raise UsageError(_LFS_REFUSED.format(path=item.get("path")), hint="upload it as a regular file")
        if oid in staged:  # hashed while it was received
            git_sha1, size = staged[oid].git_sha1, staged[oid].size
        elif oid in held:  # recorded by an earlier commit: no read of the bytes (on S3, no download)
            git_sha1, size = held[oid]
        else:
            src = path_of(oid)
            git_sha1, size = git_blob_sha1_file(src), src.stat().st_size
        additions.append(FileAddition(path=item["path"], sha256=oid, git_sha1=git_sha1, size=size))
    stored = False
    for _ in range(10):
        head, tree = ctx.hub.head_tree(namespace, name, revision)
        if parent and parent != head:
            raise CommitConflict(repo_id, parent, head)
        new_tree = apply_changes(repo_id, head, tree, payload.deletions, additions)
        prepared = prepare_adapter(repo_id, new_tree, path_of, ctx.scratch)
        if not stored:  # accepted: from here on the bytes belong to the blob store
            for f in payload.files:
                blobs.adopt(f.tmp, f.sha256)
            stored = True  # (staged uploads are in the store since they were received)
        try:
            info = ctx.hub.commit(
                namespace, name, additions=additions, deletions=payload.deletions, branch=revision,
                summary=str(header.get("summary") or "Upload"), description=str(header.get("description") or ""),
                parent=parent or None, hook=prepared.hook if prepared is not None else None, checked_head=head,
            )  # fmt: skip
        except HeadMoved:
            continue
        staging.done(repo_id, caller, staged)  # committed: the repository references those blobs now
        return info
    raise CommitConflict(repo_id, "a stable head", None)
