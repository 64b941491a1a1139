"""What a closed hub must not give away, on SQLite and PostgreSQL, asked with the unmodified huggingface_hub client
or raw HTTP: private adapters under a name with a trailing newline, a hub that reopens when its last token is
revoked, totals and error codes that tell a hidden repository from a missing one, the server's own paths in error
messages, namespaces that collide with the hub's routes, and listings that page over what the caller may see."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from adapterhub.card import AdapterRef
from adapterhub.errors import InvalidReference
from adapterhub.hub.client import push
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.orm import AdapterRow, FileRow, RepoRow
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore

from .conftest import BACKENDS, fresh_database, hub_registry, serve

DECOYS = 1_100  # public adapters newer than the private one: more than the old code's 1,000-row search window
PAGE = 3  # --page-size of the hub under test: every listing spans several Link-paginated pages


@dataclass
class Site:
    hub: BackgroundHub
    db_url: str | None
    acme_write: str
    acme_read: str
    evil_write: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.hub.url, headers=headers, timeout=60)

    def api(self, token: str | None = None) -> HfApi:
        return HfApi(endpoint=self.hub.url, token=token if token is not None else False)


def _add_decoys(reg: Registry, n: int, task: str) -> None:
    """`n` public registry adapters with `task`, newer than anything pushed so far (bulk rows, no hub repository)."""
    t0 = datetime.now(timezone.utc) + timedelta(hours=1)
    with reg.db.write() as s:
        s.execute(sa.insert(RepoRow), [{"namespace": "decoy", "name": f"d{i}", "last_version": 1, "private": False, "created_at": t0}
                                       for i in range(n)])  # fmt: skip
        repo_ids = s.execute(sa.select(RepoRow.id).where(RepoRow.namespace == "decoy")).scalars().all()
        s.execute(sa.insert(AdapterRow), [
            {"repo_id": rid, "version": 1, "is_latest": True, "task": task, "method": "lora", "rank": 8, "rank_pattern": {},
             "alpha": 16.0, "use_rslora": False, "target_modules": ["query"], "description": "decoy", "license": None,
             "search_text": f"decoy/d{rid} {task} decoy", "created_at": t0 + timedelta(seconds=rid)}
            for rid in repo_ids
        ])  # fmt: skip
        ids = s.execute(sa.select(AdapterRow.id).where(AdapterRow.repo_id.in_(repo_ids))).scalars().all()
        s.execute(sa.insert(FileRow), [{"adapter_id": i, "path": "adapter_model.safetensors", "sha256": "0" * 64, "size": 1} for i in ids])


@pytest.fixture(scope="module", params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_adapter_dir: Path) -> Iterator[Site]:
    """A closed hub (tokens in its database) with acme/secret (private), acme/public, and many public decoys."""
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"leaks-{request.param}") / "home"
        home.mkdir(parents=True)
        reg = hub_registry(home, db_url)
        tokens = TokenStore(reg.db)
        secrets = {
            "acme_write": tokens.create("acme", "write")[1],
            "acme_read": tokens.create("acme", "read")[1],
            "evil_write": tokens.create("evil", "write")[1],
        }
        with serve(home, db_url, "--page-size", str(PAGE), open_hub=False) as hub:
            src = Registry(home=tmp_path_factory.mktemp("leaks-src"))
            src.add(minilm_adapter_dir, "acme/secret", "leaktask", description="the secret plan", tags=["secret-tag"])
            src.add(minilm_adapter_dir, "acme/public", "leaktask")
            push("acme/secret", remote=hub.url, registry=src, private=True, token=secrets["acme_write"])
            push("acme/public", remote=hub.url, registry=src, token=secrets["acme_write"])
            src.db.dispose()
            _add_decoys(reg, DECOYS, "leaktask")
            reg.db.dispose()
            yield Site(hub, db_url, **secrets)


# --- 1. a trailing newline is not the same name ----------------------------------------------------------------


def test_a_trailing_newline_does_not_reach_a_private_adapter(site: Site) -> None:
    with site.client() as anon:
        for url in ("/api/adapterhub/adapters/acme/secret%0A", "/api/adapterhub/adapters/acme/secret%0A/latest",
                    "/api/adapterhub/adapters/acme%0A/secret", "/api/adapterhub/adapters/acme/secret/1%0A",
                    "/api/models/acme/secret%0A", "/api/models/acme/secret%0A/tree/main", "/acme/secret%0A/resolve/main/adapter_config.json"):  # fmt: skip
            r = anon.get(url)
            assert r.status_code in (400, 404), (url, r.status_code, r.text[:300])
            assert "secret plan" not in r.text and "sha256" not in r.text, url
        r = anon.get("/api/adapterhub/adapters/acme/secret")
        assert (r.status_code, r.headers.get("x-error-code")) == (404, "RepoNotFound")
    with site.client(site.acme_read) as reader:  # the real name still works for a caller who may read it
        assert reader.get("/api/adapterhub/adapters/acme/secret").json()["card"]["description"] == "the secret plan"


def test_names_with_a_trailing_newline_cannot_be_created(site: Site) -> None:
    with site.client(site.evil_write) as evil:
        for body in ({"name": "x\n", "organization": "evil"}, {"name": "x", "organization": "evil\n"}, {"name": "x\r\n", "organization": "evil"}):
            r = evil.post("/api/repos/create", json=body)
            assert r.status_code == 400, (body, r.status_code, r.text[:300])
            assert "\n" not in r.json()["error"]
        r = evil.post("/api/models/evil/x%0A/commit/main", content=b'{"key":"header","value":{"summary":"x"}}\n')
        assert r.status_code in (400, 404)
    assert not [m.id for m in site.api(site.evil_write).list_models() if m.id != m.id.strip()]
    for text in ("evil/x\n", "evil/x\r", " evil/x", "evil/x@1\n", "evil/x@prod\n"):
        with pytest.raises(InvalidReference):
            AdapterRef.parse(text)


# --- 3. counting and error codes ---------------------------------------------------------------------------------


def test_search_totals_count_only_what_the_caller_may_read(site: Site) -> None:
    public = DECOYS + 1  # the decoys and acme/public
    with site.client() as anon:
        for params in ({"task": "leaktask", "limit": 5}, {"text": "leaktask", "limit": 5}, {"task": "leaktask", "all_versions": True}):
            got = anon.get("/api/adapterhub/search", params=params).json()
            assert got["total"] == public, params
            assert "acme/secret" not in {f"{c['namespace']}/{c['name']}" for c in got["items"]}
        got = anon.post("/api/adapterhub/search", json={"task": "leaktask", "limit": 1000}).json()
        assert got["total"] == public and len(got["items"]) == 1000  # a full page: the hidden row took no place in it
        assert "secret" not in {c["name"] for c in got["items"] if c["namespace"] == "acme"}
        assert anon.get("/api/adapterhub/search", params={"tag": "secret-tag"}).json()["total"] == 0
    for token in (site.acme_read, site.acme_write):
        with site.client(token) as reader:
            assert reader.get("/api/adapterhub/search", params={"task": "leaktask", "limit": 5}).json()["total"] == public + 1
    with site.client(site.evil_write) as evil:  # a token, but for another namespace
        assert evil.get("/api/adapterhub/search", params={"task": "leaktask", "limit": 5}).json()["total"] == public


def test_search_never_looks_at_server_paths(site: Site) -> None:
    """A `base` that names a folder on the server answers exactly like one that names nothing."""
    with site.client() as anon:
        answers = [anon.get("/api/adapterhub/search", params={"base": base}) for base in (str(site.hub.home), "/no/such/dir", "/etc")]
    assert {(r.status_code, r.json()["total"]) for r in answers} == {(200, 0)}


def _answer(c: httpx.Client, method: str, url: str, repo: str) -> tuple[int, str | None, str]:
    r = c.request(method, url.format(repo=repo), content=b"paths=adapter_config.json" if method == "POST" else None,
                  headers={"Content-Type": "application/x-www-form-urlencoded"} if method == "POST" else None)  # fmt: skip
    return r.status_code, r.headers.get("x-error-code"), r.text.replace(repo, "REPO")


HIDDEN_PROBES = [
    ("GET", "/api/models/{repo}"), ("GET", "/api/models/{repo}/revision/main"), ("GET", "/api/models/{repo}/revision/nope"),
    ("GET", "/api/models/{repo}/tree/main"), ("GET", "/api/models/{repo}/tree/nope"), ("GET", "/api/models/{repo}/tree/main/sub"),
    ("GET", "/api/models/{repo}/refs"), ("GET", "/api/models/{repo}/commits/main"), ("GET", "/api/models/{repo}/commits/nope"),
    ("POST", "/api/models/{repo}/paths-info/main"), ("POST", "/api/models/{repo}/paths-info/nope"),
    ("GET", "/{repo}/resolve/main/adapter_config.json"), ("HEAD", "/{repo}/resolve/main/adapter_config.json"),
    ("GET", "/{repo}/resolve/nope/adapter_config.json"), ("GET", "/{repo}/resolve/main/no-such-file"),
    ("GET", "/api/adapterhub/adapters/{repo}"), ("GET", "/api/adapterhub/adapters/{repo}/latest"),
    ("GET", "/api/adapterhub/adapters/{repo}/1"), ("GET", "/api/adapterhub/adapters/{repo}/7"),
    ("POST", "/api/models/{repo}/preupload/main"), ("POST", "/api/models/{repo}/commit/main"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url"), HIDDEN_PROBES)
def test_a_hidden_repository_answers_exactly_like_a_missing_one(site: Site, method: str, url: str) -> None:
    """Same status, error code and body (names swapped) whatever the route, revision or path: access is decided
    before anything about the repository is looked up."""
    for token in (None, site.evil_write):
        with site.client(token) as c:
            hidden, missing = _answer(c, method, url, "acme/secret"), _answer(c, method, url, "acme/nosuch")
        assert hidden == missing, (token is not None, hidden, missing)
        assert hidden[0] in (401, 403, 404), hidden


def test_paths_info_with_a_bad_revision_does_not_name_a_hidden_repo(site: Site) -> None:
    with site.client() as anon:
        r = anon.post("/api/models/acme/secret/paths-info/no-such-revision", data={"paths": "adapter_config.json"})
    assert (r.status_code, r.headers.get("x-error-code")) == (404, "RepoNotFound")
    with site.client(site.acme_read) as reader:
        r = reader.post("/api/models/acme/secret/paths-info/no-such-revision", data={"paths": "adapter_config.json"})
    assert r.headers.get("x-error-code") == "RevisionNotFound"


def test_listings_page_over_visible_repositories_only(site: Site) -> None:
    anon, reader = site.api(), site.api(site.acme_read)
    assert {m.id for m in anon.list_models(author="acme")} == {"acme/public"}
    assert {m.id for m in reader.list_models(author="acme")} == {"acme/public", "acme/secret"}
    assert [m.id for m in anon.list_models(search="secret")] == []
    first = [m.id for m in anon.list_models(limit=1)]
    assert len(first) == 1 and first != ["acme/secret"]
    everything = [m.id for m in reader.list_models(sort="id")]  # several pages of PAGE, following the Link header
    assert everything == sorted(everything) and len(everything) == len(set(everything))
    assert {"acme/public", "acme/secret"} <= set(everything)
    assert "acme/secret" not in {m.id for m in anon.list_models(filter="peft")}
    with site.client() as c:
        r = c.get("/api/models", params={"limit": 1, "author": "acme"})
        assert [m["id"] for m in r.json()] == ["acme/public"] and "link" not in r.headers  # no next page of a hidden repo


# --- 2. revoking the last token keeps the hub closed; --open is explicit -------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_revoking_the_last_token_does_not_reopen_the_hub(backend: str, tmp_path: Path, minilm_adapter_dir: Path) -> None:
    with fresh_database(backend) as db_url:
        home = tmp_path / "home"
        home.mkdir()
        reg = hub_registry(home, db_url)
        info, secret = TokenStore(reg.db).create("acme", "write")
        with serve(home, db_url, open_hub=False) as hub:
            assert "OPEN HUB" not in hub.log.read_text()
            src = Registry(home=tmp_path / "src")
            src.add(minilm_adapter_dir, "acme/vault", "t")
            push("acme/vault", remote=hub.url, registry=src, private=True, token=secret)
            HfApi(endpoint=hub.url, token=secret).create_repo("acme/board")
            TokenStore(reg.db).revoke(info.id)  # the only token: the table now holds no valid one
            assert TokenStore(reg.db).list() == []
            anon = HfApi(endpoint=hub.url, token=False)
            with pytest.raises(RepositoryNotFoundError):
                anon.model_info("acme/vault")
            with pytest.raises(RepositoryNotFoundError):
                hf_hub_download("acme/vault", "adapter_config.json", endpoint=hub.url, token=False, cache_dir=str(tmp_path / "dl"))
            assert "acme/vault" not in {m.id for m in anon.list_models()}
            for write in (lambda: anon.create_repo("acme/new"), lambda: anon.create_repo("anyone/new"),
                          lambda: anon.create_commit("acme/board", [CommitOperationAdd("x.txt", b"x")], commit_message="x"),
                          lambda: anon.create_commit("acme/board", [CommitOperationDelete(".gitattributes")], commit_message="rm")):  # fmt: skip
                with pytest.raises(HfHubHTTPError) as err:
                    write()
                assert err.value.response.status_code == 401
            with pytest.raises(HfHubHTTPError) as err:
                HfApi(endpoint=hub.url, token=secret).create_repo("acme/after-revoke")
            assert err.value.response.status_code == 401
            assert anon.list_repo_files("acme/board") == [".gitattributes"]  # public repos stay readable
        reg.db.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hub_without_tokens_is_closed_unless_started_open(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend) as db_url, serve(tmp_path / "closed", db_url, open_hub=False) as hub:
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(endpoint=hub.url, token=False).create_repo("me/x")
        assert err.value.response.status_code == 401
    with fresh_database(backend) as db_url, serve(tmp_path / "open", db_url, open_hub=True) as hub:
        assert "OPEN HUB" in hub.log.read_text()  # announced at start, on stderr
        HfApi(endpoint=hub.url, token=False).create_repo("me/x", private=True)
        assert HfApi(endpoint=hub.url, token=False).model_info("me/x").private is True


# --- 4. no server paths in answers -------------------------------------------------------------------------------


def _file(path: str, data: bytes) -> bytes:
    value = {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}
    return json.dumps({"key": "file", "value": value}).encode() + b"\n"


def _safetensors(header: dict[str, object], data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_error_bodies_carry_no_server_path(site: Site, minilm_adapter_dir: Path) -> None:
    config = (minilm_adapter_dir / "adapter_config.json").read_bytes()
    weights = (minilm_adapter_dir / "adapter_model.safetensors").read_bytes()
    bad_config = json.dumps({**json.loads(config), "r": -4}).encode()
    nan = _safetensors({"base_model.model.encoder.layer.0.attention.self.query.lora_A.weight":
                        {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}, struct.pack("<f", float("nan")))  # fmt: skip
    refused = {
        "config not a LoRA config": _file("adapter_config.json", bad_config) + _file("adapter_model.safetensors", weights),
        "weights not safetensors": _file("adapter_config.json", config) + _file("adapter_model.safetensors", b"\x00" * 64),
        "header offsets wrong": _file("adapter_config.json", config)
        + _file("adapter_model.safetensors", _safetensors({"x.lora_A.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}})),
        "NaN weights": _file("adapter_config.json", config) + _file("adapter_model.safetensors", nan),
        "config not an object": _file("adapter_config.json", b"[1]") + _file("adapter_model.safetensors", weights),
        "config not JSON": _file("adapter_config.json", b"{") + _file("adapter_model.safetensors", weights),
    }
    roots = {str(site.hub.home), str(site.hub.home.resolve()), "hub-uploads", f"/{site.hub.proc.pid}-"}
    with site.client(site.acme_write) as c:
        HfApi(endpoint=site.hub.url, token=site.acme_write).create_repo("acme/broken", private=True, exist_ok=True)
        for what, body in refused.items():
            header = json.dumps({"key": "header", "value": {"summary": what}}).encode() + b"\n"
            r = c.post("/api/models/acme/broken/commit/main", content=header + body, headers={"Content-Type": "application/x-ndjson"})
            assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
            seen = r.text + " " + r.headers.get("x-error-message", "")
            assert not [root for root in roots if root in seen], (what, seen)
            assert "/tmp" not in seen and str(Path.home()) not in seen, (what, seen)


# --- 5. route words are not namespaces ---------------------------------------------------------------------------


def test_route_words_cannot_be_namespaces(site: Site, tmp_path: Path) -> None:
    reg = hub_registry(site.hub.home, site.db_url)
    star = TokenStore(reg.db).create("*", "write")[1]
    reg.db.dispose()
    with site.client(star) as c:
        for word in ("api", "static", "login", "logout", "bases", "v1", "compare", "search", "API", "Static"):
            r = c.post("/api/repos/create", json={"name": "x", "organization": word})
            assert r.status_code == 400, (word, r.status_code, r.text[:200])
            assert "reserved" in r.json()["error"] and "\n" not in r.json()["error"]
        assert c.post("/api/repos/create", json={"name": "x", "organization": "apis"}).status_code == 200
    assert "api/x" not in {m.id for m in site.api(star).list_models()}
    from adapterhub.hub.types import RESERVED_NAMESPACES  # the one list, which the web pages' routes draw on too

    assert {"api", "static", "login", "logout", "bases", "v1", "compare", "search"} <= RESERVED_NAMESPACES
