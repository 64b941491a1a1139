"""Downloads: `HEAD`/`GET /{namespace}/{name}/resolve/{revision}/{path}` with the headers `hf_hub_download` needs.

`X-Repo-Commit` names the commit the revision resolved to; `ETag` is the git blob id (small files) or the sha256
(LFS-size files, also sent as `X-Linked-Etag` with `X-Linked-Size`, as the Hub does); one byte range is honoured
(206 + Content-Range), so interrupted downloads resume. When the blob store can presign URLs (S3), LFS files over
REDIRECT_MIN_BYTES are answered with a 302 to a short-lived presigned GET (the Hub's CDN pattern: the bytes do not pass
through this server; the metadata headers ride on the 302, which is what `hf_hub_download` reads).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ...errors import IntegrityError, RepoNotFound, StoreError
from ...fsutil import check_relative_path
from ..types import RESERVED_NAMESPACES, HubFile
from .context import context

router = APIRouter()
CHUNK = 4 << 20  # large reads keep a localhost transfer bound by the socket, not by Python per-chunk overhead
REDIRECT_MIN_BYTES = 1 << 20  # LFS files above this go to a presigned URL when the blob store can sign one
DIRECT_MAX_BYTES = 16 << 20  # from a remote store, files up to this are read whole (and verified) before sending
PRESIGNED_EXPIRES_S = 300  # short-lived: long enough to start a download, which then runs to its end
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")  # longer numbers: not a range we honour, send it all


def _headers(f: HubFile, commit: str) -> dict[str, str]:
    h = {
        "X-Repo-Commit": commit,
        "ETag": f'"{f.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": _disposition(os.path.basename(f.path)),
    }
    if f.lfs:
        h["X-Linked-Etag"] = f'"{f.sha256}"'
        h["X-Linked-Size"] = str(f.size)
    return h


def _disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback name plus the exact UTF-8 name (headers are Latin-1, names may be anything)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) for one satisfiable range, None to send everything, "unsatisfiable" for a 416."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        return None  # several ranges or another unit: the whole file is a valid answer
    if m.group(1):
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        start, end = max(size - int(m.group(2)), 0), size - 1
    if start >= size or start > end:
        return "unsatisfiable"
    return start, end


def _read(fh: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    with fh:
        if start:
            fh.seek(start)
        while length > 0:
            chunk = fh.read(min(CHUNK, length))
            if not chunk:
                # The blob is shorter than recorded (damaged on disk): stop, the client sees a short body.
                return
            length -= len(chunk)
            yield chunk


@router.api_route("/{namespace}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
def resolve_file(namespace: str, name: str, revision: str, path: str, request: Request) -> Response:
    """One file of one revision; a sync route so blob reads run in the threadpool, not on the event loop."""
    ctx = context(request)
    if namespace.lower() in RESERVED_NAMESPACES:  # a route word, never a repository (none can be created there)
        raise RepoNotFound(f"{namespace}/{name}")
    check_relative_path(path)  # '..', absolute, backslash, drive, control characters: 400 before any lookup
    repo, commit = ctx.resolve(request, namespace, name, revision)
    f = ctx.hub.file(repo.repo_id, commit.id, path)
    headers = _headers(f, commit.id)
    if f.lfs and f.size > REDIRECT_MIN_BYTES and ctx.redirects:
        url = ctx.hub.blobs.presigned_url(f.sha256, PRESIGNED_EXPIRES_S)
        if url is not None:
            return Response(status_code=302, headers={**headers, "Location": url, "Content-Length": "0"})
    rng = _byte_range(request.headers.get("range"), f.size)
    if rng == "unsatisfiable":
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{f.size}"})
    start, end = rng if isinstance(rng, tuple) else (0, f.size - 1)
    length = end - start + 1 if f.size else 0
    status = 206 if isinstance(rng, tuple) else 200
    headers["Content-Length"] = str(length)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    blobs = ctx.hub.blobs
    try:  # opened before the status line goes out, so a lost blob is a clear 500, not a cut connection
        local = blobs.local_path(f.sha256)
        if local is None:  # a remote store: small files whole and verified, others streamed (verified when whole)
            if status == 206:  # a range: one ranged GET of just those bytes, never the whole object
                return StreamingResponse(_read(blobs.open_range(f.sha256, start, length), 0, length), status_code=status,
                                         headers=headers)  # fmt: skip
            if f.size <= DIRECT_MAX_BYTES:
                return Response(blobs.read_bytes(f.sha256), status_code=status, headers=headers)
            return StreamingResponse(_read(blobs.open(f.sha256), 0, length), status_code=status, headers=headers)
        fh = open(local, "rb")
    except FileNotFoundError:
        raise StoreError(f"the bytes of {repo.repo_id}/{path} are missing from the hub's blob store",
                         hint="run `adapterhub fsck` on the hub and push the file again") from None  # fmt: skip
    except IntegrityError:  # verified on read (a remote store): a damaged object is the hub's fault, never sent
        raise StoreError(f"the bytes of {repo.repo_id}/{path} are damaged in the hub's blob store (sha256 mismatch)",
                         hint="run `adapterhub fsck` on the hub and push the file again") from None  # fmt: skip
    return StreamingResponse(_read(fh, start, length), status_code=status, headers=headers)
