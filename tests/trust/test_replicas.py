"""Two `adapterhub serve` replicas on one PostgreSQL database and one S3 bucket (a real Ceph) are interchangeable:
a push to one is pulled from the other, concurrent pushes spread over both number the versions 1..N without gaps,
what one replica caches in memory does not go stale when the other writes, killing one mid-upload leaves the other
serving and the repo at its last good commit, and nothing but scratch lives on a replica's disk."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from adapterhub.hub.client import pull, push
from adapterhub.hub.server.background import BackgroundHub, start_hub
from adapterhub.store.registry import Registry
from tests.s3 import fresh_prefix

from .conftest import assert_store_consistent, big_adapter, fresh_database, leftovers

pytestmark = [pytest.mark.postgres, pytest.mark.s3]
EXE = str(Path(sys.executable).with_name("adapterhub"))
PUSHERS = 8


@contextmanager
def replicas(tmp_path: Path, n: int = 2) -> Iterator[tuple[list[BackgroundHub], str, str]]:
    """`n` servers, each with its own home (scratch only), on one fresh PostgreSQL database and one fresh S3 prefix."""
    with fresh_database("postgres") as db_url, fresh_prefix("replicas") as blobs, ExitStack() as stack:
        assert db_url is not None
        hubs = []
        for i in range(n):
            hub = start_hub(tmp_path / f"replica{i}", args=["--database-url", db_url, "--open"], blobs=blobs)
            stack.callback(hub.stop)
            hubs.append(hub)
        yield hubs, db_url, blobs


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "ADAPTERHUB_HOME": str(home), "HF_HUB_OFFLINE": "0"}
    env.pop("ADAPTERHUB_DATABASE_URL", None)
    env.pop("ADAPTERHUB_BLOBS", None)
    return env


def _only_scratch(home: Path) -> list[Path]:
    """What a replica keeps on its disk beyond scratch: upload scratch (hub-uploads), blob temp (blobs/tmp), the log
    the test harness writes. Anything else would be state the other replicas cannot see."""
    allowed = {("server.log",), ("hub-uploads",), ("blobs",), ("blobs", "tmp")}
    return [
        p for p in home.rglob("*") if p.relative_to(home).parts not in allowed and p.relative_to(home).parts[0] != "hub-uploads"
    ]


def test_push_to_one_replica_pull_from_the_other(tmp_path: Path, minilm_adapter_dir: Path) -> None:
    src = Registry(home=tmp_path / "src")
    src.add(minilm_adapter_dir, "team/a", "t")
    with replicas(tmp_path) as ([a, b], db_url, blobs):
        push("team/a", remote=a.url, registry=src)
        pulled = pull("team/a", remote=b.url, registry=Registry(home=tmp_path / "dst"))
        ours = {f.path: f.sha256 for f in src.get("team/a").files}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {f.path for f in pulled.files}
        assert all(ours[f.path] == f.sha256 for f in pulled.files)
        got = hf_hub_download("team/a", "adapter_config.json", endpoint=b.url, cache_dir=tmp_path / "hf")
        assert Path(got).read_bytes() == (minilm_adapter_dir / "adapter_config.json").read_bytes()
        # an in-memory cache on B (listing metadata from README front matter) does not go stale when A writes
        api_a, api_b = HfApi(endpoint=a.url), HfApi(endpoint=b.url)
        api_a.create_repo("team/cards")
        api_a.upload_file(path_or_fileobj=b"---\ntags: [first]\n---\n", path_in_repo="README.md", repo_id="team/cards")
        assert "first" in (api_b.model_info("team/cards").tags or [])
        api_a.upload_file(path_or_fileobj=b"---\ntags: [second]\n---\n", path_in_repo="README.md", repo_id="team/cards")
        tags = api_b.model_info("team/cards").tags or []
        assert "second" in tags and "first" not in tags
        assert [m.id for m in api_b.list_models(search="team/cards")] == ["team/cards"]
        api_b.delete_file("README.md", repo_id="team/cards")  # written through B: seen on A
        assert "second" not in (api_a.model_info("team/cards").tags or [])
        for hub in (a, b):
            assert _only_scratch(hub.home) == [], hub.home
            assert leftovers(hub.home) == []


@pytest.mark.slow
def test_concurrent_pushes_over_two_replicas_number_versions_without_gaps(tmp_path: Path) -> None:
    name, homes, shas = "team/shared", [], set()
    for i in range(PUSHERS):
        folder = big_adapter(tmp_path / f"a{i}", seed=i, layers=2, width=256, rank=8)
        reg = Registry(home=tmp_path / f"client{i}")
        reg.add(folder, name, "t")
        reg.db.dispose()
        homes.append(reg.home)
        shas.add(hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest())
    with replicas(tmp_path) as (hubs, db_url, blobs):
        procs = [
            subprocess.Popen(
                [EXE, "push", name, "--remote", hubs[i % 2].url],
                env=_env(home),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i, home in enumerate(homes)
        ]
        results = [(p.wait(600), *p.communicate()) for p in procs]
        assert [rc for rc, _, _ in results] == [0] * PUSHERS, [err for _, _, err in results]
        reg = Registry(home=tmp_path / "inspect", database_url=db_url, blobs=blobs)
        versions = reg.versions(name)
        assert sorted(v.version for v in versions) == list(range(1, PUSHERS + 1))
        assert {{f.path: f.sha256 for f in v.files}["adapter_model.safetensors"] for v in versions} == shas
        assert_store_consistent(reg, [name])
        reg.db.dispose()
        for hub in hubs:
            assert len(HfApi(endpoint=hub.url).list_repo_commits(name)) == PUSHERS + 1
            assert _only_scratch(hub.home) == [] and leftovers(hub.home) == []


@pytest.mark.slow
def test_killing_a_replica_mid_upload_leaves_the_other_serving(tmp_path: Path, minilm_adapter_dir: Path) -> None:
    name = "team/big"
    first = Registry(home=tmp_path / "first")
    first.add(big_adapter(tmp_path / "small", seed=1, layers=2, width=256, rank=8), name, "t")
    first.db.dispose()
    big_home = tmp_path / "bigclient"
    big = Registry(home=big_home)
    big.add(big_adapter(tmp_path / "large", seed=2, layers=24, width=2048, rank=64), name, "t")  # ~100 MB of weights
    big_sha = next(f.sha256 for f in big.get(name).files if f.path == "adapter_model.safetensors")
    big.db.dispose()
    with replicas(tmp_path) as ([a, b], db_url, blobs):
        subprocess.run([EXE, "push", name, "--remote", a.url], env=_env(first.home), check=True, capture_output=True, timeout=600)
        head = HfApi(endpoint=b.url).model_info(name).sha
        pusher = subprocess.Popen([EXE, "push", name, "--remote", a.url], env=_env(big_home),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        scratch = a.home / "hub-uploads"
        deadline = time.monotonic() + 300
        while not any(p.is_file() and p.stat().st_size > 0 and p.suffix != ".lock" for p in scratch.rglob("*")):
            assert pusher.poll() is None and time.monotonic() < deadline, "the push ended before its upload was seen"
            time.sleep(0.02)
        a.proc.send_signal(signal.SIGKILL)  # replica A dies with a large commit in flight
        a.proc.wait(60)
        assert pusher.wait(300) != 0
        api_b = HfApi(endpoint=b.url)
        assert api_b.model_info(name).sha == head  # the repo is at its last good commit
        reg = Registry(home=tmp_path / "inspect", database_url=db_url, blobs=blobs)
        assert [v.version for v in reg.versions(name)] == [1]
        assert_store_consistent(reg, [name])
        pulled = pull(name, remote=b.url, registry=Registry(home=tmp_path / "dst"))  # B serves, bytes verified
        assert pulled.ref == f"{name}@1"
        # the same push through B completes; an object A may have sent before dying is only an orphan for gc
        subprocess.run([EXE, "push", name, "--remote", b.url], env=_env(big_home), check=True, capture_output=True, timeout=600)
        assert sorted(v.version for v in reg.versions(name)) == [1, 2] and reg.blobs.has(big_sha)
        assert_store_consistent(reg, [name])
        reg.db.dispose()
        assert _only_scratch(b.home) == []


def test_a_file_uploaded_to_one_replica_is_committed_through_the_other(tmp_path: Path) -> None:
    """A streamed push's PUT and its commit may land on different replicas behind a proxy: the staged upload lives in
    the bucket and the database, not on the replica that received it."""
    import json

    import httpx

    data = b"weights streamed to one replica " + os.urandom(64)
    oid = hashlib.sha256(data).hexdigest()
    with replicas(tmp_path) as ([a, b], db_url, blobs):
        HfApi(endpoint=a.url).create_repo("team/split")
        with httpx.Client(timeout=60) as c:
            assert c.put(f"{a.url}/api/models/team/split/uploads/{oid}", content=data).status_code == 200
            lines = [{"key": "header", "value": {"summary": "split"}},
                     {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": oid, "size": len(data)}}]  # fmt: skip
            r = c.post(
                f"{b.url}/api/models/team/split/commit/main", content=b"".join(json.dumps(x).encode() + b"\n" for x in lines)
            )
        assert r.status_code == 200, r.text
        got = hf_hub_download("team/split", "w.safetensors", endpoint=a.url, cache_dir=tmp_path / "hf")
        assert Path(got).read_bytes() == data
        assert _only_scratch(a.home) == [] and _only_scratch(b.home) == []
