"""Access control with database tokens (`adapterhub token create`) against a real hub, on SQLite and PostgreSQL,
spoken to by the unmodified huggingface_hub client: write tokens per namespace, private adapters that do not exist
for anyone without a read token (every read endpoint, listings, the registry JSON API), and the HF login flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from adapterhub.card import SearchQuery
from adapterhub.errors import RepoNotFound
from adapterhub.hub.client import pull, push, remote_search
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore

from .conftest import BACKENDS, fresh_database, hub_registry, serve


@dataclass
class Team:
    hub: BackgroundHub
    db_url: str | None
    alice_write: str
    alice_read: str
    bob_write: str
    everything_write: str  # namespace "*"
    expired: str
    revoked: str


@pytest.fixture(scope="module", params=BACKENDS)
def team(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_adapter_dir: Path) -> Iterator[Team]:
    """A hub whose tokens live in its database, with alice/private (private) and alice/public pushed by alice."""
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"team-{request.param}") / "home"
        home.mkdir(parents=True)
        reg = hub_registry(home, db_url)
        tokens = TokenStore(reg.db)
        secrets = {
            "alice_write": tokens.create("alice", "write", label="alice laptop")[1],
            "alice_read": tokens.create("alice", "read")[1],
            "bob_write": tokens.create("bob", "write")[1],
            "everything_write": tokens.create("*", "write", label="ci")[1],
            "expired": tokens.create("alice", "write", expires_in=timedelta(seconds=-1))[1],
        }
        revoked_info, secrets["revoked"] = tokens.create("alice", "write")
        tokens.revoke(revoked_info.id)
        reg.db.dispose()
        with serve(home, db_url, open_hub=False) as hub:
            src = Registry(home=tmp_path_factory.mktemp("team-src"))
            src.add(minilm_adapter_dir, "alice/private", "sentiment", tags=["secret-tag"])
            src.add(minilm_adapter_dir, "alice/public", "sentiment")
            push("alice/private", remote=hub.url, registry=src, private=True, token=secrets["alice_write"])
            push("alice/public", remote=hub.url, registry=src, token=secrets["alice_write"])
            src.db.dispose()
            yield Team(hub=hub, db_url=db_url, **secrets)


def _api(team: Team, token: str | None) -> HfApi:
    return HfApi(endpoint=team.hub.url, token=token if token is not None else False)


def test_writes_need_a_write_token_for_the_namespace(team: Team) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        _api(team, None).create_repo("alice/anon")
    assert err.value.response.status_code == 401
    for token in (team.expired, team.revoked, "ah_not-a-token"):
        with pytest.raises(HfHubHTTPError) as err:
            _api(team, token).create_repo("alice/dead-token")
        assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        _api(team, team.bob_write).create_repo("alice/from-bob")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        _api(team, team.alice_read).create_commit("alice/public", [CommitOperationAdd("x.txt", b"x")], commit_message="x")
    assert err.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as err:
        _api(team, team.bob_write).create_commit("alice/public", [CommitOperationAdd("x.txt", b"x")], commit_message="x")
    assert err.value.response.status_code == 403
    head = _api(team, None).model_info("alice/public").sha
    assert _api(team, None).model_info("alice/public").sha == head  # nothing of the refused commits landed

    alice = _api(team, team.alice_write)
    alice.create_repo("alice/notes")
    info = alice.create_commit("alice/notes", [CommitOperationAdd("notes.txt", b"hi")], commit_message="notes")
    assert _api(team, None).list_repo_files("alice/notes") == [".gitattributes", "notes.txt"]
    assert _api(team, None).model_info("alice/notes").sha == info.oid
    _api(team, team.everything_write).create_repo("carol/ci-repo")  # a "*" token writes anywhere


def _hidden_everywhere(team: Team, token: str | None) -> None:
    """alice/private does not exist for this caller: every read answers 404 RepoNotFound and listings omit it."""
    api = _api(team, token)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/private")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/private", revision="no-such-branch")  # not RevisionNotFound: that would leak existence
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_files("alice/private")
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_refs("alice/private")
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_commits("alice/private")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/private", "adapter_config.json", endpoint=team.hub.url, token=token or False,
                        cache_dir=str(Path(os.environ["HF_HOME"]) / "dl"))  # fmt: skip
    listed = {m.id for m in api.list_models(author="alice")} | {m.id for m in api.list_models(search="private")}
    assert "alice/private" not in listed and "alice/public" in listed
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=team.hub.url, headers=headers, timeout=30) as c:
        for url in ("/api/models/alice/private", "/api/models/alice/private/tree/main", "/api/models/alice/private/revision/main",
                    "/alice/private/resolve/main/adapter_config.json", "/alice/private/resolve/0123456789abcdef0123456789abcdef01234567/x",
                    "/api/adapterhub/adapters/alice/private", "/api/adapterhub/adapters/alice/private/latest"):  # fmt: skip
            r = c.get(url)
            assert (r.status_code, r.headers.get("x-error-code")) == (404, "RepoNotFound"), url
        assert c.head("/alice/private/resolve/main/adapter_config.json").status_code == 404
        found = c.get("/api/adapterhub/search", params={"task": "sentiment"}).json()
        assert [i["name"] for i in found["items"]] == ["public"] and found["total"] == 1
        by_tag = c.get("/api/adapterhub/search", params={"tag": "secret-tag"}).json()
        assert (by_tag["items"], by_tag["total"]) == ([], 0)
        by_post = c.post("/api/adapterhub/search", json={"text": "alice", "all_versions": True}).json()
        assert [i["name"] for i in by_post["items"]] == ["public"]
    assert [i.full_name for i in remote_search(team.hub.url, SearchQuery(text="alice"), token=token).items] == ["alice/public"]


def test_private_adapter_is_invisible_without_a_read_token(team: Team) -> None:
    _hidden_everywhere(team, None)
    _hidden_everywhere(team, team.bob_write)  # a token, but for another namespace
    _hidden_everywhere(team, team.expired)
    _hidden_everywhere(team, team.revoked)


def test_private_adapter_is_readable_with_a_read_token(team: Team, tmp_path: Path) -> None:
    for token in (team.alice_read, team.alice_write, team.everything_write):
        api = _api(team, token)
        assert api.model_info("alice/private").private is True
        assert "adapter_model.safetensors" in api.list_repo_files("alice/private")
        assert "alice/private" in {m.id for m in api.list_models(author="alice")}
        names = {c.full_name for c in remote_search(team.hub.url, SearchQuery(task="sentiment"), token=token).items}
        assert names == {"alice/private", "alice/public"}
        r = httpx.get(f"{team.hub.url}/api/adapterhub/adapters/alice/private", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200 and r.json()["card"]["name"] == "private"
    with pytest.raises(RepoNotFound):
        pull("alice/private", remote=team.hub.url, registry=Registry(home=tmp_path / "anon"))
    card = pull("alice/private", remote=team.hub.url, registry=Registry(home=tmp_path / "reader"), token=team.alice_read)
    assert card.ref == "alice/private@1"


def test_public_adapter_is_readable_by_anyone(team: Team, tmp_path: Path) -> None:
    assert _api(team, None).model_info("alice/public").private is False
    assert pull("alice/public", remote=team.hub.url, registry=Registry(home=tmp_path / "anyone")).ref == "alice/public@1"
    assert "alice/public" in {m.id for m in _api(team, None).list_models()}


def test_whoami_answers_for_database_tokens(team: Team) -> None:
    me = _api(team, team.alice_write).whoami()
    assert me["name"] == "alice" and me["auth"]["accessToken"]["role"] == "write"
    reader = _api(team, team.alice_read).whoami()
    assert reader["name"] == "alice" and reader["auth"]["accessToken"]["role"] == "read"
    assert _api(team, team.bob_write).whoami()["name"] == "bob"
    for bad in (team.expired, team.revoked, "ah_wrong"):
        with pytest.raises(HfHubHTTPError) as err:
            _api(team, bad).whoami()
        assert err.value.response.status_code == 401


def test_huggingface_hub_login_flow(team: Team, tmp_path: Path) -> None:
    """`huggingface_hub.login` with HF_ENDPOINT pointing at the hub, then a fresh process using the saved token."""
    env = {**os.environ, "HF_ENDPOINT": team.hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    env.pop("HF_HUB_DISABLE_IMPLICIT_TOKEN", None)
    env.pop("HF_TOKEN", None)
    login = f"import huggingface_hub as h; h.login(token={team.alice_write!r}, add_to_git_credential=False)"
    subprocess.run([sys.executable, "-c", login], env=env, check=True, capture_output=True, timeout=120)
    assert (tmp_path / "hf" / "token").read_text().strip() == team.alice_write
    use = "import json, huggingface_hub as h; a = h.HfApi(); print(json.dumps([a.whoami()['name'], a.model_info('alice/private').private]))"
    out = subprocess.run([sys.executable, "-c", use], env=env, check=True, capture_output=True, text=True, timeout=120).stdout
    assert json.loads(out) == ["alice", True]
