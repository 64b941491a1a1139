"""Large files from a hub whose blobs are on S3 go by a 302 to a short-lived presigned URL (the bytes do not pass
through the server); the unmodified huggingface_hub client follows it and gets the exact bytes, `adapterhub pull`
still checks every sha256, and small files are served directly. On the local folder everything is served directly."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download

from adapterhub.errors import IntegrityError
from adapterhub.hub.client import pull, push
from adapterhub.hub.server.background import start_hub
from adapterhub.hub.server.resolve import REDIRECT_MIN_BYTES
from adapterhub.store.registry import Registry
from tests import factories
from tests.s3 import read_raw, write_raw

from .conftest import HubServer


def _payload(n: int, seed: bytes) -> bytes:
    return (hashlib.sha256(seed).digest() * (n // 32 + 1))[:n]


def test_large_file_redirects_to_presigned_url_and_hf_client_follows(hub: HubServer, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    api.create_repo("big/files")
    big = _payload(REDIRECT_MIN_BYTES * 3 + 7, b"big")
    small = b'{"small": true}'
    api.upload_file(path_or_fileobj=big, path_in_repo="weights.safetensors", repo_id="big/files")
    api.upload_file(path_or_fileobj=small, path_in_repo="config.json", repo_id="big/files")
    url = f"{hub.url}/big/files/resolve/main/weights.safetensors"
    for method in ("HEAD", "GET"):
        r = httpx.request(method, url, follow_redirects=False)
        if hub.blobs:
            assert r.status_code == 302, r.text
            target = urlparse(r.headers["location"])
            assert target.netloc != urlparse(hub.url).netloc and "X-Amz-Signature=" in target.query
            assert "X-Amz-Expires=300" in target.query  # short-lived
            assert r.headers["x-linked-size"] == str(len(big))
            assert r.headers["x-linked-etag"].strip('"') == hashlib.sha256(big).hexdigest()
            assert len(r.headers["x-repo-commit"]) == 40
        else:
            assert r.status_code == 200
    # the redirect target serves the exact bytes, ranges included (a resumed download)
    r = httpx.get(url, follow_redirects=True, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == big[10:20]
    assert httpx.get(f"{hub.url}/big/files/resolve/main/config.json", follow_redirects=False).status_code == 200
    # the unmodified client: HEAD (302 carries the metadata), then GET of the presigned URL, without our token
    got = hf_hub_download(
        "big/files", "weights.safetensors", cache_dir=tmp_path / "cache", endpoint=hub.url, token="hf_secret_not_for_s3"
    )
    assert Path(got).read_bytes() == big
    got = hf_hub_download("big/files", "config.json", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert Path(got).read_bytes() == small


@pytest.fixture
def big_source(tmp_path: Path) -> Registry:
    """A registry holding big/adapter@1 whose weights are over REDIRECT_MIN_BYTES."""
    folder = factories.write_large_adapter(tmp_path / "a", seed=3, layers=4, width=2048, rank=32)
    assert (folder / "adapter_model.safetensors").stat().st_size > REDIRECT_MIN_BYTES
    reg = Registry(home=tmp_path / "src")
    reg.add(folder, "big/adapter", "t")
    return reg


def test_pull_through_redirect_checks_every_sha256(hub: HubServer, big_source: Registry, tmp_path: Path) -> None:
    push("big/adapter", remote=hub.url, repo="big/adapter", registry=big_source)
    pulled = pull("big/adapter", remote=hub.url, registry=Registry(home=tmp_path / "t1"))
    assert {f.path: f.sha256 for f in pulled.files} == {f.path: f.sha256 for f in big_source.get("big/adapter").files}
    weights = next(f for f in big_source.get("big/adapter").files if f.path == "adapter_model.safetensors")
    blobs = hub.registry().blobs
    raw = bytearray(read_raw(blobs, weights.sha256))
    raw[len(raw) // 2] ^= 0xFF  # damaged where the hub does not look: only the puller's sha256 check can tell
    write_raw(blobs, weights.sha256, bytes(raw))
    try:
        target = Registry(home=tmp_path / "t2")
        with pytest.raises(IntegrityError):
            pull("big/adapter", remote=hub.url, registry=target)
        assert target.list(all_versions=True) == [] and not target.blobs.has(weights.sha256)
    finally:
        raw[len(raw) // 2] ^= 0xFF
        write_raw(blobs, weights.sha256, bytes(raw))


def test_private_file_gets_no_presigned_url_without_a_token(tmp_path: Path) -> None:
    """The redirect comes after the access check: anonymous callers get the same 404 as for a missing repository."""
    from tests.s3 import fresh_prefix

    with fresh_prefix("private") as blobs, start_hub(tmp_path / "home", args=["--token", "alice:s3cret"], blobs=blobs) as hub:
        api = HfApi(endpoint=hub.url, token="s3cret")
        api.create_repo("alice/secret", private=True)
        api.upload_file(
            path_or_fileobj=_payload(REDIRECT_MIN_BYTES * 2, b"p"), path_in_repo="w.safetensors", repo_id="alice/secret"
        )
        url = f"{hub.url}/alice/secret/resolve/main/w.safetensors"
        anon = httpx.head(url, follow_redirects=False)
        assert anon.status_code == 404 and "location" not in anon.headers
        assert httpx.get(url, follow_redirects=False).status_code == 404
        authed = httpx.head(url, follow_redirects=False, headers={"Authorization": "Bearer s3cret"})
        assert authed.status_code == 302 and "X-Amz-Signature=" in authed.headers["location"]


def test_no_redirect_serves_big_files_through_the_hub(tmp_path: Path) -> None:
    """`serve --no-redirect` (clients that cannot reach the bucket): a big file on S3 comes from the hub itself, 200
    with the exact bytes and ranges, no presigned URL handed out."""
    from tests.s3 import fresh_prefix

    big = _payload(REDIRECT_MIN_BYTES * 2 + 3, b"proxied")
    with fresh_prefix("noredirect") as blobs, start_hub(tmp_path / "home", args=["--open", "--no-redirect"], blobs=blobs) as hub:
        api = HfApi(endpoint=hub.url)
        api.create_repo("big/proxied")
        api.upload_file(path_or_fileobj=big, path_in_repo="weights.safetensors", repo_id="big/proxied")
        url = f"{hub.url}/big/proxied/resolve/main/weights.safetensors"
        r = httpx.get(url, follow_redirects=False)
        assert r.status_code == 200 and r.content == big and "location" not in r.headers
        r = httpx.get(url, follow_redirects=False, headers={"Range": "bytes=5-9"})
        assert r.status_code == 206 and r.content == big[5:10]
        got = hf_hub_download("big/proxied", "weights.safetensors", cache_dir=tmp_path / "cache", endpoint=hub.url)
        assert Path(got).read_bytes() == big
