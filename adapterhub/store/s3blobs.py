"""Blobs in an S3-compatible bucket (Ceph radosgw, MinIO, AWS S3) under `prefix/sha256/ab/cdef...`.

An object is written once, and under its final key only when its sha256 is known and the bytes sent match it: the
bytes are hashed into local scratch first (or were hashed by the caller), then sent with Content-MD5 (per part when
multipart) so the server checks the transfer, and hashed again on the way out; a multipart upload that fails is
aborted, and one whose process died stays an invisible upload that `delete` (gc) aborts after the grace period.
Reads hash again: `open` raises IntegrityError at the end of a damaged object. The endpoint and credentials are
read the standard way by boto3 (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ~/.aws/config, ...).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import IntegrityError, StorageFull, StoreError, UsageError
from .blobs import CHUNK, BlobInfo, Readable, check_sha256, is_disk_full, spool

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART_BYTES = 16 << 20  # objects above this go multipart, in parts of this size (S3's minimum part is 5 MiB)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_MISSING = {"404", "NoSuchKey", "NotFound"}
_HINT = "check AWS_ENDPOINT_URL, the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket"


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); a clear UsageError for anything else."""
    if not url.startswith("s3://"):
        raise UsageError(f"blob store {url!r}: expected s3://bucket/prefix")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise UsageError(f"blob store {url!r}: {bucket!r} is not an S3 bucket name")
    return bucket, prefix.strip("/")


def make_client() -> S3Client:
    """A boto3 S3 client configured from the environment; checksums only where the API requires them (radosgw 16.2
    predates the CRC32 trailers newer botocore sends by default), Content-MD5 is added by this module itself."""
    import boto3
    from botocore.config import Config

    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=64,
        signature_version="s3v4",  # presigned URLs too (boto3 would sign them with the legacy v2 otherwise)
    )
    return boto3.session.Session().client("s3", config=config)


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """botocore's errors as one-line StoreErrors (an unreachable endpoint, refused credentials, a missing bucket)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise StoreError(f"S3 refused {what}: {err.get('Code', '?')} {err.get('Message', '')}".strip(), hint=_HINT) from None
    except BotoCoreError as exc:
        raise StoreError(f"S3 unavailable for {what}: {exc}", hint=_HINT) from None


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in _MISSING


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class _Body(io.RawIOBase):
    """An S3 response body as a raw binary stream (for io.BufferedReader), closed with it."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


class _VerifyingReader(_Body):
    """An object's body that hashes what it hands out and raises IntegrityError at its end if the bytes are not the
    ones named by the key (a damaged or overwritten object)."""

    def __init__(self, body: Any, sha256: str, what: str) -> None:
        super().__init__(body)
        self._sha, self._what = sha256, what
        self._h = hashlib.sha256()
        self._size = 0

    def readinto(self, b: Any) -> int:
        n = super().readinto(b)
        if not n:
            if self._h.hexdigest() != self._sha:
                raise IntegrityError(self._what, f"sha256 {self._sha}", f"sha256 {self._h.hexdigest()}, {self._size} bytes")
            return 0
        self._h.update(b[:n])
        self._size += n
        return n


