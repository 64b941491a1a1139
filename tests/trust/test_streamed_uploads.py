"""The streamed upload routes (Git LFS batch + raw PUT) on a closed hub, on SQLite and PostgreSQL, with raw httpx
(the unmodified huggingface_hub client never takes this path: preupload answers "regular").

- Uploading needs a write token for the namespace: anonymous callers get 401, read-only and other-namespace tokens
  403, and nothing is staged.
- A staged upload belongs to its uploader and repository: another token (another user, a `*` token, even a second
  token of the same namespace) cannot commit an `lfsFile` naming it, nor can its uploader in another repository;
  the refusal is the one an unknown hash gets (no oracle), and the batch answer asks them to upload it themselves.
- The bytes are checked while they arrive: a sha256 or size mismatch is refused and nothing is staged; a body over
  `--max-upload-bytes` is a 413; a commit's refused files leave the blob store unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download

from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.tokens import TokenStore

from .conftest import BACKENDS, fresh_database, hub_registry, leftovers, serve

LIMIT = 4 << 20  # --max-upload-bytes of this hub


@dataclass
class Hub:
    server: BackgroundHub
    db_url: str | None
    alice: str  # write, namespace alice
    alice_second: str  # another write token of the same namespace: a different caller
    alice_read: str
    bob: str  # write, namespace bob
    everything: str  # write, every namespace

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=60)

    def staged(self) -> list[tuple[str, str, str]]:
        """(repository, caller key, sha256) of every staged upload: rows in the shared database, not files."""
        import sqlalchemy as sa

        from adapterhub.store.orm import HubStagedUploadRow as Row

        reg = hub_registry(self.server.home, self.db_url)
        try:
            with reg.db.session() as s:
                return sorted((r.repo_key, r.caller_key, r.sha256) for r in s.scalars(sa.select(Row)))
        finally:
            reg.db.dispose()

    def blobs(self) -> set[str]:
        reg = hub_registry(self.server.home, self.db_url)
        try:
            return set(reg.blobs.iter_digests())
        finally:
            reg.db.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"stream-{request.param}") / "home"
        home.mkdir(parents=True)
        reg = hub_registry(home, db_url)
        tokens = TokenStore(reg.db)
        made = {
            "alice": tokens.create("alice", "write")[1],
            "alice_second": tokens.create("alice", "write")[1],
            "alice_read": tokens.create("alice", "read")[1],
            "bob": tokens.create("bob", "write")[1],
            "everything": tokens.create("*", "write")[1],
        }
        reg.db.dispose()
        with serve(home, db_url, "--max-upload-bytes", str(LIMIT), open_hub=False) as server:
            h = Hub(server, db_url, **made)
            for repo in ("alice/repo", "alice/other", "alice/limits"):
                HfApi(endpoint=server.url, token=h.alice).create_repo(repo)
            yield h


def batch(h: Hub, token: str | None, repo: str, data: bytes) -> httpx.Response:
    body = {"operation": "upload", "transfers": ["basic"],
            "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]}  # fmt: skip
    with h.client(token) as c:
        return c.post(f"/{repo}.git/info/lfs/objects/batch", content=json.dumps(body),
                      headers={"Content-Type": "application/vnd.git-lfs+json"})  # fmt: skip


def put(h: Hub, token: str | None, repo: str, data: bytes, oid: str | None = None) -> httpx.Response:
    with h.client(token) as c:
        return c.put(f"/api/models/{repo}/uploads/{oid or hashlib.sha256(data).hexdigest()}", content=data)


def commit_lfs(h: Hub, token: str, repo: str, path: str, data: bytes) -> httpx.Response:
    lines = [{"key": "header", "value": {"summary": "t"}},
             {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": hashlib.sha256(data).hexdigest(), "size": len(data)}}]  # fmt: skip
    with h.client(token) as c:
        return c.post(f"/api/models/{repo}/commit/main", content=b"".join(json.dumps(x).encode() + b"\n" for x in lines))


def one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text[:500])
    msg = r.json()["error"]
    assert isinstance(msg, str) and "\n" not in msg and "Traceback" not in msg
    return msg


def test_anonymous_read_only_and_other_namespace_tokens_cannot_upload(hub: Hub) -> None:
    data = b"alice's weights, maybe " + hub.server.url.encode()
    before = hub.staged()
    for token, status in ((None, 401), (hub.alice_read, 403), (hub.bob, 403)):
        one_line_error(batch(hub, token, "alice/repo", data), status)
        one_line_error(put(hub, token, "alice/repo", data), status)
    assert hub.staged() == before
    assert leftovers(hub.server.home) == []


def test_a_staged_upload_can_be_committed_only_by_its_uploader_to_its_repository(hub: Hub, tmp_path: Path) -> None:
    data = b"alice's staged bytes " + hub.server.url.encode()
    oid = hashlib.sha256(data).hexdigest()
    assert batch(hub, hub.alice, "alice/repo", data).json()["objects"][0]["actions"]["upload"]["href"].endswith(oid)
    assert put(hub, hub.alice, "alice/repo", data).status_code == 200
    before = hub.blobs()
    assert oid in before and [row[2] for row in hub.staged() if row[0] == "alice/repo"] == [oid]  # stored, staged
    # The uploader's batch now says it is held (a resumed push skips it); anybody else is asked to upload it.
    assert "actions" not in batch(hub, hub.alice, "alice/repo", data).json()["objects"][0]
    for token in (hub.alice_second, hub.everything):
        assert "actions" in batch(hub, token, "alice/repo", data).json()["objects"][0]
    unknown = commit_lfs(hub, hub.alice, "alice/repo", "w.safetensors", b"bytes nobody uploaded")
    one_line_error(unknown, 400)
    refused = [commit_lfs(hub, hub.alice_second, "alice/repo", "w.safetensors", data),
               commit_lfs(hub, hub.everything, "alice/repo", "w.safetensors", data),
               commit_lfs(hub, hub.alice, "alice/other", "w.safetensors", data)]  # fmt: skip
    for r in refused:
        assert (r.status_code, r.json()) == (unknown.status_code, unknown.json())  # same as a hash that exists nowhere
    assert hub.blobs() == before  # refused: nothing else stored
    api = HfApi(endpoint=hub.server.url, token=hub.alice)
    assert api.list_repo_files("alice/repo") == [".gitattributes"]
    assert api.list_repo_files("alice/other") == [".gitattributes"]
    # Its uploader, in its repository, may; the bytes served are the ones sent, and the staging record is gone.
    assert commit_lfs(hub, hub.alice, "alice/repo", "w.safetensors", data).status_code == 200
    got = hf_hub_download("alice/repo", "w.safetensors", endpoint=hub.server.url, token=hub.alice, cache_dir=tmp_path)
    assert Path(got).read_bytes() == data
    assert hub.blobs() == before
    assert not any(row[2] == oid for row in hub.staged())  # committed: no longer staged


def test_bytes_that_do_not_match_their_name_are_refused_and_nothing_is_staged(hub: Hub) -> None:
    data = b"some bytes " + hub.server.url.encode()
    msg = one_line_error(put(hub, hub.alice, "alice/limits", data, oid=hashlib.sha256(b"other").hexdigest()), 400)
    assert "sha256" in msg
    one_line_error(put(hub, hub.alice, "alice/limits", data, oid="not-a-sha256"), 400)
    one_line_error(put(hub, hub.alice, "alice/limits", data, oid="A" * 64), 400)
    with hub.client(hub.alice) as c:  # chunked, without a Content-Length: refused, an upload declares its size
        r = c.put(f"/api/models/alice/limits/uploads/{hashlib.sha256(data).hexdigest()}", content=iter([data]))
    one_line_error(r, 400)
    assert leftovers(hub.server.home) == []


def test_an_upload_over_the_hubs_limit_is_a_413_and_nothing_is_staged(hub: Hub) -> None:
    big = b"\x01" * (LIMIT + 1)
    before = hub.staged()
    one_line_error(put(hub, hub.alice, "alice/limits", big), 413)
    # Under the limit the same route takes a file bigger than any other route's 1 MiB body limit.
    ok = b"\x02" * (2 << 20)
    assert put(hub, hub.alice, "alice/limits", ok).status_code == 200
    assert len(hub.staged()) == len(before) + 1
    assert leftovers(hub.server.home) == []


def test_the_unmodified_client_still_commits_inline(hub: Hub, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.server.url, token=hub.alice)
    api.create_repo("alice/plain")
    data = b"\x03" * (2 << 20) + b"x"  # preupload answers "regular": inline base64, as before
    api.upload_file(path_or_fileobj=data, path_in_repo="big.safetensors", repo_id="alice/plain")
    got = hf_hub_download("alice/plain", "big.safetensors", endpoint=hub.server.url, token=hub.alice, cache_dir=tmp_path)
    assert Path(got).read_bytes() == data


def test_a_commit_refused_for_a_moved_head_can_be_retried_without_uploading_again(hub: Hub) -> None:
    data = b"bytes for a racing commit " + hub.server.url.encode()
    assert put(hub, hub.alice, "alice/other", data).status_code == 200
    line = {
        "key": "lfsFile",
        "value": {"path": "r.bin", "algo": "sha256", "oid": hashlib.sha256(data).hexdigest(), "size": len(data)},
    }
    stale = [{"key": "header", "value": {"summary": "t", "parentCommit": "0" * 40}}, line]
    with hub.client(hub.alice) as c:
        r = c.post("/api/models/alice/other/commit/main", content=b"".join(json.dumps(x).encode() + b"\n" for x in stale))
    one_line_error(r, 409)
    assert commit_lfs(hub, hub.alice, "alice/other", "r.bin", data).status_code == 200
    assert "r.bin" in HfApi(endpoint=hub.server.url, token=hub.alice).list_repo_files("alice/other")
