"""Twenty `adapterhub push` processes pushing new versions of the same adapter to one hub at once, on SQLite and
PostgreSQL: every push lands (a push that loses the race for the head waits a jittered, growing time and commits again
on the new head), the hub's registry numbers the versions 1..20 without gaps or duplicates, and each version holds one
pusher's exact bytes. With ten immediate retries, 7 of 20 failed on PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from adapterhub.store.registry import Registry

from .conftest import BACKENDS, assert_store_consistent, big_adapter, fresh_database, hub_registry, leftovers, serve

PUSHERS = 20
NAME = "team/shared"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_twenty_concurrent_pushes_of_one_adapter(backend: str, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("adapterhub"))
    homes, shas = [], set()
    for i in range(PUSHERS):  # twenty people, each with their own registry and their own training run
        folder = big_adapter(tmp_path / f"a{i}", seed=i, layers=2, width=256, rank=8)
        home = tmp_path / f"client{i}"
        reg = Registry(home=home)
        reg.add(folder, NAME, "t")
        reg.db.dispose()
        homes.append(home)
        shas.add(hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest())
    assert len(shas) == PUSHERS
    with fresh_database(backend) as db_url, serve(tmp_path / "hub", db_url) as hub:
        procs = []
        for home in homes:
            env = {**os.environ, "ADAPTERHUB_HOME": str(home), "HF_HUB_OFFLINE": "0"}
            env.pop("ADAPTERHUB_DATABASE_URL", None)
            procs.append(subprocess.Popen([exe, "push", NAME, "--remote", hub.url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [(p.wait(600), *p.communicate()) for p in procs]
        assert [rc for rc, _, _ in results] == [0] * PUSHERS, [err for _, _, err in results]

        reg = hub_registry(hub.home, db_url)
        versions = reg.versions(NAME)
        assert sorted(v.version for v in versions) == list(range(1, PUSHERS + 1))
        weights = [{f.path: f.sha256 for f in v.files}["adapter_model.safetensors"] for v in versions]
        assert set(weights) == shas  # each push is one version with its pusher's bytes; none lost, none twice
        assert_store_consistent(reg, [NAME])
        reg.db.dispose()
        commits = HfApi(endpoint=hub.url, token=False).list_repo_commits(NAME)
        assert len(commits) == PUSHERS + 1  # plus the repository's initial commit: a linear history, nothing overwritten
        assert leftovers(hub.home) == []
