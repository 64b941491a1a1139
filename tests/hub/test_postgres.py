"""The hub over PostgreSQL: the same server, push and pull, with the registry and hub tables in one database."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from adapterhub.card import SearchQuery
from adapterhub.hub.client import pull, push, remote_search
from adapterhub.hub.server.background import start_hub
from adapterhub.store.registry import Registry

pytestmark = pytest.mark.postgres


def test_hub_on_postgres(postgres_url: str, minilm_adapter_dir: Path, tmp_path: Path) -> None:
    src = Registry(home=tmp_path / "src")
    src.add(minilm_adapter_dir, "pg/adapter", "sentiment")
    with start_hub(tmp_path / "hub", args=["--open", "--database-url", postgres_url]) as hub:
        result = push("pg/adapter", remote=hub.url, registry=src)
        assert Registry(home=hub.home, database_url=postgres_url).get("pg/adapter").version == 1
        assert [c.full_name for c in remote_search(hub.url, SearchQuery(task="sentiment")).items] == ["pg/adapter"]
        api = HfApi(endpoint=hub.url)
        with pytest.raises(HfHubHTTPError) as err:
            api.create_commit("pg/adapter", [CommitOperationAdd("x.txt", b"x")], commit_message="x", parent_commit="0" * 40)
        assert err.value.response.status_code == 409
        assert api.model_info("pg/adapter").sha == result.commit
        assert pull("pg/adapter", remote=hub.url, registry=Registry(home=tmp_path / "dst")).ref == "pg/adapter@1"
