"""Commits a hostile writer sends to a real hub, on SQLite and PostgreSQL (issue 9, sections 1-3):

- an `lfsFile` may only name a blob its own repository holds or the same commit uploads: another repository's
  (private) blob is refused exactly like a hash that exists nowhere, so it is neither stolen nor probed;
- a refused commit (bad sha256 against the card, a bad config, a listed pickle, a bad header) leaves the blob store
  as it was: uploads wait in scratch until the commit is accepted;
- caps: tensors per file, files per commit, config size; the adapter is checked before the write lock is taken;
- inputs that used to be 500s: a deeply nested config, `lora_alpha` = 10**400, a non-ASCII file name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.db import LOCK_TIMEOUT_ENV
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore
from adapterhub.tensorfile import MAX_TENSORS

from .conftest import BACKENDS, assert_store_consistent, big_adapter, fresh_database, hub_registry, serve


@dataclass
class Hub:
    hub: BackgroundHub
    db_url: str | None
    acme: str  # write token for acme
    evil: str  # write token for evil
    weights: bytes
    config: bytes
    card: bytes  # adapterhub.json for weights + config

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.hub.url, timeout=120, headers={"Authorization": f"Bearer {token}"})

    def api(self, token: str) -> HfApi:
        return HfApi(endpoint=self.hub.url, token=token)

    def registry(self) -> Registry:
        return hub_registry(self.hub.home, self.db_url)

    def blobs(self) -> set[str]:
        reg = self.registry()
        try:
            return set(reg.blobs.iter_digests())
        finally:
            reg.db.dispose()

    def versions(self, repo: str) -> list[int]:
        reg = self.registry()
        try:
            return [c.version for c in reg.versions(repo)]
        except LookupError:
            return []
        finally:
            reg.db.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = big_adapter(tmp_path_factory.mktemp("strict-src") / "a", layers=1, width=64, rank=4)
    src = Registry(home=tmp_path_factory.mktemp("strict-reg"))
    card = src.add(folder, "acme/model", "t")
    src.db.dispose()
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"strict-{request.param}") / "home"
        home.mkdir(parents=True)
        reg = hub_registry(home, db_url)
        tokens = TokenStore(reg.db)
        acme, evil = tokens.create("acme", "write")[1], tokens.create("evil", "write")[1]
        reg.db.dispose()
        os.environ[LOCK_TIMEOUT_ENV] = "4000"  # a lock held longer than 4 s is DatabaseBusy (503) on this hub
        try:
            bg = serve(home, db_url)
        finally:
            del os.environ[LOCK_TIMEOUT_ENV]
        with bg:
            h = Hub(bg, db_url, acme, evil, (folder / "adapter_model.safetensors").read_bytes(),
                    (folder / "adapter_config.json").read_bytes(), card.model_dump_json().encode())  # fmt: skip
            h.api(acme).create_repo("acme/secret", private=True)
            h.api(acme).create_repo("acme/model")
            h.api(evil).create_repo("evil/loot")
            h.api(acme).create_repo("acme/locked")
            yield h
            assert bg.proc.poll() is None, "the hub died"
            reg = hub_registry(home, db_url)
            assert_store_consistent(reg, ["acme/model", "acme/secret", "evil/loot"])
            reg.db.dispose()


def new_repo(h: Hub, name: str) -> str:
    """A fresh acme repository per test, so one test's refusals (or, on old code, acceptances) cannot affect another."""
    h.api(h.acme).create_repo(f"acme/{name}")
    return f"acme/{name}"


def ndjson(*lines: object) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def file_line(path: str, data: bytes) -> dict[str, object]:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def lfs_line(path: str, data: bytes) -> dict[str, object]:
    return {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": hashlib.sha256(data).hexdigest(), "size": len(data)}}


def commit(h: Hub, token: str, repo: str, *lines: object) -> httpx.Response:
    with h.client(token) as c:
        return c.post(f"/api/models/{repo}/commit/main", content=ndjson({"key": "header", "value": {"summary": "t"}}, *lines))


def one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text[:500])
    msg = r.json()["error"]
    assert isinstance(msg, str) and "\n" not in msg and "Traceback" not in msg
    return msg


