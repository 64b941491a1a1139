"""Git-compatible object ids: blob sha1, LFS pointer ids, commit ids, and which files the Hub keeps in LFS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

# The Hub's default .gitattributes sends these to LFS whatever their size; anything >= 10 MiB goes there too.
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack", ".npy", ".npz", ".pkl",
    ".pickle", ".tar", ".gz", ".zip", ".zst", ".tflite", ".ot", ".arrow", ".parquet", ".model", ".joblib",
)  # fmt: skip
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
CHUNK = 1 << 20


def is_lfs(path: str, size: int) -> bool:
    """Whether the Hub would store this file in LFS (its ETag is then the sha256, not the git blob id)."""
    return size >= LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def git_blob_sha1_file(path: Path, size: int | None = None) -> str:
    """git's blob id of a file, read in chunks (the size goes in the object header, so it is needed first)."""
    size = Path(path).stat().st_size if size is None else size
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_pointer_oid(sha256: str, size: int) -> str:
    return git_blob_sha1(lfs_pointer(sha256, size))


def lfs_pointer_size(sha256: str, size: int) -> int:
    return len(lfs_pointer(sha256, size))


def commit_id(parent: str | None, files: Iterable[tuple[str, str]], summary: str, when: datetime, salt: str = "") -> str:
    """A 40-hex id over the parent, the (path, blob id) listing, the message and the time, shaped like git's."""
    h = hashlib.sha1()
    for path, oid in sorted(files):
        h.update(f"{oid} {path}\n".encode())
    body = f"tree {h.hexdigest()}\nparent {parent or ''}\ndate {when.isoformat()}\n{salt}\n\n{summary}\n".encode()
    return hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
