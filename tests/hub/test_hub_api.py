"""The Hub HTTP API subset, exercised only through the unmodified huggingface_hub client (and raw HTTP where the
client hides a header): create/upload/commit, downloads with ETags and ranges, listings, errors, revisions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from adapterhub.hub.oids import git_blob_sha1

from .conftest import PAGE_SIZE, HubServer


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_create_repo_conflict_carries_url(api: HfApi, hub: HubServer) -> None:
    url = api.create_repo("alice/created")
    assert str(url) == f"{hub.url}/alice/created"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/created")
    assert err.value.response.status_code == 409
    assert err.value.response.json()["url"] == f"{hub.url}/alice/created"
    assert str(api.create_repo("alice/created", exist_ok=True)) == f"{hub.url}/alice/created"
    info = api.model_info("alice/created")
    assert [s.rfilename for s in info.siblings] == [".gitattributes"] and len(info.sha) == 40


def test_upload_folder_download_and_listings(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, an LFS-type file by its suffix
    files = {"a.txt": b"hello\n", "sub/deeper/b.json": b'{"x": 1}', "sub/w.safetensors": big, "c.md": b"# c\n", "sub/d.txt": b"d"}
    api.create_repo("alice/folder")
    commit = api.upload_folder(folder_path=_folder(tmp_path / "src", files), repo_id="alice/folder")
    assert len(commit.oid) == 40

    assert sorted(api.list_repo_files("alice/folder")) == sorted([".gitattributes", *files])
    # The tree spans several pages (PAGE_SIZE entries each): the client follows the Link header.
    tree = {e.path: e for e in api.list_repo_tree("alice/folder", recursive=True)}
    assert len(tree) > PAGE_SIZE
    assert {"sub", "sub/deeper"} <= set(tree)
    assert tree["a.txt"].size == 6 and tree["a.txt"].blob_id == git_blob_sha1(b"hello\n")
    assert tree["sub/w.safetensors"].lfs.sha256 == hashlib.sha256(big).hexdigest()
    top = {e.path for e in api.list_repo_tree("alice/folder")}
    assert top == {".gitattributes", "a.txt", "c.md", "sub"}
    assert {e.path for e in api.list_repo_tree("alice/folder", path_in_repo="sub")} == {
        "sub/deeper",
        "sub/w.safetensors",
        "sub/d.txt",
    }

    infos = {e.path: e for e in api.get_paths_info("alice/folder", ["a.txt", "sub", "nope.txt"])}
    assert set(infos) == {"a.txt", "sub"} and infos["a.txt"].size == 6 and infos["sub"].tree_id == tree["sub"].tree_id

    info = api.model_info("alice/folder", files_metadata=True)
    assert info.sha == commit.oid
    sib = {s.rfilename: s for s in info.siblings}
    assert sib["sub/w.safetensors"].size == len(big) and sib["sub/w.safetensors"].lfs.sha256 == hashlib.sha256(big).hexdigest()
    assert sib["a.txt"].lfs is None and sib["a.txt"].blob_id == git_blob_sha1(b"hello\n")

    cache = tmp_path / "cache"
    path = hf_hub_download("alice/folder", "sub/w.safetensors", endpoint=hub.url, cache_dir=cache)
    assert Path(path).read_bytes() == big
    assert commit.oid in path  # stored under the commit the server reported (X-Repo-Commit)
    snap = Path(snapshot_download("alice/folder", endpoint=hub.url, cache_dir=tmp_path / "snap"))
    assert all((snap / rel).read_bytes() == data for rel, data in files.items())

    meta = get_hf_file_metadata(hf_hub_url("alice/folder", "sub/w.safetensors", endpoint=hub.url))
    assert meta.etag == hashlib.sha256(big).hexdigest() and meta.size == len(big) and meta.commit_hash == commit.oid
    small = get_hf_file_metadata(hf_hub_url("alice/folder", "a.txt", endpoint=hub.url))
    assert small.etag == git_blob_sha1(b"hello\n") and small.size == 6


def test_raw_download_headers_and_ranges(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    api.create_repo("alice/ranges")
    api.upload_folder(folder_path=_folder(tmp_path, {"w.safetensors": data}), repo_id="alice/ranges")
    url = f"{hub.url}/alice/ranges/resolve/main/w.safetensors"
    head = httpx.head(url)
    assert head.status_code == 200
    assert head.headers["x-linked-etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert head.headers["x-linked-size"] == head.headers["content-length"] == str(len(data))
    assert len(head.headers["x-repo-commit"]) == 40
    part = httpx.get(url, headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    assert httpx.get(url, headers={"Range": "bytes=25000-"}).content == data[25000:]
    assert httpx.get(url, headers={"Range": "bytes=-10"}).content == data[-10:]
    assert httpx.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


def test_errors_map_to_the_clients_exceptions(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    api.create_repo("alice/errors")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/no-such-repo")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/no-such-repo", "x.txt", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/errors", ".gitattributes", revision="f" * 40, endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/errors", "missing.txt", endpoint=hub.url, cache_dir=tmp_path)
    r = httpx.head(f"{hub.url}/alice/errors/resolve/main/missing.txt")
    assert r.headers["x-error-code"] == "EntryNotFound" and r.headers["x-repo-commit"] == api.model_info("alice/errors").sha


def test_commits_move_main_and_old_revisions_stay(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    api.create_repo("alice/history")
    first = api.create_commit(
        "alice/history",
        [CommitOperationAdd("v.txt", b"one"), CommitOperationAdd("gone/x.txt", b"x"), CommitOperationAdd("keep.txt", b"k")],
        commit_message="first",
    )
    second = api.create_commit(
        "alice/history",
        [CommitOperationAdd("v.txt", b"two"), CommitOperationDelete("gone/"), CommitOperationDelete("keep.txt")],
        commit_message="second",
        parent_commit=first.oid,
    )
    assert api.model_info("alice/history").sha == second.oid

    def read(rev: str) -> bytes:
        return Path(hf_hub_download("alice/history", "v.txt", revision=rev, endpoint=hub.url, cache_dir=tmp_path)).read_bytes()

    assert read(first.oid) == b"one" and read(second.oid) == b"two" and read("main") == b"two"
    assert sorted(api.list_repo_files("alice/history", revision=first.oid)) == [
        ".gitattributes",
        "gone/x.txt",
        "keep.txt",
        "v.txt",
    ]
    assert sorted(api.list_repo_files("alice/history")) == [".gitattributes", "v.txt"]
    assert [c.title for c in api.list_repo_commits("alice/history")] == ["second", "first", "initial commit"]
    assert api.list_repo_refs("alice/history").branches[0].target_commit == second.oid
    # A commit built on a stale parent is refused and changes nothing.
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            "alice/history", [CommitOperationAdd("v.txt", b"three")], commit_message="late", parent_commit=first.oid
        )
    assert err.value.response.status_code == 409
    assert api.model_info("alice/history").sha == second.oid


def test_list_models_search_author_filter(api: HfApi, hub: HubServer, tmp_path: Path) -> None:
    readme = b"---\nlibrary_name: peft\ntags:\n- listing-test\n- sentiment\n---\n# x\n"
    for repo in ("bob/listing-one", "bob/listing-two", "carol/listing-three"):
        api.create_repo(repo)
    api.upload_folder(folder_path=_folder(tmp_path / "a", {"README.md": readme}), repo_id="bob/listing-one")
    api.upload_folder(folder_path=_folder(tmp_path / "b", {"README.md": readme}), repo_id="carol/listing-three")
    assert {m.id for m in api.list_models(search="listing")} == {"bob/listing-one", "bob/listing-two", "carol/listing-three"}
    assert {m.id for m in api.list_models(author="bob")} >= {"bob/listing-one", "bob/listing-two"}
    assert all(m.author == "bob" for m in api.list_models(author="bob"))
    assert {m.id for m in api.list_models(filter="listing-test")} == {"bob/listing-one", "carol/listing-three"}
    assert {m.id for m in api.list_models(filter=["listing-test", "sentiment"], author="carol")} == {"carol/listing-three"}
    assert len(list(api.list_models(search="listing", limit=2))) == 2
    one = next(iter(api.list_models(search="listing-one", full=True)))
    assert "README.md" in [s.rfilename for s in one.siblings] and one.library_name == "peft"
    carded = next(iter(api.list_models(search="listing-three", cardData=True)))
    assert carded.card_data.tags == ["listing-test", "sentiment"] and carded.siblings is None


def test_whoami_and_validate_yaml(api: HfApi, hub: HubServer) -> None:
    assert HfApi(endpoint=hub.url, token="anything").whoami()["name"] == "adapterhub"
    ok = httpx.post(f"{hub.url}/api/validate-yaml", json={"content": "---\nlicense: mit\n---\nhi", "repoType": "model"})
    assert ok.status_code == 200
    bad = httpx.post(f"{hub.url}/api/validate-yaml", json={"content": "---\nlicense: [mit\n---\nhi", "repoType": "model"})
    assert bad.status_code == 400 and "YAML" in bad.json()["error"]


def test_preupload_answers_regular_with_current_oid(api: HfApi, hub: HubServer) -> None:
    api.create_repo("alice/pre")
    api.create_commit("alice/pre", [CommitOperationAdd("a.bin.txt", b"abc")], commit_message="x")
    r = httpx.post(
        f"{hub.url}/api/models/alice/pre/preupload/main",
        json={
            "files": [{"path": "a.bin.txt", "sample": "", "size": 3}, {"path": "model.safetensors", "sample": "", "size": 10**9}]
        },
    )
    got = {f["path"]: f for f in r.json()["files"]}
    assert {f["uploadMode"] for f in got.values()} == {"regular"}
    assert got["a.bin.txt"]["oid"] == git_blob_sha1(b"abc") and got["model.safetensors"]["oid"] is None