def adapter_lines(h: Hub, *, weights: bytes | None = None, config: bytes | None = None, card: bytes | None = None) -> list[object]:
    return [file_line("adapter_config.json", h.config if config is None else config),
            file_line("adapter_model.safetensors", h.weights if weights is None else weights),
            file_line("adapterhub.json", h.card if card is None else card)]  # fmt: skip


def safetensors_bytes(header: dict[str, object], data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# --- section 1: foreign blobs -------------------------------------------------------------------------------------


def test_an_lfs_copy_of_another_repositorys_blob_is_refused_like_an_unknown_hash(hub: Hub) -> None:
    secret = b"acme's private bytes " + hub.hub.url.encode()
    assert commit(hub, hub.acme, "acme/secret", file_line("secret.txt", secret)).status_code == 200
    before = hub.blobs()
    foreign = commit(hub, hub.evil, "evil/loot", lfs_line("loot.txt", secret))
    unknown = commit(hub, hub.evil, "evil/loot", lfs_line("loot.txt", b"bytes that exist nowhere"))
    assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())  # no existence oracle
    one_line_error(foreign, 400)
    with httpx.Client(base_url=hub.hub.url) as c:
        assert c.get("/evil/loot/resolve/main/loot.txt").status_code == 404
    assert "loot.txt" not in hub.api(hub.evil).list_repo_files("evil/loot")
    assert hub.blobs() == before
    # What lfsFile is for still works: a file this repository already holds, or one the same commit uploads.
    assert commit(hub, hub.acme, "acme/secret", lfs_line("copy.txt", secret)).status_code == 200
    own = b"evil's own bytes"
    assert commit(hub, hub.evil, "evil/loot", file_line("a.txt", own), lfs_line("b.txt", own)).status_code == 200
    got = Path(hf_hub_download("evil/loot", "b.txt", endpoint=hub.hub.url, token=hub.evil)).read_bytes()
    assert got == own


# --- section 3: refused commits store nothing; pickles ------------------------------------------------------------


