"""The S3 blob store against a real Ceph gateway (scripts/with-ceph.sh): content-addressed keys written once, a
damaged object caught on read and by fsck, a failed or aborted upload leaving nothing under the final key, gc
removing only unreferenced objects past the grace period. No fakes: a fake would not check what these check."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapterhub.errors import IntegrityError, StoreError, UsageError
from adapterhub.store.blobs import BlobStore
from adapterhub.store.blobstores import open_blobs
from adapterhub.store.registry import Registry
from adapterhub.store.s3blobs import PART_BYTES, S3BlobStore, parse_s3_url
from tests.s3 import fresh_prefix, read_raw, s3_client, write_raw

pytestmark = pytest.mark.s3


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3BlobStore]:
    with fresh_prefix("blobs") as url:
        s = open_blobs(url, tmp_path)
        assert isinstance(s, S3BlobStore)
        yield s


def _keys(store: S3BlobStore) -> list[str]:
    page = s3_client().list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + "/")
    return [o["Key"] for o in page.get("Contents", [])]


def _pending_uploads(store: S3BlobStore) -> list[Any]:
    return list(s3_client().list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix + "/").get("Uploads", []))


def _big(tmp_path: Path, n: int = PART_BYTES * 2 + 12345, seed: int = 0) -> tuple[Path, str]:
    data = hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1)
    p = tmp_path / f"big{seed}.bin"
    p.write_bytes(data[:n])
    return p, hashlib.sha256(data[:n]).hexdigest()


def test_keys_are_content_addressed_and_written_once(store: S3BlobStore) -> None:
    sha, size = store.put_bytes(b"hello blobs")
    assert (sha, size) == (hashlib.sha256(b"hello blobs").hexdigest(), 11)
    assert _keys(store) == [f"{store.prefix}/sha256/{sha[:2]}/{sha[2:]}"]
    first = s3_client().head_object(Bucket=store.bucket, Key=store.key(sha))
    assert first["Metadata"]["sha256"] == sha
    assert store.put_bytes(b"hello blobs") == (sha, size)  # already stored: not written again
    again = s3_client().head_object(Bucket=store.bucket, Key=store.key(sha))
    assert again["ETag"] == first["ETag"] and again["LastModified"] == first["LastModified"]
    assert store.has(sha) and store.size(sha) == 11 and store.read_bytes(sha) == b"hello blobs"
    assert store.local_path(sha) is None and [b.digest for b in store.iter_blobs()] == [sha]
    assert store.read_bytes(sha, limit=5) == b"hello"
    with pytest.raises(IntegrityError):
        store.put_bytes(b"other", expected_sha256=sha)  # a wrong expected sha256 stores nothing
    assert len(_keys(store)) == 1
    empty, _ = store.put_bytes(b"")
    assert store.read_bytes(empty) == b"" and store.read_bytes(empty, limit=10) == b"" and store.size(empty) == 0


def test_large_object_goes_multipart_and_reads_back_verified(store: S3BlobStore, tmp_path: Path) -> None:
    src, sha = _big(tmp_path)
    assert store.put_file(src) == (sha, src.stat().st_size)
    etag = s3_client().head_object(Bucket=store.bucket, Key=store.key(sha))["ETag"]
    assert etag.strip('"').endswith("-3")  # three parts: multipart
    out = tmp_path / "out.bin"
    store.copy_to(sha, out, expected_size=src.stat().st_size)
    assert out.read_bytes() == src.read_bytes() and store.verify(sha)
    assert _pending_uploads(store) == []


def test_corrupted_object_is_caught_on_read_and_by_verify(store: S3BlobStore, tmp_path: Path) -> None:
    sha, _ = store.put_bytes(b"x" * 5000)
    write_raw(store, sha, b"x" * 4999 + b"y")  # same size, one byte changed, behind the store's back
    with pytest.raises(IntegrityError):
        store.read_bytes(sha)
    with pytest.raises(IntegrityError):
        store.copy_to(sha, tmp_path / "copy")
    with pytest.raises(IntegrityError), store.open(sha) as fh:
        fh.read()
    assert not store.verify(sha)


def test_upload_with_wrong_sha256_is_aborted_and_leaves_no_key(store: S3BlobStore, tmp_path: Path) -> None:
    src, sha = _big(tmp_path)
    wrong = hashlib.sha256(b"not these bytes").hexdigest()
    with pytest.raises(IntegrityError):
        store.adopt(src, wrong)  # every part is sent, then the sha256 of what was sent does not match: aborted
    assert _keys(store) == [] and _pending_uploads(store) == []
    assert src.exists()  # stays with the caller
    small = tmp_path / "small"
    small.write_bytes(b"tiny")
    with pytest.raises(IntegrityError):
        store.adopt(small, wrong)
    assert _keys(store) == []


def test_upload_failing_part_way_leaves_no_key(store: S3BlobStore, tmp_path: Path) -> None:
    src, sha = _big(tmp_path)
    real = store.client.upload_part
    calls = []

    def failing(**kw: Any) -> Any:  # the real gateway takes part 1, then the connection "drops"
        calls.append(kw["PartNumber"])
        if kw["PartNumber"] == 2:
            raise ConnectionResetError("network gone")
        return real(**kw)

    store.client.upload_part = failing  # type: ignore[method-assign]
    try:
        with pytest.raises(ConnectionResetError):
            store.put_file(src)
    finally:
        store.client.upload_part = real  # type: ignore[method-assign]
    assert calls == [1, 2]
    assert _keys(store) == [] and _pending_uploads(store) == []
    assert not store.has(sha) and list(store.tmp.glob("*")) == []
    assert store.put_file(src) == (sha, src.stat().st_size)  # and a retry stores it whole


def test_server_checks_content_md5(store: S3BlobStore) -> None:
    """What the store relies on for transfer integrity: radosgw refuses a body that does not match its Content-MD5."""
    from botocore.exceptions import ClientError

    from adapterhub.store.s3blobs import _md5

    with pytest.raises(ClientError) as err:
        s3_client().put_object(Bucket=store.bucket, Key=f"{store.prefix}/probe", Body=b"abc", ContentMD5=_md5(b"abd"))
    assert err.value.response["Error"]["Code"] == "BadDigest"


def test_fsck_and_gc_on_s3(tmp_path: Path, minilm_adapter_dir: Path) -> None:
    with fresh_prefix("reg") as url:
        reg = Registry(home=tmp_path / "home", blobs=url)
        card = reg.add(minilm_adapter_dir, "ns/a", "t")
        assert reg.fsck().clean and not (tmp_path / "home" / "blobs" / "sha256").exists()  # nothing local
        weights = next(f for f in card.files if f.path == "adapter_model.safetensors")
        config = next(f for f in card.files if f.path == "adapter_config.json")
        orphan, _ = reg.blobs.put_bytes(b"nobody points at me")
        # gc: the orphan is young (inside the grace period), so it stays; with no grace it goes, and only it.
        report = reg.gc(grace_seconds=600)
        assert report.removed == [] and report.young == 1 and reg.blobs.has(orphan)
        assert reg.gc(grace_seconds=600, dry_run=True).removed == []
        assert reg.gc(grace_seconds=0, dry_run=True).removed == [orphan] and reg.blobs.has(orphan)
        report = reg.gc(grace_seconds=0)
        assert report.removed == [orphan] and report.freed_bytes == len(b"nobody points at me")
        assert not reg.blobs.has(orphan) and all(reg.blobs.has(f.sha256) for f in card.files)
        assert reg.fsck().clean
        # fsck: a changed byte is corrupt, a short object is corrupt (size), a deleted one missing.
        raw = read_raw(reg.blobs, weights.sha256)
        write_raw(reg.blobs, weights.sha256, raw[:-1] + bytes([raw[-1] ^ 1]))
        write_raw(reg.blobs, config.sha256, read_raw(reg.blobs, config.sha256)[:-1])
        report = reg.fsck()
        assert any("adapter_model.safetensors" in x for x in report.corrupt)
        assert any("adapter_config.json" in x for x in report.corrupt)
        assert not report.clean
        s3_client().delete_object(Bucket=reg.blobs.bucket, Key=reg.blobs.key(weights.sha256))  # type: ignore[attr-defined]
        assert any("adapter_model.safetensors" in x for x in reg.fsck().missing)
        with pytest.raises((IntegrityError, FileNotFoundError, OSError)):
            reg.export("ns/a@1", tmp_path / "out")
        assert not (tmp_path / "out").exists()  # nothing half-written at the final path
        reg.db.dispose()


def test_gc_aborts_uploads_a_dead_process_left(store: S3BlobStore) -> None:
    key = store.key(hashlib.sha256(b"never finished").hexdigest())
    s3_client().create_multipart_upload(Bucket=store.bucket, Key=key)  # as a server SIGKILLed mid-upload leaves
    assert len(_pending_uploads(store)) == 1 and _keys(store) == []
    store.delete([], older_than_s=600)
    assert len(_pending_uploads(store)) == 1  # young: it may still be running
    store.delete([], older_than_s=0)
    assert _pending_uploads(store) == []


def test_blob_urls(tmp_path: Path) -> None:
    assert isinstance(open_blobs(None, tmp_path), BlobStore)
    assert isinstance(open_blobs(str(tmp_path / "elsewhere"), tmp_path), BlobStore)
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    for bad in ("gs://bucket/x", "s3://Bad_Bucket/x", "s3:///x"):
        with pytest.raises(UsageError):
            open_blobs(bad, tmp_path)


def test_unreachable_endpoint_is_one_line_store_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "k"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "s"))
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client("s3", config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    s = S3BlobStore("s3://nowhere/x", tmp=tmp_path, client=client)
    with pytest.raises(StoreError) as err:
        s.has(hashlib.sha256(b"").hexdigest())
    assert "\n" not in str(err.value)


def test_a_range_is_one_ranged_get_of_just_those_bytes(store: S3BlobStore, tmp_path: Path) -> None:
    """`open_range` (a resumed download, `Range:` on resolve) fetches only the bytes asked for, on S3 and locally."""
    data = os.urandom(3 << 20)
    sha, _ = store.put_bytes(data)
    local = BlobStore(tmp_path / "local")
    local.put_bytes(data)
    for s in (store, local):
        with s.open_range(sha, 1_000_000, 4096) as fh:
            assert fh.read(4096) == data[1_000_000:1_004_096]
        with s.open_range(sha, len(data) - 1, 1) as fh:
            assert fh.read(1) == data[-1:]
    calls: list[dict[str, Any]] = []
    real = store.client.get_object
    store.client.get_object = lambda **kw: calls.append(kw) or real(**kw)  # type: ignore[method-assign]
    with store.open_range(sha, len(data) - 10, 10) as fh:
        assert fh.read() == data[-10:]
    assert [c.get("Range") for c in calls] == [f"bytes={len(data) - 10}-{len(data) - 1}"]
