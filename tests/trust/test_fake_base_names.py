"""Base names from pushes are labels, never identity, on a real hub (SQLite and PostgreSQL) with two write tokens.

`evil` pushes adapters whose card declares the base `meta-llama/Llama-3-8B` (and `mistralai/Mistral-7B`) with made-up
hashes. Search by those names lists only adapters on a base whose weights the hub's registry fingerprinted under that
name; search by the real base's fingerprint lists only adapters that declare that fingerprint; and the card says the
declared base is unverified and who declared its name. Before, a name given to `search --base` matched any base row
of that name, so evil's adapters were listed as Llama-3-8B adapters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from adapterhub.card import SearchQuery
from adapterhub.hub.client import push, remote_search
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore

from .conftest import BACKENDS, fresh_database, hub_registry, serve

LLAMA = "meta-llama/Llama-3-8B"
MISTRAL = "mistralai/Mistral-7B"


@dataclass
class Hub:
    hub: BackgroundHub
    content_hash: str  # the real base's fingerprint (registered on the hub's registry as LLAMA)
    arch_hash: str
    evil: str  # evil's write token
    src: Registry  # where the pushed adapters come from


def _push_with_declared_base(url: str, token: str, src: Registry, name: str, declared: dict[str, object]) -> None:
    """What a hostile pusher can send: the adapter's files and an adapterhub.json card naming any base it likes."""
    card = src.get(name)
    card = card.model_copy(update={"files": [f for f in card.files if f.path != "README.md"]})
    folder = src.adapter_path(card.ref)
    ops = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(folder / f.path)) for f in card.files]
    card_json = {**card.model_dump(mode="json"), "base_model": declared}
    ops.append(CommitOperationAdd(path_in_repo="adapterhub.json", path_or_fileobj=json.dumps(card_json).encode()))
    api = HfApi(endpoint=url, token=token)
    api.create_repo(name, exist_ok=True)
    api.create_commit(name, ops, commit_message="a Llama adapter, honest")


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, minilm_adapter_dir: Path) -> Iterator[Hub]:
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"fake-base-{request.param}") / "home"
        home.mkdir(parents=True)
        reg = hub_registry(home, db_url)
        tokens = TokenStore(reg.db)
        alice, evil = tokens.create("alice", "write")[1], tokens.create("evil", "write")[1]
        real = reg.register_base(minilm_dir, LLAMA)  # the hub's operator fingerprinted the real weights under this name
        reg.db.dispose()
        with serve(home, db_url) as server:
            src = Registry(home=tmp_path_factory.mktemp("fake-base-src"))
            src.add(minilm_adapter_dir, "alice/helper", "sentiment", base=minilm_dir)  # fingerprinted on alice's side
            src.add(minilm_adapter_dir, "evil/llama-helper", "sentiment")
            src.add(minilm_adapter_dir, "evil/mistral-helper", "sentiment")
            push("alice/helper", remote=server.url, registry=src, token=alice)
            _push_with_declared_base(server.url, evil, src, "evil/llama-helper", {"name": LLAMA, "arch_hash": "e" * 64, "content_hash": "f" * 64})
            _push_with_declared_base(server.url, evil, src, "evil/mistral-helper", {"name": MISTRAL, "arch_hash": "d" * 64, "content_hash": "c" * 64})
            yield Hub(server, real.content_hash, real.arch_hash, evil, src)
            src.db.dispose()


def _found(hub: Hub, base: str) -> list[str]:
    by_post = [c.full_name for c in remote_search(hub.hub.url, SearchQuery(base=base)).items]
    r = httpx.get(f"{hub.hub.url}/api/adapterhub/search", params={"base": base})
    assert r.status_code == 200, r.text
    assert sorted(by_post) == sorted(c["namespace"] + "/" + c["name"] for c in r.json()["items"])
    return sorted(by_post)


def test_a_pushed_base_name_does_not_identify_a_base(hub: Hub) -> None:
    assert _found(hub, LLAMA) == ["alice/helper"]  # only the base fingerprinted under that name, not evil's label
    assert _found(hub, MISTRAL) == []  # a name only pushes declared identifies nothing


def test_search_by_fingerprint_lists_only_adapters_declaring_it(hub: Hub) -> None:
    assert _found(hub, hub.content_hash) == ["alice/helper"]
    assert _found(hub, hub.content_hash[:12]) == ["alice/helper"]
    assert _found(hub, hub.arch_hash) == ["alice/helper"]
    assert _found(hub, "f" * 64) == ["evil/llama-helper"]  # a hash is identity: evil may claim its own made-up base


def test_the_card_says_who_declared_the_base_name(hub: Hub) -> None:
    evil = httpx.get(f"{hub.hub.url}/api/adapterhub/adapters/evil/llama-helper/latest").json()["base_model"]
    assert evil["name"] == LLAMA and evil["content_hash"] == "f" * 64
    assert evil["verified"] is False and evil["name_declared_by"] == "push to evil/llama-helper"  # the card's own claim is ignored
    alice = httpx.get(f"{hub.hub.url}/api/adapterhub/adapters/alice/helper").json()["card"]["base_model"]
    assert alice["name"] == LLAMA and alice["content_hash"] == hub.content_hash and alice["verified"] is True
    assert "this registry" in alice["name_declared_by"]


def test_a_pushed_card_cannot_claim_its_base_is_verified(hub: Hub) -> None:
    forged = {"name": "Qwen/Qwen2-7B", "arch_hash": "b" * 64, "content_hash": "a" * 64, "verified": True, "name_declared_by": "Qwen"}
    _push_with_declared_base(hub.hub.url, hub.evil, hub.src, "evil/mistral-helper", forged)
    card = httpx.get(f"{hub.hub.url}/api/adapterhub/adapters/evil/mistral-helper/latest").json()["base_model"]
    assert (card["content_hash"], card["verified"], card["name_declared_by"]) == ("a" * 64, False, "push to evil/mistral-helper")
    assert _found(hub, "Qwen/Qwen2-7B") == []
