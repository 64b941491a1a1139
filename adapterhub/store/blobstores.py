"""Which blob store a URL names (`serve --blobs`, ADAPTERHUB_BLOBS, `Registry(blobs=...)`): the one place it is decided."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .blobs import Blobs, BlobStore

BLOBS_ENV = "ADAPTERHUB_BLOBS"


def open_blobs(url: str | None, home: Path) -> Blobs:
    """The blob store `url` names: None or "" -> the folder `home/blobs`; `s3://bucket/prefix` -> S3 (endpoint and
    credentials from the standard AWS_* variables); a path or file:// URL -> that folder."""
    url = (url or "").strip()
    if not url:
        return BlobStore(home / "blobs")
    if url.startswith("s3://"):
        from .s3blobs import S3BlobStore  # boto3 is imported only when S3 is used

        return S3BlobStore(url, tmp=home / "blobs" / "tmp")
    if url.startswith("file://"):
        return BlobStore(Path(url.removeprefix("file://")))
    if "://" in url:
        raise UsageError(f"blob store {url!r}: expected s3://bucket/prefix or a folder", hint=f"see --blobs or {BLOBS_ENV}")
    return BlobStore(Path(url))
