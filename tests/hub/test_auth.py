"""A hub started with tokens: writes need one, private repositories are invisible without one (RepoNotFound, as
on the Hub), whoami answers with the token's user, and push/pull carry HF_TOKEN."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from adapterhub.errors import PermissionDenied
from adapterhub.hub.client import pull, push
from adapterhub.hub.server.background import BackgroundHub, start_hub
from adapterhub.store.registry import Registry


@pytest.fixture(scope="module")
def secure_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundHub]:
    with start_hub(tmp_path_factory.mktemp("secure") / "home", args=["--token", "alice:s3cret"]) as hub:
        yield hub


def test_writes_need_a_token(secure_hub: BackgroundHub) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=secure_hub.url, token=False).create_repo("alice/open")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=secure_hub.url, token="wrong").whoami()
    api = HfApi(endpoint=secure_hub.url, token="s3cret")
    assert api.whoami()["name"] == "alice"
    api.create_repo("alice/open")
    api.create_commit("alice/open", [CommitOperationAdd("a.txt", b"a")], commit_message="a")
    assert HfApi(endpoint=secure_hub.url, token=False).list_repo_files("alice/open") == [".gitattributes", "a.txt"]


def test_private_repos_are_hidden_without_a_token(secure_hub: BackgroundHub, tmp_path: Path) -> None:
    api = HfApi(endpoint=secure_hub.url, token="s3cret")
    api.create_repo("alice/secret", private=True)
    assert api.model_info("alice/secret").private is True
    anon = HfApi(endpoint=secure_hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anon.model_info("alice/secret")
    assert "alice/secret" not in {m.id for m in anon.list_models(author="alice")}
    assert "alice/secret" in {m.id for m in api.list_models(author="alice")}


def test_push_and_pull_with_hf_token(
    secure_hub: BackgroundHub, minilm_adapter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry(home=tmp_path / "src")
    reg.add(minilm_adapter_dir, "alice/tokened", "sentiment")
    with pytest.raises(PermissionDenied):
        push("alice/tokened", remote=secure_hub.url, registry=reg, private=True, token="wrong")
    monkeypatch.delenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN", "s3cret")
    push("alice/tokened", remote=secure_hub.url, registry=reg, private=True)
    assert pull("alice/tokened", remote=secure_hub.url, registry=Registry(home=tmp_path / "dst")).ref == "alice/tokened@1"


def test_namespace_tokens_from_the_token_store(secure_hub: BackgroundHub) -> None:
    from adapterhub.store.tokens import TokenStore

    tokens = TokenStore(secure_hub.registry().db)
    _, bob_write = tokens.create("bob", "write", label="bob's laptop")
    _, alice_read = tokens.create("alice", "read")
    HfApi(endpoint=secure_hub.url, token="s3cret").create_repo("alice/private-two", private=True)

    bob = HfApi(endpoint=secure_hub.url, token=bob_write)
    assert bob.whoami()["name"] == "bob"
    assert str(bob.create_repo("bobs-repo")) == f"{secure_hub.url}/bob/bobs-repo"  # no namespace: the token's
    with pytest.raises(HfHubHTTPError) as err:
        bob.create_repo("alice/not-yours")
    assert err.value.response.status_code == 403
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info("alice/private-two")

    reader = HfApi(endpoint=secure_hub.url, token=alice_read)
    assert reader.model_info("alice/private-two").private is True
    with pytest.raises(HfHubHTTPError) as err:
        reader.create_commit("alice/private-two", [CommitOperationAdd("x.txt", b"x")], commit_message="x")
    assert err.value.response.status_code == 403
