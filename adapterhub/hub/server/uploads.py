"""Streamed uploads: the Git LFS batch API ("basic" transfers) and a raw `PUT` per file, so big files travel as
their own bytes instead of base64 inside one commit body.

`POST /{ns}/{name}.git/info/lfs/objects/batch` answers, per object, whether the caller still has to send it: a file
this repository holds (any revision) or this caller already staged for it needs nothing (an interrupted push
resumes per file), anything else gets an upload action, `PUT /api/models/{ns}/{name}/uploads/{sha256}` with the raw
bytes (or `PUT .../uploads` without the sha256, for a file the client hashes while sending it; the answer names
the sha256). The server hashes them while they arrive into its scratch folder (sha256 and git's blob id, never the whole
body in memory), refuses a sha256 or size mismatch, and stages the file per repository and per caller
(`StagedUploads`). A commit may then name it in an `lfsFile`; only that caller, in that repository, can
(`commits._apply`), and only an accepted commit moves it into the blob store (`BlobStore.adopt`). Staged files
nobody committed are removed after `STAGED_TTL_S`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import DatabaseBusy, IntegrityError, PayloadTooLarge, UsageError
from ...store.blobs import Blobs
from ...store.db import Database
from ...store.orm import HubStagedUploadRow as Row
from ...store.orm import utcnow
from .access import Caller
from .context import context, json_object

router = APIRouter()

STAGED_TTL_S = 24 * 3600.0  # a staged upload nobody committed is removed after this long
PRUNE_EVERY_S = 600.0  # how often a serving process forgets expired staged uploads (besides at start)
MAX_STAGED_PER_CALLER = 2000  # uploads one token may hold staged and uncommitted (two full batches)
_last_prune = float("-inf")
MAX_BATCH_OBJECTS = 1000  # objects in one batch request: the commit's own file limit
UPLOAD_ROUTE = re.compile(r"/api/models/[^/]+/[^/]+/uploads(?:/[^/]+)?")  # for BodyLimit: bodies up to --max-upload-bytes
LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BATCH_BYTES = 1 << 20  # received bytes handed to the hashing threads at a time
_IN_FLIGHT = 4  # batches queued on the threads before receiving waits for them: memory stays a few MiB


def _key(text: str) -> str:
    """A fixed-length folder name for a repository or caller (any characters, any case, never a path)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StagedFile:
    sha256: str
    git_sha1: str
    size: int