def refused_commits(h: Hub) -> dict[str, list[object]]:
    card = json.loads(h.card)
    lying = json.loads(h.card)
    lying["files"][0]["sha256"] = "0" * 64
    pickle = b"\x80\x04\x95pickled"
    with_pickle = json.loads(h.card)
    with_pickle["files"].append({"path": "adapter_model.bin", "sha256": hashlib.sha256(pickle).hexdigest(), "size": len(pickle)})
    dup = safetensors_bytes({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                             "b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\x00")  # fmt: skip
    no_card = [file_line("adapter_config.json", h.config), file_line("adapter_model.safetensors", dup)]
    del card
    return {
        "sha256 differs from the card": adapter_lines(h, card=json.dumps(lying).encode()),
        "config is not JSON": [file_line("adapter_config.json", b"{not json"), file_line("adapter_model.safetensors", h.weights)],
        "card lists a pickle": [*adapter_lines(h, card=json.dumps(with_pickle).encode()), file_line("adapter_model.bin", pickle)],
        "overlapping tensors": no_card,
    }


@pytest.mark.parametrize("case", ["sha256 differs from the card", "config is not JSON", "card lists a pickle", "overlapping tensors"])
def test_a_refused_commit_leaves_the_blob_store_unchanged(hub: Hub, case: str) -> None:
    repo = new_repo(hub, "refused-" + hashlib.sha256(case.encode()).hexdigest()[:8])
    before, head = hub.blobs(), hub.api(hub.acme).model_info(repo).sha
    r = commit(hub, hub.acme, repo, *refused_commits(hub)[case])
    msg = one_line_error(r, 400)
    if case == "card lists a pickle":
        assert "pickle" in msg
    assert hub.blobs() == before
    assert hub.api(hub.acme).model_info(repo).sha == head
    assert hub.versions(repo) == []


def test_add_never_stores_a_pickle_beside_the_weights(tmp_path: Path) -> None:
    folder = big_adapter(tmp_path / "a", layers=1, width=64, rank=4)
    for name in ("extra.pickle", "optimizer.PT", "notes.txt"):
        (folder / name).write_bytes(b"\x80\x04\x95 pickled" if name != "notes.txt" else b"notes")
    reg = Registry(home=tmp_path / "reg")
    card = reg.add(folder, "me/a", "t")
    reg.db.dispose()
    assert sorted(f.path for f in card.files) == ["adapter_config.json", "adapter_model.safetensors", "notes.txt"]


def test_push_refuses_a_version_that_lists_a_pickle_in_any_case(tmp_path: Path) -> None:
    """A registry written before the one suffix list (its `add` kept `optimizer.PT`, `x.pickle`) cannot push them."""
    from adapterhub.errors import PickleRefused
    from adapterhub.hub.client import push
    from adapterhub.store.orm import AdapterRow, FileRow

    folder = big_adapter(tmp_path / "a", layers=1, width=64, rank=4)
    reg = Registry(home=tmp_path / "reg")
    reg.add(folder, "me/a", "t")
    for name in ("optimizer.PT", "state.pickle"):
        sha256, size = reg.blobs.put_bytes(b"\x80\x04\x95 pickled " + name.encode())
        with reg.db.write() as s:
            row = s.scalars(sa.select(AdapterRow)).one()
            s.add(FileRow(adapter_id=row.id, path=name, sha256=sha256, size=size))
        with pytest.raises(PickleRefused):
            push("me/a", remote="http://127.0.0.1:9", registry=reg)
        with reg.db.write() as s:
            s.execute(sa.delete(FileRow).where(FileRow.path == name))
    reg.db.dispose()


# --- section 2: caps, and checks before the write lock ---------------------------------------------------------


def test_a_header_with_too_many_tensors_is_refused(hub: Hub) -> None:
    header = {f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(MAX_TENSORS + 1)}
    before, repo = hub.blobs(), new_repo(hub, "many-tensors")
    r = commit(hub, hub.acme, repo, file_line("adapter_config.json", hub.config), file_line("adapter_model.safetensors", safetensors_bytes(header)))
    assert "over the limit" in one_line_error(r, 400)
    assert hub.blobs() == before


def test_a_commit_of_too_many_files_is_refused(hub: Hub) -> None:
    repo = new_repo(hub, "many-files")
    head = hub.api(hub.acme).model_info(repo).sha
    r = commit(hub, hub.acme, repo, *[file_line(f"f/{i}.txt", b"%d" % i) for i in range(1001)])
    assert "1001 files" in one_line_error(r, 413)
    assert hub.api(hub.acme).model_info(repo).sha == head
    assert commit(hub, hub.acme, repo, *[file_line(f"f/{i}.txt", b"%d" % i) for i in range(1000)]).status_code == 200


def test_a_config_over_one_mebibyte_is_refused(hub: Hub) -> None:
    config = json.loads(hub.config)
    config["notes"] = "x" * (1 << 20)
    r = commit(hub, hub.acme, new_repo(hub, "big-config"), *adapter_lines(hub, config=json.dumps(config).encode())[:2])
    assert "over 1048576 bytes" in one_line_error(r, 400)


@pytest.fixture
def write_lock(hub: Hub) -> Iterator[None]:
    """Hold the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: the branch refs table) meanwhile."""
    if hub.db_url is None:
        conn = sqlite3.connect(hub.hub.home / "registry.db", isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = sa.create_engine(hub.db_url)
    with engine.connect() as conn:
        conn.execute(sa.text("LOCK TABLE hub_refs, repos IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


def test_a_bad_adapter_is_refused_without_waiting_for_the_write_lock(hub: Hub, write_lock: None) -> None:
    """The checks run before the transaction: while another writer holds the lock, a bad adapter is still a 400
    (before, the commit queued behind the lock and ran its checks inside the transaction)."""
    bad = safetensors_bytes({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 1]}}, b"\x00")
    r = commit(hub, hub.acme, "acme/locked", file_line("adapter_config.json", hub.config), file_line("adapter_model.safetensors", bad))
    one_line_error(r, 400)


def test_a_lock_held_too_long_is_503_with_retry_after_and_one_cli_line(hub: Hub, write_lock: None, tmp_path: Path) -> None:
    """A good commit waits for the lock only as long as the hub's lock timeout, then 503 + Retry-After (was a bare
    500 after 60 s on SQLite, and an endless wait on PostgreSQL); `adapterhub add` prints one line."""
    r = commit(hub, hub.acme, "acme/locked", *adapter_lines(hub))
    one_line_error(r, 503)
    assert int(r.headers["retry-after"]) > 0
    folder = big_adapter(tmp_path / "a", layers=1, width=64, rank=4)
    env = {**os.environ, "ADAPTERHUB_HOME": str(hub.hub.home), LOCK_TIMEOUT_ENV: "2000"}
    env.pop("ADAPTERHUB_DATABASE_URL", None)
    if hub.db_url:
        env["ADAPTERHUB_DATABASE_URL"] = hub.db_url
    out = subprocess.run([sys.executable, "-m", "adapterhub", "add", str(folder), "--name", "acme/cli", "--task", "t"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 1, out
    assert out.stderr.count("\n") == 1 and "database is busy" in out.stderr and "Traceback" not in out.stderr, out.stderr


# --- section 3: 500s that must be 4xx ----------------------------------------------------------------------------


def test_hostile_configs_are_400(hub: Hub) -> None:
    api, repo = hub.api(hub.acme), new_repo(hub, "hostile-config")
    nested = b'{"r": 4, "lora_alpha": 8, "target_modules": ["q"], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_alpha = json.loads(hub.config)
    huge_alpha["lora_alpha"] = 10**400
    huge_rank = json.loads(hub.config)
    huge_rank["r"] = 10**30
    for config in (nested, json.dumps(huge_alpha).encode(), json.dumps(huge_rank).encode()):
        with pytest.raises(HfHubHTTPError) as err:
            api.create_commit(repo, [CommitOperationAdd("adapter_config.json", config),
                                             CommitOperationAdd("adapter_model.safetensors", hub.weights)], commit_message="x")  # fmt: skip
        assert err.value.response.status_code == 400
        assert "\n" not in err.value.response.json()["error"]


def test_a_non_ascii_file_name_commits_and_downloads(hub: Hub) -> None:
    api = hub.api(hub.acme)
    name = "données/résumé 日本.txt"
    api.create_commit("acme/model", [CommitOperationAdd(name, "é".encode() * 10)], commit_message="unicode")
    assert name in api.list_repo_files("acme/model")
    got = hf_hub_download("acme/model", name, endpoint=hub.hub.url, token=hub.acme)
    assert Path(got).read_bytes() == "é".encode() * 10
    with httpx.Client(base_url=hub.hub.url, headers={"Authorization": f"Bearer {hub.acme}"}) as c:
        r = c.head(f"/acme/model/resolve/main/{name}")
        assert r.status_code == 200
        assert "filename*=UTF-8''" in r.headers["content-disposition"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_disk_is_507_with_retry_after_and_nothing_half_stored(backend: str, tmp_path: Path) -> None:
    """The hub's storage on a 4 MiB tmpfs: an upload that does not fit is refused with 507 + Retry-After and a
    one-line error, leaves no scratch file, and a commit that fits still lands afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(home)], capture_output=True, check=False).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        with fresh_database(backend) as db_url, serve(home, db_url) as bg:
            api = HfApi(endpoint=bg.url, token=False)
            api.create_repo("t/full")
            with httpx.Client(base_url=bg.url, timeout=120) as c:
                data = os.urandom(5 << 20)  # more than the whole disk
                r = c.post("/api/models/t/full/commit/main", content=ndjson(file_line("big.bin.txt", data)))
                assert r.status_code in (503, 507), (r.status_code, r.text[:300])
                assert "\n" not in r.json()["error"] and int(r.headers["retry-after"]) > 0
                scratch = [p for p in (home / "hub-uploads").rglob("*") if p.is_file() and p.suffix != ".lock"]
                assert scratch == []
                ok = c.post("/api/models/t/full/commit/main", content=ndjson(file_line("small.txt", b"fits")))
                assert ok.status_code == 200, ok.text[:300]
            reg = hub_registry(home, db_url)
            assert_store_consistent(reg)
            reg.db.dispose()
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
