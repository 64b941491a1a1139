"""A fresh key prefix per test or module in the bucket named by ADAPTERHUB_TEST_S3_URL (scripts/with-ceph.sh starts
a one-node Ceph and sets it), and a boto3 client on it for tests that damage objects behind the store's back."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@contextlib.contextmanager
def fresh_prefix(prefix: str = "t") -> Iterator[str]:
    """s3://bucket/<base>/<prefix>-<random>. Skips locally without a gateway; under CI (CI=true) that fails."""
    base = os.environ.get("ADAPTERHUB_TEST_S3_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CI=true but ADAPTERHUB_TEST_S3_URL is not set: .ci/run must start Ceph (scripts/with-ceph.sh)")
        pytest.skip("S3 blob tests need ADAPTERHUB_TEST_S3_URL and AWS_* (a Ceph gateway); `scripts/with-ceph.sh CMD` starts one")
    yield f"{base.rstrip('/')}/{prefix}-{uuid.uuid4().hex[:12]}"


def s3_client() -> Any:
    """The same kind of client the store uses, from the same AWS_* environment."""
    from adapterhub.store.s3blobs import make_client

    return make_client()


def read_raw(blobs: Any, sha256: str) -> bytes:
    """A stored blob's bytes as kept (no verification), local folder or S3."""
    if hasattr(blobs, "path"):
        return bytes(blobs.path(sha256).read_bytes())
    return bytes(s3_client().get_object(Bucket=blobs.bucket, Key=blobs.key(sha256))["Body"].read())


def write_raw(blobs: Any, sha256: str, data: bytes) -> None:
    """Overwrite a stored blob behind the store's back (a damaged disk, a tampered object)."""
    if hasattr(blobs, "path"):
        p = blobs.path(sha256)
        if p.exists():
            p.chmod(0o644)
        p.write_bytes(data)
        p.chmod(0o444)
    else:
        s3_client().put_object(Bucket=blobs.bucket, Key=blobs.key(sha256), Body=data)


def remove_raw(blobs: Any, sha256: str) -> None:
    """Delete a stored blob behind the store's back."""
    if hasattr(blobs, "path"):
        blobs.path(sha256).unlink()
    else:
        s3_client().delete_object(Bucket=blobs.bucket, Key=blobs.key(sha256))
