"""Content-addressed file storage: each file kept once under its sha256.

`Blobs` is what callers may rely on; `BlobStore` keeps blobs in a local folder (the default: temp file + fsync +
rename), `s3blobs.S3BlobStore` in an S3 bucket; `blobstores.open_blobs` picks one from a URL (`--blobs`, ADAPTERHUB_BLOBS).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from ..errors import IntegrityError, StorageFull
from ..fsutil import TMP_PREFIX, fsync_dir


class Readable(Protocol):
    """What `put_stream` reads from: a binary file, or anything with `read(n)` (a download's chunks)."""

    def read(self, n: int = -1, /) -> bytes: ...


CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")  # fullmatch only


class BlobInfo(NamedTuple):
    """One stored blob as a listing sees it: gc's grace period reads `mtime` (seconds since the epoch)."""

    digest: str
    size: int
    mtime: float


class Blobs(Protocol):
    """A content-addressed blob store: what the registry, the hub and gc/fsck use, whatever keeps the bytes."""

    location: str  # where the blobs live, for messages and cache keys (a folder, or s3://bucket/prefix)
    tmp: Path  # this process's local scratch for blobs being written (only scratch lives on a replica's disk)

    def has(self, sha256: str) -> bool: ...
    def size(self, sha256: str) -> int | None: ...
    def local_path(self, sha256: str) -> Path | None: ...
    def open(self, sha256: str) -> BinaryIO: ...
    def read_bytes(self, sha256: str, *, limit: int | None = None) -> bytes: ...
    def open_range(self, sha256: str, start: int, length: int) -> BinaryIO: ...
    def presigned_url(self, sha256: str, expires_s: int) -> str | None: ...
    def put_stream(self, stream: Readable, *, expected_sha256: str | None = None, what: str = "upload") -> tuple[str, int]: ...
    def put_file(self, src: Path | str, *, expected_sha256: str | None = None) -> tuple[str, int]: ...
    def put_bytes(self, data: bytes, *, expected_sha256: str | None = None) -> tuple[str, int]: ...
    def adopt(self, src: Path, sha256: str) -> None: ...
    def copy_to(self, sha256: str, dest: Path, *, expected_size: int | None = None) -> None: ...
    def verify(self, sha256: str) -> bool: ...
    def iter_blobs(self) -> Iterator[BlobInfo]: ...
    def iter_digests(self) -> Iterator[str]: ...
    def delete(self, digests: Iterable[str], *, older_than_s: float = 0.0) -> list[str]: ...


def link_or_copy(blobs: Blobs, sha256: str, target: Path, *, expected_size: int | None = None) -> None:
    """Put a blob at `target`: a hard link when it is a local file (blobs are read-only, so sharing is safe and costs
    no space), else a verified copy (another device, or a remote store)."""
    src = blobs.local_path(sha256)
    if src is not None:
        try:
            os.link(src, target)
            return
        except OSError:
            pass
    blobs.copy_to(sha256, target, expected_size=expected_size)


def local_file(blobs: Blobs, sha256: str, folder: Path) -> Path:
    """A local file with the blob's bytes: the blob itself in a local store, else a verified copy in `folder`
    (scratch the caller removes). FileNotFoundError if the blob is not stored."""
    src = blobs.local_path(sha256)
    if src is not None:
        return src
    target = folder / sha256
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f"{TMP_PREFIX}{sha256}"
        blobs.copy_to(sha256, part)
        os.replace(part, target)
    return target


def check_sha256(sha256: str) -> str:
    """`sha256` if it is a lowercase hex digest; ValueError otherwise (it becomes a file name or an object key)."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


class BlobStore:
    """Files by sha256 under `root/sha256/ab/cdef...`; read-only once written, deduplicated."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.location = str(self.root)

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, sha256: str) -> Path | None:
        """The blob's file (to hard-link or serve with seek), or None when it is not stored."""
        p = self.path(sha256)
        return p if p.is_file() else None

    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")

    def read_bytes(self, sha256: str, *, limit: int | None = None) -> bytes:
        """The blob's bytes (at most `limit` of them): for small files such as cards and configs."""
        with self.open(sha256) as fh:
            return fh.read(-1 if limit is None else limit)

    def open_range(self, sha256: str, start: int, length: int) -> BinaryIO:
        """A reader positioned at `start` (the caller reads `length` bytes): what a range request sends."""
        fh = self.open(sha256)
        fh.seek(start)
        return fh

    def presigned_url(self, sha256: str, expires_s: int) -> str | None:
        return None  # a local folder has no URL of its own: the server sends the bytes

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for d in self.iter_digests():
            with contextlib.suppress(FileNotFoundError):
                st = self.path(d).stat()
                yield BlobInfo(d, st.st_size, st.st_mtime)

    def put_file(self, src: Path | str, *, expected_sha256: str | None = None) -> tuple[str, int]:
        with open(src, "rb") as fh:
            return self.put_stream(fh, expected_sha256=expected_sha256, what=str(src))

    def put_bytes(self, data: bytes, *, expected_sha256: str | None = None) -> tuple[str, int]:
        import io

        return self.put_stream(io.BytesIO(data), expected_sha256=expected_sha256)

    def put_stream(self, stream: Readable, *, expected_sha256: str | None = None, what: str = "upload") -> tuple[str, int]:
        """Copy a stream into the store while hashing it; an `expected_sha256` mismatch stores nothing."""
        tmp, digest, size = spool(stream, self.tmp, expected_sha256=expected_sha256, what=what, durable=True)
        try:
            final = self.path(digest)
            if final.is_file():
                os.unlink(tmp)  # already stored: deduplicated
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                fsync_dir(final.parent)
            return digest, size
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if is_disk_full(exc):
                raise StorageFull() from None
            raise

    def adopt(self, src: Path, sha256: str) -> None:
        """Move a file whose sha256 this process computed while receiving it into the store (a rename on the same
        filesystem, else a hashed copy); a blob already stored is left as it is and `src` stays with the caller."""
        final = self.path(sha256)
        if final.is_file():
            return
        try:
            fd = os.open(src, os.O_RDONLY)
            try:
                os.fsync(fd)  # the bytes are on disk before the name is
            finally:
                os.close(fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(src, 0o444)
            os.replace(src, final)
            fsync_dir(final.parent)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                if is_disk_full(exc):
                    raise StorageFull() from None
                raise
            self.put_file(src, expected_sha256=sha256)

    def copy_to(self, sha256: str, dest: Path, *, expected_size: int | None = None) -> None:
        """Write the blob to `dest` (in a folder the caller renames into place), verifying its sha256 on the way."""
        h = hashlib.sha256()
        size = 0
        with self.open(sha256) as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if h.hexdigest() != sha256 or (expected_size is not None and size != expected_size):
            raise IntegrityError(
                f"blob {sha256[:12]} (for {dest.name})", f"sha256 {sha256}", f"sha256 {h.hexdigest()}, {size} bytes"
            )

    def verify(self, sha256: str) -> bool:
        h = hashlib.sha256()
        try:
            with self.open(sha256) as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            return False
        return h.hexdigest() == sha256

    def iter_digests(self) -> Iterator[str]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for sub in base.iterdir():
            if sub.is_dir():
                for f in sub.iterdir():
                    if _SHA256.fullmatch(sub.name + f.name):
                        yield sub.name + f.name

    def delete(self, digests: Iterable[str], *, older_than_s: float = 0.0) -> list[str]:
        """Remove blobs (and stale temp files) older than `older_than_s`; returns the digests removed."""
        now = time.time()
        removed = []
        for d in digests:
            p = self.path(d)
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime >= older_than_s:
                    p.unlink()
                    removed.append(d)
        if self.tmp.is_dir():
            for t in self.tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if now - t.stat().st_mtime >= older_than_s:
                        shutil.rmtree(t) if t.is_dir() else t.unlink()
        return removed


def spool(
    stream: Readable, folder: Path, *, expected_sha256: str | None = None, what: str = "upload", durable: bool = False
) -> tuple[Path, str, int]:
    """Copy `stream` into a new temp file under `folder` while hashing it: (its path, sha256, size), the file the
    caller's to move or remove. A sha256 mismatch or any error leaves nothing behind; a full disk is StorageFull.
    `durable` fsyncs the bytes (a file about to become a blob by rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                size += len(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        digest = h.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise IntegrityError(what, f"sha256 {expected_sha256}", f"sha256 {digest}")
        return Path(name), digest, size
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        if is_disk_full(exc):
            raise StorageFull() from None
        raise


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT: the disk (or the quota) is full, which retrying after a cleanup can fix."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