class StagedUploads:
    """Uploaded, verified, not yet committed blobs, recorded per repository and per caller in the database (the bytes
    are already in the blob store): the only blobs besides the repository's own and the commit's inline files that a
    commit may name by sha256. Shared by every replica on the same database and bucket."""

    def __init__(self, db: Database, blobs: Blobs) -> None:
        self.db, self.blobs = db, blobs

    def find(self, repo_id: str, caller: Caller, sha256s: Iterable[str]) -> dict[str, StagedFile]:
        """Which of `sha256s` this caller staged for this repository (and the store still holds)."""
        wanted = sorted({sha for sha in sha256s if _SHA256.fullmatch(sha)})
        if not wanted:
            return {}
        fresh = utcnow() - timedelta(seconds=STAGED_TTL_S)  # an expired upload is gone even before a prune removes it
        with self.db.session() as s:
            rows = s.execute(
                sa.select(Row.sha256, Row.git_sha1, Row.size).where(
                    Row.repo_key == repo_id, Row.caller_key == _key(caller.key), Row.sha256.in_(wanted), Row.created_at >= fresh
                )
            ).all()
        return {r.sha256: StagedFile(r.sha256, r.git_sha1, r.size) for r in rows if self.blobs.has(r.sha256)}

    def stage(self, repo_id: str, caller: Caller, tmp: Path, sha256: str, git_sha1: str, size: int) -> None:
        """Store a verified upload from scratch in the blob store, then record that this caller staged it here (a
        second upload of the same bytes refreshes the record's age)."""
        self.prune_now_and_then()
        key = {"repo_key": repo_id, "caller_key": _key(caller.key), "sha256": sha256}
        with self.db.session() as s:
            held = s.scalar(sa.select(sa.func.count()).select_from(Row).where(Row.caller_key == key["caller_key"])) or 0
        if held >= MAX_STAGED_PER_CALLER:
            raise PayloadTooLarge(
                f"this token has {held} uploads staged and not committed (the limit is {MAX_STAGED_PER_CALLER})",
                hint="commit the files you uploaded, or wait a day for uncommitted uploads to expire",
            )
        self.blobs.adopt(tmp, sha256)
        for _ in range(3):  # two PUTs of the same bytes at once (a retry, two replicas): the second refreshes the first
            try:
                with self.db.write() as s:
                    row = s.scalar(sa.select(Row).filter_by(**key))
                    if row is None:
                        s.add(Row(**key, git_sha1=git_sha1, size=size, created_at=utcnow()))
                    else:
                        row.created_at = utcnow()
                return
            except sa.exc.IntegrityError:
                continue
        raise DatabaseBusy()

    def done(self, repo_id: str, caller: Caller, sha256s: Iterable[str]) -> None:
        """A commit naming them was recorded: the repository references the blobs now."""
        wanted = sorted(set(sha256s))
        if wanted:
            with self.db.write() as s:
                s.execute(
                    sa.delete(Row).where(Row.repo_key == repo_id, Row.caller_key == _key(caller.key), Row.sha256.in_(wanted))
                )

    def prune_now_and_then(self) -> None:
        """`prune` at most every PRUNE_EVERY_S per process: expired uploads go while the server runs, not only at start."""
        global _last_prune
        now = time.monotonic()
        if now - _last_prune >= PRUNE_EVERY_S:
            _last_prune = now
            self.prune()

    def prune(self, *, older_than_s: float = STAGED_TTL_S) -> None:
        """Forget uploads nobody committed within `older_than_s`; their blobs become orphans for gc."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with self.db.write() as s:
            s.execute(sa.delete(Row).where(Row.created_at < cutoff))


def staged_uploads(request: Request) -> StagedUploads:
    reg = context(request).registry
    return StagedUploads(reg.db, reg.blobs)


def _check_oid(oid: object) -> str:
    if not isinstance(oid, str) or not _SHA256.fullmatch(oid):
        raise UsageError(f"not a sha256 hex digest: {str(oid)[:80]!r}", hint="name each object by its lowercase sha256")
    return oid


@router.post("/{namespace}/{name}.git/info/lfs/objects/batch")
async def lfs_batch(namespace: str, name: str, request: Request) -> JSONResponse:
    """Git LFS batch API, uploads only: which objects the caller must still send, and where (`basic` transfers)."""
    ctx = context(request)
    caller = ctx.access.require_write(request, namespace)
    await run_in_threadpool(ctx.hub.repo, namespace, name)  # 404 for a repository that does not exist
    body = await json_object(request)
    if body.get("operation") != "upload":
        raise UsageError("this hub's LFS endpoint takes uploads only", hint="download files with /resolve")
    transfers = body.get("transfers", ["basic"])
    if not isinstance(transfers, list) or "basic" not in transfers:
        raise UsageError("this hub offers the 'basic' LFS transfer only")
    objects = body.get("objects")
    if not isinstance(objects, list) or len(objects) > MAX_BATCH_OBJECTS:
        raise UsageError(f"'objects' must be a list of at most {MAX_BATCH_OBJECTS} {{oid, size}} objects")
    wanted: list[tuple[str, int]] = []
    for o in objects:
        size = o.get("size") if isinstance(o, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UsageError("each LFS object needs an 'oid' (sha256) and a non-negative integer 'size'")
        wanted.append((_check_oid(o.get("oid")), size))
    repo_id, oids = f"{namespace}/{name}", [oid for oid, _ in wanted]
    held = await run_in_threadpool(ctx.hub.referenced_blobs, namespace, name, oids)
    staged = await run_in_threadpool(staged_uploads(request).find, repo_id, caller, oids)
    base = str(request.base_url).rstrip("/")
    answer = []
    for oid, size in wanted:
        item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        if oid not in held and not (oid in staged and staged[oid].size == size):
            href = f"{base}/api/models/{namespace}/{name}/uploads/{oid}"
            item["actions"] = {"upload": {"href": href, "header": {"Content-Length": str(size)}, "expires_in": 3600}}
        answer.append(item)
    return JSONResponse({"transfer": "basic", "objects": answer, "hash_algo": "sha256"}, media_type=LFS_MEDIA_TYPE,
                        headers={"X-Adapterhub-Uploads": "1"})  # fmt: skip


@router.put("/api/models/{namespace}/{name}/uploads/{oid}")
async def upload(namespace: str, name: str, oid: str, request: Request) -> JSONResponse:
    """The raw bytes of one file named by its sha256: hashed while received into scratch, refused on a sha256 or
    size mismatch, then staged for this caller and repository (never in the blob store before a commit accepts it)."""
    return await _receive(namespace, name, _check_oid(oid), request)


@router.put("/api/models/{namespace}/{name}/uploads")
async def upload_unnamed(namespace: str, name: str, request: Request) -> JSONResponse:
    """The same for bytes whose sha256 the client computes while sending them: the answer names the sha256 this
    server computed, which the client checks against its own before a commit names it."""
    return await _receive(namespace, name, None, request)


async def _receive(namespace: str, name: str, oid: str | None, request: Request) -> JSONResponse:
    ctx = context(request)
    caller = ctx.access.require_write(request, namespace)
    await run_in_threadpool(ctx.hub.repo, namespace, name)
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        raise UsageError("an upload needs a Content-Length header", hint="send the file's bytes with their length")
    size, limit = int(declared), ctx.max_upload_bytes
    if limit is not None and size > limit:
        raise PayloadTooLarge(f"upload of {size} bytes is over this hub's limit of {limit} bytes")
    tmp, sha256, git_sha1, got = await receive_file(request.stream(), ctx.scratch, size)
    try:
        if (sha256, got) != (oid or sha256, size):
            want = f"sha256 {oid}, {size} bytes" if oid else f"{size} bytes"
            raise IntegrityError(f"upload {(oid or sha256)[:12]}", want, f"sha256 {sha256}, {got} bytes received")
        await run_in_threadpool(staged_uploads(request).stage, f"{namespace}/{name}", caller, tmp, sha256, git_sha1, got)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return JSONResponse({"oid": sha256, "size": size})


class _HashingWriter:
    """Writes received bytes to a file while computing their sha256 and git blob id, in three lanes: one thread
    each for the sha256, the git id and the write (hashlib and file writes release the GIL, so they run side by
    side). Each lane runs its batches in arrival order; pieces are handed over as received, never copied."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % size)
        self.size = 0
        self.lanes = [ThreadPoolExecutor(1, thread_name_prefix="adapterhub-upload") for _ in range(3)]
        self.in_flight: collections.deque[asyncio.Future[Any]] = collections.deque()

    def _hash256(self, pieces: list[bytes]) -> None:
        for p in pieces:
            self.sha256.update(p)

    def _hash_git(self, pieces: list[bytes]) -> None:
        for p in pieces:
            self.git.update(p)

    def _write(self, pieces: list[bytes]) -> None:
        for p in pieces:
            self.fh.write(p)
            self.size += len(p)

    async def submit(self, pieces: list[bytes]) -> None:
        """Queue a batch on every lane; waits only while `_IN_FLIGHT` batches are still being processed."""
        loop = asyncio.get_running_loop()
        work = (self._hash256, self._hash_git, self._write)
        self.in_flight.append(asyncio.gather(*(loop.run_in_executor(lane, fn, pieces) for lane, fn in zip(self.lanes, work))))
        while len(self.in_flight) > _IN_FLIGHT:
            await self.in_flight.popleft()

    async def drain(self) -> None:
        """Wait until every queued batch is done (also after an error: the file is closed only then)."""
        try:
            while self.in_flight:
                await self.in_flight.popleft()
        finally:
            for lane in self.lanes:
                lane.shutdown(wait=True)


async def receive_file(chunks: AsyncIterator[bytes], scratch: Path, size: int) -> tuple[Path, str, str, int]:
    """Stream a request body into a temp file under `scratch`: (path, sha256, git blob id, bytes received).

    Hashing and writing run on threads while the next megabytes arrive, so memory holds a few batches at most; the
    temp file is removed if the body breaks off."""
    scratch.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="put-", dir=scratch)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _HashingWriter(fh, size)
            batch: list[bytes] = []
            held = 0
            try:
                async for chunk in chunks:
                    batch.append(chunk)
                    held += len(chunk)
                    if held >= _BATCH_BYTES:
                        await writer.submit(batch)
                        batch, held = [], 0
                await writer.submit(batch)
            finally:
                await writer.drain()  # the threads are done with the file before it is closed (or removed)
        return path, writer.sha256.hexdigest(), writer.git.hexdigest(), writer.size
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
