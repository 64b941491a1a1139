"""Streamed push to an `adapterhub serve` hub: each file's raw bytes in its own `PUT`, no base64, no commit body
holding the files.

The Git LFS batch API (`POST {repo}.git/info/lfs/objects/batch`, "basic" transfers) says which files the hub still
needs: one this repository holds, or that this caller uploaded before an interruption, is not sent again. The rest
are sent from disk in 1 MiB pieces (memory stays flat on both sides); then one small NDJSON commit names every file
by sha256 (`lfsFile`) and carries only the generated card and README inline. A hub without this API (huggingface.co,
older adapterhub hubs) is told apart by the batch answer, and `push` falls back to `huggingface_hub`'s commit.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHUNK = 1 << 20
UPLOADS_HEADER = "X-Adapterhub-Uploads"  # the hub's batch answer carries it: its upload routes are adapterhub's own
LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
_PUT_TIMEOUT_S = 600.0  # after the last byte, the hub renames the checked file: seconds, not minutes


@dataclass(frozen=True)
class LocalFile:
    """A file to push: where it is in the repository, where it is here, and its sha256 and size (known already)."""

    path_in_repo: str
    local: Path
    sha256: str | None  # None: not known yet; hashed while it is sent (`PUT .../uploads` answers the hub's sha256)
    size: int


def _headers(token: str | None) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return dict(build_hf_headers(token=token))


def _same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.netloc) == (y.scheme, y.netloc)


def upload_files(
    endpoint: str,
    repo_id: str,
    token: str | None,
    files: list[LocalFile],
    on_bytes: Callable[[int], Any],
    on_hashed: Callable[[LocalFile], Any] | None = None,
) -> list[LocalFile] | None:
    """Send the hub the files it does not hold yet; `files` with every sha256 filled in, or None when the hub has no
    streamed upload API (nothing was sent then).

    `on_bytes(n)` is called as bytes go out (and once per file the hub already holds, with its size); `on_hashed(f)`
    for each file whose sha256 was computed while sending it, once the hub confirmed the same sha256."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    session = get_session()
    unique = {f.sha256: f for f in files if f.sha256 is not None}
    body = {"operation": "upload", "transfers": ["basic"], "hash_algo": "sha256",
            "objects": [{"oid": sha, "size": f.size} for sha, f in unique.items()]}  # fmt: skip
    headers = {**_headers(token), "Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE}
    r = session.post(f"{endpoint}/{repo_id}.git/info/lfs/objects/batch", content=json.dumps(body), headers=headers)
    if r.status_code in (404, 405, 501) or (r.status_code < 400 and UPLOADS_HEADER.lower() not in r.headers):
        return None
    hf_raise_for_status(r)
    answer = {o.get("oid"): o for o in r.json().get("objects", []) if isinstance(o, dict)}
    for sha, f in unique.items():
        action = (answer.get(sha) or {}).get("actions", {}).get("upload")
        if action is None:  # held by the repository, or staged by an earlier, interrupted push of ours
            on_bytes(f.size)
            continue
        href = str(action["href"])
        put_headers = {str(k): str(v) for k, v in (action.get("header") or {}).items()}
        if _same_origin(href, endpoint):  # the token goes to the hub only, never to a URL it names elsewhere
            put_headers = {**_headers(token), **put_headers}
        r = session.put(href, content=_read(f.local, on_bytes), headers=_put_headers(put_headers, f.size), timeout=_PUT_TIMEOUT_S)
        hf_raise_for_status(r)
    out = []
    for f in files:
        if f.sha256 is None:
            f = _put_hashing(endpoint, repo_id, token, f, on_bytes)
            if on_hashed is not None:
                on_hashed(f)
        out.append(f)
    return out


def _put_headers(headers: dict[str, str], size: int) -> dict[str, str]:
    return {**headers, "Content-Length": str(size), "Content-Type": "application/octet-stream"}


def _put_hashing(endpoint: str, repo_id: str, token: str | None, f: LocalFile, on_bytes: Callable[[int], Any]) -> LocalFile:
    """PUT a file whose sha256 is not known yet, hashing it on the way; the hub's sha256 must be the same."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    from ..errors import IntegrityError

    h = hashlib.sha256()
    url = f"{endpoint}/api/models/{repo_id}/uploads"
    r = get_session().put(
        url, content=_read(f.local, on_bytes, h), headers=_put_headers(_headers(token), f.size), timeout=_PUT_TIMEOUT_S
    )
    hf_raise_for_status(r)
    theirs = str(r.json().get("oid"))
    if theirs != h.hexdigest():
        raise IntegrityError(
            f"{repo_id}/{f.path_in_repo}", f"sha256 {h.hexdigest()} (sent)", f"sha256 {theirs} (received by the hub)"
        )
    return replace(f, sha256=theirs)


def _read(path: Path, on_bytes: Callable[[int], Any], h: Any = None) -> Iterator[bytes]:
    """The file's chunks, read (and hashed into `h`, if given) on a thread a few MiB ahead of the sender, so disk
    reads and the sha256 cost no time on the thread that writes to the socket (both release the GIL)."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(8)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.1)
                return

    def run() -> None:
        try:
            with open(path, "rb") as fh:
                while not stop.is_set() and (chunk := fh.read(CHUNK)):
                    if h is not None:
                        h.update(chunk)
                    put(chunk)
            put(None)
        except BaseException as exc:  # handed to the sending thread
            put(exc)

    reader = threading.Thread(target=run, name="adapterhub-push-read", daemon=True)
    reader.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            on_bytes(len(item))
    finally:
        stop.set()
        reader.join(timeout=10)


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def commit_body(files: list[LocalFile], inline: dict[str, bytes], summary: str, parent: str | None) -> bytes:
    """The NDJSON commit: a header, an `lfsFile` per uploaded file, and the small generated files inline."""
    header: dict[str, Any] = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    lines: list[dict[str, Any]] = [{"key": "header", "value": header}]
    for f in files:
        lines.append({"key": "lfsFile", "value": {"path": f.path_in_repo, "algo": "sha256", "oid": f.sha256, "size": f.size}})
    for path, data in inline.items():
        lines.append({"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}})
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def unchanged(siblings: list[Any], files: list[LocalFile], inline: dict[str, bytes]) -> bool:
    """Whether the repository's head (`model_info(files_metadata=True).siblings`) already holds exactly these bytes
    at these paths: LFS files compared by sha256, the others by git blob id."""
    from .oids import git_blob_sha1, git_blob_sha1_file

    remote = {s.rfilename: s for s in siblings}

    def same(path: str, sha256: str | None, git_id: Callable[[], str]) -> bool:
        s = remote.get(path)
        if s is None:
            return False
        return bool(s.lfs.sha256 == sha256) if s.lfs is not None else bool(s.blob_id == git_id())

    return all(same(f.path_in_repo, f.sha256, partial(git_blob_sha1_file, f.local, f.size)) for f in files) and all(
        same(path, hashlib.sha256(data).hexdigest(), partial(git_blob_sha1, data)) for path, data in inline.items()
    )


def post_commit(endpoint: str, repo_id: str, token: str | None, body: bytes) -> str:
    """POST the commit to `main`; the new commit id. HTTP errors are raised as huggingface_hub's (409 included)."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    headers = {**_headers(token), "Content-Type": "application/x-ndjson"}
    r = get_session().post(f"{endpoint}/api/models/{repo_id}/commit/main", content=body, headers=headers, timeout=_PUT_TIMEOUT_S)
    hf_raise_for_status(r)
    return str(r.json()["commitOid"])
