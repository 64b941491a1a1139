"""Staged uploads (streamed push) are bounded: one token may hold only so many uncommitted ones, an upload older
than the expiry can no longer be committed and is forgotten while the server runs, and two PUTs of the same bytes at
once both succeed (one row, refreshed), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import HfApi

from adapterhub.errors import PayloadTooLarge
from adapterhub.hub.server import uploads
from adapterhub.hub.server.access import Caller
from adapterhub.store.orm import HubStagedUploadRow as Row
from adapterhub.store.orm import utcnow
from adapterhub.store.registry import Registry

from .conftest import BACKENDS, fresh_database, hub_registry, serve


@pytest.fixture(params=BACKENDS)
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    with fresh_database(request.param) as db_url:
        r = hub_registry(tmp_path / "home", db_url)
        yield r
        r.db.dispose()


def _scratch_file(folder: Path, data: bytes) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / hashlib.sha256(data).hexdigest()[:16]
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def test_one_token_holds_only_so_many_staged_uploads(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "MAX_STAGED_PER_CALLER", 3)
    staging = uploads.StagedUploads(reg.db, reg.blobs)
    alice, bob = Caller("alice", "alice", True, key="token-a"), Caller("bob", "bob", True, key="token-b")
    for i in range(3):
        p, sha = _scratch_file(tmp_path / "s", b"upload %d" % i)
        staging.stage("alice/r", alice, p, sha, "0" * 40, p.stat().st_size)
    p, sha = _scratch_file(tmp_path / "s", b"one too many")
    with pytest.raises(PayloadTooLarge, match="staged"):
        staging.stage("alice/r", alice, p, sha, "0" * 40, p.stat().st_size)
    assert not reg.blobs.has(sha)  # refused before anything was stored
    staging.stage("bob/r", bob, p, sha, "0" * 40, p.stat().st_size)  # another token is not counted against alice


def test_an_expired_staged_upload_cannot_be_committed_and_is_forgotten(reg: Registry, tmp_path: Path) -> None:
    staging = uploads.StagedUploads(reg.db, reg.blobs)
    alice = Caller("alice", "alice", True, key="token-a")
    p, sha = _scratch_file(tmp_path / "s", b"old bytes")
    staging.stage("alice/r", alice, p, sha, "0" * 40, 9)
    assert set(staging.find("alice/r", alice, [sha])) == {sha}
    with reg.db.write() as s:
        s.execute(sa.update(Row).values(created_at=utcnow() - timedelta(seconds=uploads.STAGED_TTL_S + 60)))
    assert staging.find("alice/r", alice, [sha]) == {}  # expired: no commit may name it any more
    staging.prune()
    with reg.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Row)) == 0
    report = reg.gc(grace_seconds=0)
    assert sha in report.removed  # and its blob goes with the next gc


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_bytes_put_at_once_all_succeed(backend: str, tmp_path: Path) -> None:
    data = b"the same weights, sent twice at once " * 1000
    oid = hashlib.sha256(data).hexdigest()
    with fresh_database(backend) as db_url:
        home = tmp_path / "home"
        hub_registry(home, db_url).db.dispose()
        with serve(home, db_url, open_hub=True) as server:
            HfApi(endpoint=server.url).create_repo("team/race")
            codes: list[int] = []

            def put() -> None:
                with httpx.Client(timeout=60) as c:
                    codes.append(c.put(f"{server.url}/api/models/team/race/uploads/{oid}", content=data).status_code)

            for _ in range(4):
                threads = [threading.Thread(target=put) for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            assert codes == [200] * 32, codes
