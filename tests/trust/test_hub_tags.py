"""Versions and aliases are Hub tags (issue 11), checked with the unmodified huggingface_hub client on a closed hub,
SQLite and PostgreSQL: push tags `vN` and moves alias tags, `pull NAME@1` / `@prod` and `hf_hub_download(revision=...)`
read them, and the refs routes (`create_tag`, `delete_tag`, `create_branch`, `delete_branch`, `list_repo_refs`,
`list_repo_commits`, `delete_repo`, `move_repo`) follow the access rules: writes need a write token for the namespace,
checked before any lookup, and a private repository is a 404 to whoever may not read it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from adapterhub.hub.client import pull, push
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore
from tests.factories import write_large_adapter

from .conftest import BACKENDS, fresh_database, hub_registry, serve

WEIGHTS = "adapter_model.safetensors"


@dataclass
class Hub:
    server: BackgroundHub
    db_url: str | None
    write: str  # write token for `team`
    read: str  # read token for `team`
    other: str  # write token for `other`

    def api(self, token: str | None = None) -> HfApi:
        return HfApi(endpoint=self.server.url, token=token if token is not None else False)  # type: ignore[arg-type]

    def registry(self) -> Registry:
        return hub_registry(self.server.home, self.db_url)


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"tags-{request.param}") / "home"
        home.mkdir(parents=True)
        reg = hub_registry(home, db_url)
        tokens = TokenStore(reg.db)
        write, read = tokens.create("team", "write")[1], tokens.create("team", "read")[1]
        other = tokens.create("other", "write")[1]
        reg.db.dispose()
        with serve(home, db_url, open_hub=False) as server:
            yield Hub(server, db_url, write, read, other)


def _sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """team/qv@1 (aliased prod) and team/qv@2: two different adapters (one registry per hub: a test moves prod)."""
    root = tmp_path_factory.mktemp("tags-src")
    reg = Registry(home=root / "home")
    for seed in (1, 2):
        folder = write_large_adapter(root / f"a{seed}", seed=seed, layers=1, width=64, rank=4)
        reg.add(folder, "team/qv", "sentiment")
    reg.tag("team/qv@1", "prod")
    return reg


def _tags(api: HfApi, repo: str) -> dict[str, str]:
    return {t.name: t.target_commit for t in api.list_repo_refs(repo).tags}


def test_push_tags_versions_and_moves_aliases(hub: Hub, source: Registry, tmp_path: Path) -> None:
    api = hub.api(hub.write)
    one = push("team/qv@1", remote=hub.server.url, registry=source, token=hub.write)
    assert one.tags == ["v1", "prod"]
    two = push("team/qv@2", remote=hub.server.url, registry=source, token=hub.write)
    assert two.tags == ["v2"]
    assert _tags(api, "team/qv") == {"v1": one.commit, "v2": two.commit, "prod": one.commit}
    source.tag("team/qv@2", "prod")  # the alias moves locally; pushing the version moves the tag
    again = push("team/qv@2", remote=hub.server.url, registry=source, token=hub.write)
    assert again.tags == ["v3", "prod"] and _tags(api, "team/qv")["prod"] == again.commit
    refs = api.list_repo_refs("team/qv")
    assert [(b.name, b.ref) for b in refs.branches] == [("main", "refs/heads/main")]
    assert {t.ref for t in refs.tags} == {"refs/tags/v1", "refs/tags/v2", "refs/tags/v3", "refs/tags/prod"}

    # unmodified hf_hub_download by tag: v1 is the first adapter, prod the second
    w1, w2 = (_sha(source.adapter_path(f"team/qv@{v}") / WEIGHTS) for v in (1, 2))
    kw = {"endpoint": hub.server.url, "token": hub.read, "cache_dir": tmp_path / "hf"}
    assert _sha(hf_hub_download("team/qv", WEIGHTS, revision="v1", **kw)) == w1  # type: ignore[arg-type]
    assert _sha(hf_hub_download("team/qv", WEIGHTS, revision="prod", **kw)) == w2  # type: ignore[arg-type]
    assert api.model_info("team/qv", revision="v2").sha == two.commit
    assert [c.commit_id for c in api.list_repo_commits("team/qv", revision="v2")][:2] == [two.commit, one.commit]

    # adapterhub pull NAME@N and NAME@alias (were "revision '1' not found")
    dest = Registry(home=tmp_path / "dest")
    got1 = pull("team/qv@1", remote=hub.server.url, registry=dest, token=hub.read, name="me/one")
    got_prod = pull("team/qv@prod", remote=hub.server.url, registry=dest, token=hub.read, name="me/prod")
    assert _sha(dest.adapter_path(got1.ref) / WEIGHTS) == w1 and _sha(dest.adapter_path(got_prod.ref) / WEIGHTS) == w2

    # one source of truth: moving the alias in the hub's registry moves the tag
    reg = hub.registry()
    reg.tag("team/qv@1", "prod")
    reg.db.dispose()
    assert _tags(api, "team/qv")["prod"] == one.commit


def test_create_and_delete_tags_and_branches(hub: Hub, source: Registry) -> None:
    api = hub.api(hub.write)
    push("team/refs@1", remote=hub.server.url, registry=_one(source, "team/refs"), token=hub.write)
    head = api.model_info("team/refs").sha
    api.create_tag("team/refs", tag="stable", revision="v1")
    assert _tags(api, "team/refs") == {"v1": head, "stable": head}
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag("team/refs", tag="stable", revision="main")
    assert exc.value.response.status_code == 409
    api.create_tag("team/refs", tag="stable", revision="main", exist_ok=True)
    assert hub.registry().get("team/refs@stable").version == 1  # the tag is a registry alias
    api.delete_tag("team/refs", tag="stable")
    assert _tags(api, "team/refs") == {"v1": head}
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag("team/refs", tag="stable")
    for bad in ("v1", "v9"):  # version tags are the hub's own
        with pytest.raises(HfHubHTTPError) as exc:
            (api.delete_tag if bad == "v1" else api.create_tag)("team/refs", tag=bad)  # type: ignore[operator]
        assert exc.value.response.status_code == 400
    initial = api.list_repo_commits("team/refs")[-1].commit_id
    with pytest.raises(HfHubHTTPError) as exc:  # the initial commit recorded no version: nothing for a tag to name
        api.create_tag("team/refs", tag="early", revision=initial)
    assert exc.value.response.status_code == 400

    api.create_branch("team/refs", branch="dev", revision=initial)
    api.create_branch("team/refs", branch="dev", exist_ok=True)
    refs = api.list_repo_refs("team/refs")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": head, "dev": initial}
    assert api.model_info("team/refs", revision="dev").sha == initial
    for taken in ("dev", "v1"):
        with pytest.raises(HfHubHTTPError) as exc:
            api.create_branch("team/refs", branch=taken)
        assert exc.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_tag("team/refs", tag="dev")
    assert exc.value.response.status_code == 409
    reg = hub.registry()
    reg.tag("team/refs@1", "dev")  # an alias set on the hub's registry behind the branch's back: the branch wins
    reg.db.dispose()
    assert "dev" not in _tags(api, "team/refs") and api.model_info("team/refs", revision="dev").sha == initial
    reg = hub.registry()
    reg.untag("team/refs", "dev")
    reg.db.dispose()
    with pytest.raises(RevisionNotFoundError):
        api.model_info("team/refs", revision="x" * 300)
    api.delete_branch("team/refs", branch="dev")
    with pytest.raises(RevisionNotFoundError):
        api.delete_branch("team/refs", branch="dev")
    with pytest.raises(HfHubHTTPError) as exc:
        api.delete_branch("team/refs", branch="main")
    assert exc.value.response.status_code == 400


HOSTILE = ["bad\n", "a..b", "x" * 65, "latest", "-x", "ä", " prod", "prod ", "a/b", ".."]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_ref_names_are_refused(hub: Hub, source: Registry, name: str) -> None:
    api = hub.api(hub.write)
    if "team/hostile" not in {m.id for m in api.list_models(author="team")}:
        push("team/hostile@1", remote=hub.server.url, registry=_one(source, "team/hostile"), token=hub.write)
    before = api.list_repo_refs("team/hostile")
    for call in (lambda: api.create_tag("team/hostile", tag=name), lambda: api.create_branch("team/hostile", branch=name)):
        with pytest.raises(HfHubHTTPError) as exc:
            call()
        assert 400 <= exc.value.response.status_code < 500, name  # 404/405: the client sent a "/" or ".." path as it is
    after = api.list_repo_refs("team/hostile")
    assert (after.branches, after.tags) == (before.branches, before.tags)


def test_refs_routes_follow_the_access_rules(hub: Hub, source: Registry) -> None:
    push("team/secret@1", remote=hub.server.url, registry=_one(source, "team/secret"), token=hub.write, private=True)
    anon, other, read = hub.api(), hub.api(hub.other), hub.api(hub.read)
    # reads of a private repository: 404 without a token that may read it, exactly as for a repository that does not exist
    for api in (anon, other):
        for repo in ("team/secret", "team/absent"):
            with pytest.raises(RepositoryNotFoundError):
                api.list_repo_refs(repo)
            with pytest.raises(RepositoryNotFoundError):
                api.list_repo_commits(repo)
    assert "v1" in _tags(read, "team/secret")
    # writes: 401 without a token, 403 with a read token or another namespace's, whether the repository exists or not
    for api, status in ((anon, 401), (read, 403), (other, 403)):
        for repo in ("team/secret", "team/absent"):
            calls = [
                lambda: api.create_tag(repo, tag="x"), lambda: api.delete_tag(repo, tag="v1"),  # noqa: B023
                lambda: api.create_branch(repo, branch="x"), lambda: api.delete_branch(repo, branch="x"),  # noqa: B023
                lambda: api.delete_repo(repo), lambda: api.move_repo(repo, "team/moved"),  # noqa: B023
            ]  # fmt: skip
            for call in calls:
                with pytest.raises(HfHubHTTPError) as exc:
                    call()
                assert exc.value.response.status_code == status, (repo, status)
    with pytest.raises(HfHubHTTPError) as exc:  # moving into a namespace the token may not write
        hub.api(hub.write).move_repo("team/secret", "other/secret")
    assert exc.value.response.status_code == 403
    assert "v1" in _tags(read, "team/secret")  # nothing changed


def test_move_and_delete_repo(hub: Hub, source: Registry, tmp_path: Path) -> None:
    api = hub.api(hub.write)
    pushed = push("team/old@1", remote=hub.server.url, registry=_one(source, "team/old"), token=hub.write)
    api.create_tag("team/old", tag="prod", revision="v1")
    push("team/taken@1", remote=hub.server.url, registry=_one(source, "team/taken"), token=hub.write)
    with pytest.raises(HfHubHTTPError) as exc:
        api.move_repo("team/old", "team/taken")
    assert exc.value.response.status_code == 409
    api.move_repo("team/old", "team/new")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("team/old")
    assert _tags(api, "team/new") == {"v1": pushed.commit, "prod": pushed.commit}
    reg = hub.registry()
    assert reg.get("team/new@prod").version == 1 and not reg.versions("team/new")[0].full_name.startswith("team/old")
    reg.db.dispose()
    got = pull("team/new@prod", remote=hub.server.url, registry=Registry(home=tmp_path / "d"), token=hub.read)
    assert got.full_name == "team/new"

    api.delete_repo("team/new")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("team/new")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo("team/new")
    api.delete_repo("team/new", missing_ok=True)
    reg = hub.registry()
    with pytest.raises(LookupError):
        reg.get("team/new")
    reg.db.dispose()
    search = httpx.post(
        f"{hub.server.url}/api/adapterhub/search", json={"text": "new"}, headers={"Authorization": f"Bearer {hub.read}"}
    )
    assert all(c["name"] != "new" for c in search.json()["items"])
    # the name is free again: a new push starts at v1
    again = push("team/new@1", remote=hub.server.url, registry=_one(source, "team/new"), token=hub.write)
    assert again.tags == ["v1"]


def _one(source: Registry, name: str) -> Registry:
    """A registry beside `source` holding `source`'s team/qv@1 as `name`@1."""
    reg = Registry(home=source.home.parent / f"one-{name.replace('/', '-')}")
    if not reg.list():
        reg.add(source.adapter_path("team/qv@1"), name, "sentiment")
    return reg


def test_refs_routes_are_in_the_openapi_schema_the_fuzzer_reads(hub: Hub) -> None:
    """test_openapi_fuzz.py fuzzes every operation of this schema: the refs routes are there, with their bodies."""
    paths = httpx.get(f"{hub.server.url}/api/adapterhub/openapi.json").json()["paths"]
    base = "/api/models/{namespace}/{name}"
    for path, method, body in [
        (f"{base}/refs", "get", False), (f"{base}/tag/{{revision}}", "post", True), (f"{base}/tag/{{tag}}", "delete", False),
        (f"{base}/branch/{{branch}}", "post", True), (f"{base}/branch/{{branch}}", "delete", False),
        ("/api/repos/delete", "delete", True), ("/api/repos/move", "post", True),
    ]:  # fmt: skip
        assert method in paths.get(path, {}), (path, method)
        assert ("requestBody" in paths[path][method]) == body, (path, method)