class S3BlobStore:
    """The `Blobs` interface over one bucket and key prefix; nothing but temp files is kept on local disk."""

    def __init__(self, url: str, *, tmp: Path, client: S3Client | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.tmp = Path(tmp)
        self.client: S3Client = client if client is not None else make_client()

    def key(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{self._base()}{sha256[:2]}/{sha256[2:]}"

    def _base(self) -> str:
        return f"{self.prefix}/sha256/" if self.prefix else "sha256/"

    def _label(self, sha256: str) -> str:
        return f"blob {sha256[:12]} in {self.location}"

    # --- reading -------------------------------------------------------------------------------------------

    def _head(self, sha256: str) -> dict[str, Any] | None:
        key = self.key(sha256)
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            if _missing(exc):
                return None
            with _s3_errors(f"HEAD {key}"):
                raise

    def has(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int | None:
        head = self._head(sha256)
        return None if head is None else int(head["ContentLength"])

    def local_path(self, sha256: str) -> Path | None:
        return None  # never on local disk: callers copy (copy_to) or redirect (presigned_url)

    def _get(self, sha256: str, **kw: Any) -> Any:
        key = self.key(sha256)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **kw)
        except Exception as exc:
            if _missing(exc):
                raise FileNotFoundError(f"{self._label(sha256)} is missing") from None
            with _s3_errors(f"GET {key}"):
                raise

    def open(self, sha256: str) -> BinaryIO:
        """A reader of the whole object, verified against its sha256 when read to the end; FileNotFoundError if absent."""
        raw = _VerifyingReader(self._get(sha256)["Body"], sha256, self._label(sha256))
        return io.BufferedReader(raw, buffer_size=CHUNK)

    def read_bytes(self, sha256: str, *, limit: int | None = None) -> bytes:
        """The object's bytes (the first `limit` of them); verified whenever the whole object was read."""
        if limit is None:
            with self.open(sha256) as fh:
                return fh.read()
        if self.size(sha256) == 0:  # a range of an empty object is "unsatisfiable" to S3
            return self.read_bytes(sha256)
        obj = self._get(sha256, Range=f"bytes=0-{max(limit, 1) - 1}")
        data: bytes = obj["Body"].read()[:limit]
        total = int(str(obj.get("ContentRange", "")).rpartition("/")[2] or len(data))
        if total == len(data) and hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(self._label(sha256), f"sha256 {sha256}", f"sha256 {hashlib.sha256(data).hexdigest()}")
        return data

    def open_range(self, sha256: str, start: int, length: int) -> BinaryIO:
        """`length` bytes from `start`, fetched as one ranged GET (never the bytes before `start`); a part cannot be
        checked against the sha256, as with a presigned URL's ranges: whole reads are verified."""
        if length <= 0:
            return io.BytesIO(b"")
        body = self._get(sha256, Range=f"bytes={start}-{start + length - 1}")["Body"]
        return io.BufferedReader(_Body(body), buffer_size=CHUNK)

    def presigned_url(self, sha256: str, expires_s: int) -> str | None:
        """A GET URL for the object valid `expires_s` seconds, signed locally (no request to the server)."""
        with _s3_errors(f"presigning {self.key(sha256)}"):
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key(sha256)}, ExpiresIn=expires_s
            )
        return url

    def copy_to(self, sha256: str, dest: Path, *, expected_size: int | None = None) -> None:
        """Write the object to `dest` (in a folder the caller renames into place), verifying its sha256 and size."""
        size = 0
        with self.open(sha256) as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
        if expected_size is not None and size != expected_size:
            raise IntegrityError(f"{self._label(sha256)} (for {dest.name})", f"{expected_size} bytes", f"{size} bytes")

    def verify(self, sha256: str) -> bool:
        try:
            with self.open(sha256) as fh:
                while fh.read(CHUNK):
                    pass
        except (FileNotFoundError, IntegrityError):
            return False
        return True

    def iter_blobs(self) -> Iterator[BlobInfo]:
        base = self._base()
        with _s3_errors(f"listing {self.location}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    digest = obj["Key"][len(base) :].replace("/", "")
                    if obj["Key"][len(base) :].count("/") == 1 and re.fullmatch(r"[0-9a-f]{64}", digest):
                        yield BlobInfo(digest, int(obj["Size"]), obj["LastModified"].timestamp())

    def iter_digests(self) -> Iterator[str]:
        return (b.digest for b in self.iter_blobs())

    # --- writing -------------------------------------------------------------------------------------------

    def put_stream(self, stream: Readable, *, expected_sha256: str | None = None, what: str = "upload") -> tuple[str, int]:
        """Hash a stream into local scratch, then upload it under its sha256 (unless stored); a mismatch stores nothing."""
        tmp, digest, size = spool(stream, self.tmp, expected_sha256=expected_sha256, what=what)
        try:
            if not self.has(digest):
                self._upload(tmp, digest)
            return digest, size
        except OSError as exc:
            if is_disk_full(exc):
                raise StorageFull() from None
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def put_file(self, src: Path | str, *, expected_sha256: str | None = None) -> tuple[str, int]:
        h = hashlib.sha256()
        size = 0
        with open(src, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
        digest = h.hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise IntegrityError(str(src), f"sha256 {expected_sha256}", f"sha256 {digest}")
        if not self.has(digest):
            self._upload(Path(src), digest)
        return digest, size

    def put_bytes(self, data: bytes, *, expected_sha256: str | None = None) -> tuple[str, int]:
        return self.put_stream(io.BytesIO(data), expected_sha256=expected_sha256)

    def adopt(self, src: Path, sha256: str) -> None:
        """Upload a file whose sha256 the caller computed while receiving it (checked again on the way) and remove
        it; a blob already stored is left as it is and `src` stays with the caller."""
        if self.has(sha256):
            return
        self._upload(src, sha256)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(src)

    def _upload(self, path: Path, sha256: str) -> None:
        """Send `path` to the final key of `sha256`: one PUT or a multipart upload, each body with its Content-MD5, the
        sha256 recomputed from the bytes sent and compared before the object is made visible (else aborted)."""
        key = self.key(sha256)
        meta = {"sha256": sha256}
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            first = fh.read(PART_BYTES)
            h.update(first)
            nxt = fh.read(PART_BYTES) if len(first) == PART_BYTES else b""
            if not nxt:  # one part: a single PUT
                self._check_sent(h, sha256)
                with _s3_errors(f"PUT {key}"):
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=first, ContentMD5=_md5(first), Metadata=meta)
                return

            def parts() -> Iterator[bytes]:
                yield first
                data = nxt
                while data:
                    h.update(data)
                    yield data
                    data = fh.read(PART_BYTES)

            with _s3_errors(f"starting the multipart upload of {key}"):
                upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=meta)["UploadId"]
            try:
                done: list[dict[str, Any]] = []
                for n, data in enumerate(parts(), start=1):
                    with _s3_errors(f"part {n} of {key}"):
                        r = self.client.upload_part(
                            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data, ContentMD5=_md5(data)
                        )
                    done.append({"ETag": r["ETag"], "PartNumber": n})
                self._check_sent(h, sha256)
                with _s3_errors(f"completing the multipart upload of {key}"):
                    self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": done},  # type: ignore[typeddict-item]
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                raise

    def _check_sent(self, h: Any, sha256: str) -> None:
        """The bytes sent must be the ones named (a file changed since it was hashed, a wrong sha256 from a caller)."""
        if h.hexdigest() != sha256:
            raise IntegrityError(f"upload of {self._label(sha256)}", f"sha256 {sha256}", f"sha256 {h.hexdigest()}")

    def delete(self, digests: Iterable[str], *, older_than_s: float = 0.0) -> list[str]:
        """Remove objects (and multipart uploads a dead process left, and local temp files) older than `older_than_s`."""
        now = time.time()
        wanted = set(digests)
        removed = []
        for b in self.iter_blobs():
            if b.digest in wanted and now - b.mtime >= older_than_s:
                with _s3_errors(f"DELETE {self.key(b.digest)}"):
                    self.client.delete_object(Bucket=self.bucket, Key=self.key(b.digest))
                removed.append(b.digest)
        with _s3_errors(f"listing the multipart uploads of {self.location}"):
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self._base()):
                for up in page.get("Uploads", []):
                    if now - up["Initiated"].timestamp() >= older_than_s:
                        with contextlib.suppress(Exception):
                            self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
        if self.tmp.is_dir():
            for t in self.tmp.iterdir():
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    if now - t.stat().st_mtime >= older_than_s:
                        t.unlink()
        return removed
