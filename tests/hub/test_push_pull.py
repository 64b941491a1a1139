"""push / pull / remote_search against a real hub: round trips, model cards, corrupted bytes, plain PEFT repos,
pickles, a hub that goes away, and adapters registered by commits in the same transaction."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from adapterhub.card import AdapterCard, EvalScore, SearchQuery
from adapterhub.errors import IntegrityError, PickleRefused, RemoteError, RepoNotFound
from adapterhub.hub import modelcard
from adapterhub.hub.client import pull, push, remote_search
from adapterhub.store.registry import Registry
from tests.s3 import read_raw, remove_raw, write_raw

from .conftest import HubServer, start_hub, stop_hub

SCORES = [
    EvalScore(dataset="sst2", metric="accuracy", value=0.91),
    EvalScore(dataset="sst2", metric="loss", value=0.3, higher_is_better=False),
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, minilm_adapter_dir: Path) -> Registry:
    """A local registry holding one MiniLM adapter registered against its base, with scores, tags and a license."""
    reg = Registry(home=tmp_path_factory.mktemp("source"))
    reg.add(minilm_adapter_dir, "me/sentiment", "sentiment", base=minilm_dir, scores=SCORES, tags=["english"],
            description="Sentiment on SST-2.", license="apache-2.0")  # fmt: skip
    return reg


def _files(card) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    """The adapter's files; an adapter's own README (PEFT writes one) is replaced on the hub by the model card."""
    return {f.path: (f.sha256, f.size) for f in card.files if f.path != "README.md"}


def _no_leftovers(reg: Registry) -> list[Path]:
    """Temp and partial files anywhere under a registry home (a failed pull must leave none)."""
    return [
        p
        for p in reg.home.rglob("*")
        if p.is_file() and (p.name.startswith(".ah-tmp-") or "pull-" in str(p.relative_to(reg.home)))
    ]


def _identity(card: AdapterCard) -> tuple[str, str, str] | None:
    """The base as an adapter declares it (name and hashes); whether it is verified depends on the registry showing it."""
    b = card.base_model
    return (b.name, b.arch_hash, b.content_hash) if b else None


def test_push_pull_roundtrip_and_hub_registry(source: Registry, hub: HubServer, tmp_path: Path, minilm_dir: Path) -> None:
    card = source.get("me/sentiment")
    result = push("me/sentiment", remote=hub.url, registry=source)
    assert result.repo_id == "me/sentiment" and len(result.commit) == 40

    # The commit registered the adapter on the hub's registry, in the same transaction: search sees it.
    hub_card = hub.registry().get("me/sentiment")
    assert hub_card.task == "sentiment" and _files(hub_card) == _files(card)
    assert _identity(hub_card) == _identity(card) and hub_card.scores == card.scores
    assert card.base_model.verified and not hub_card.base_model.verified  # the hub never read the base's weights
    assert hub_card.base_model.name_declared_by == "push to me/sentiment"
    found = remote_search(hub.url, SearchQuery(task="sentiment", base=card.base_model.content_hash[:12], rank_min=4, rank_max=4,
                                               min_scores={"sst2/accuracy": 0.9}, tags=["english"], sort="sst2/accuracy"))  # fmt: skip
    assert [c.full_name for c in found.items] == ["me/sentiment"]
    assert remote_search(hub.url, SearchQuery(task="sentiment", min_scores={"sst2/accuracy": 0.95})).items == []
    assert [c.full_name for c in remote_search(hub.url, SearchQuery(text="SST-2")).items] == ["me/sentiment"]
    by_path = remote_search(hub.url, SearchQuery(base=str(minilm_dir), task="sentiment"))  # fingerprinted on this side
    assert [c.full_name for c in by_path.items] == ["me/sentiment"]

    # The README front matter follows the Hub's conventions and parses with huggingface_hub's own ModelCard.
    info = HfApi(endpoint=hub.url).model_info("me/sentiment")
    assert info.card_data.base_model == modelcard.hub_base_model(card) and info.card_data.library_name == "peft"
    assert info.card_data.base_model_relation == "adapter" and info.card_data.license == "apache-2.0"
    assert {"sentiment", "adapterhub"} <= set(info.card_data.tags)
    evals = {(e.dataset_type, e.metric_type): e.metric_value for e in info.card_data.eval_results}
    assert evals == {("sst2", "accuracy"): 0.91, ("sst2", "loss"): 0.3}

    target = Registry(home=tmp_path / "target")
    pulled = pull("me/sentiment", remote=hub.url, registry=target)
    assert pulled.ref == "me/sentiment@1" and _files(pulled) == _files(card)
    assert (pulled.task, pulled.scores, pulled.tags, pulled.license, _identity(pulled)) == (
        card.task,
        card.scores,
        card.tags,
        card.license,
        _identity(card),
    )
    assert pulled.base_model.name_declared_by == f"pull of me/sentiment from {hub.url}"
    assert target.fsck().clean
    assert [c.ref for c in target.search(SearchQuery(text="english")).items] == ["me/sentiment@1"]
    # Pulling the same revision (by commit id) again returns the same version; force_new registers a second one,
    # whose files are the same blobs.
    assert pull(f"me/sentiment@{result.commit}", remote=hub.url, registry=target).version == 1
    assert pull(f"me/sentiment@{result.commit}", remote=hub.url, registry=target, force_new=True).version == 2
    assert _no_leftovers(target) == []


def test_corrupted_blob_on_server_fails_pull_and_registers_nothing(source: Registry, hub: HubServer, tmp_path: Path) -> None:
    push("me/sentiment", remote=hub.url, repo="me/corrupt", registry=source)
    weights = next(f for f in source.get("me/sentiment").files if f.path == "adapter_model.safetensors")
    blobs = hub.registry().blobs
    data = bytearray(read_raw(blobs, weights.sha256))
    data[-1] ^= 0xFF  # same size, one flipped byte: only the hash can tell
    write_raw(blobs, weights.sha256, bytes(data))
    try:
        target = Registry(home=tmp_path / "target")
        # The puller's own sha256 check, or (blobs on S3, verified on read) the hub refusing to send damaged bytes
        with pytest.raises(IntegrityError if not hub.blobs else RemoteError) as err:
            pull("me/corrupt", remote=hub.url, registry=target)
        assert "adapter_model.safetensors" in str(err.value)
        assert target.list(all_versions=True) == []
        assert not target.blobs.has(weights.sha256) and _no_leftovers(target) == []
    finally:
        data[-1] ^= 0xFF
        write_raw(blobs, weights.sha256, bytes(data))
    # Once the hub's bytes are right again, the same pull starts clean and succeeds.
    assert pull("me/corrupt", remote=hub.url, registry=target).ref == "me/corrupt@1"


def test_blob_missing_on_server_fails_pull_cleanly(source: Registry, hub: HubServer, tmp_path: Path) -> None:
    push("me/sentiment", remote=hub.url, repo="me/lost-blob", registry=source)
    weights = next(f for f in source.get("me/sentiment").files if f.path == "adapter_model.safetensors")
    blobs = hub.registry().blobs
    saved = read_raw(blobs, weights.sha256)
    remove_raw(blobs, weights.sha256)
    try:
        r = httpx.get(f"{hub.url}/me/lost-blob/resolve/main/adapter_model.safetensors")
        assert r.status_code == 500 and "missing" in r.json()["error"]
        target = Registry(home=tmp_path / "target")
        with pytest.raises(RemoteError) as err:
            pull("me/lost-blob", remote=hub.url, registry=target)
        assert "adapter_model.safetensors" in str(err.value)
        assert target.list(all_versions=True) == [] and _no_leftovers(target) == []
    finally:
        write_raw(blobs, weights.sha256, saved)


def test_plain_peft_repo_is_pulled_from_config_and_readme(hub: HubServer, minilm_adapter_dir: Path, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    api.create_repo("someone/plain-peft")
    readme = (
        "---\nbase_model: sentence-transformers/all-MiniLM-L6-v2\nlibrary_name: peft\nlicense: mit\npipeline_tag: sentence-similarity\n"
        "model-index:\n- name: plain\n  results:\n  - task: {type: sentence-similarity}\n    dataset: {name: STS-B, type: stsb, split: validation}\n"
        "    metrics:\n    - {type: spearman, value: 0.81}\n---\n\nA plain PEFT adapter.\n"
    )
    ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(minilm_adapter_dir.iterdir()) if p.name != "README.md"]
    api.create_commit("someone/plain-peft", [*ops, CommitOperationAdd("README.md", readme.encode())], commit_message="plain")
    pulled = pull("someone/plain-peft", remote=hub.url, registry=Registry(home=tmp_path / "t"))
    assert pulled.task == "sentence-similarity" and pulled.license == "mit"
    assert [(s.dataset, s.metric, s.split, s.value) for s in pulled.scores] == [("stsb", "spearman", "validation", 0.81)]
    assert {f.path for f in pulled.files} == {"adapter_config.json", "adapter_model.safetensors"}
    assert pulled.description == "A plain PEFT adapter."


def test_pickle_only_repo_is_refused(hub: HubServer, minilm_adapter_dir: Path, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    api.create_repo("someone/pickled")
    api.create_commit("someone/pickled", [
        CommitOperationAdd("adapter_config.json", str(minilm_adapter_dir / "adapter_config.json")),
        CommitOperationAdd("adapter_model.bin", b"\x80\x02}q\x00."),  # a pickle stream
    ], commit_message="pickle")  # fmt: skip
    target = Registry(home=tmp_path / "t")
    with pytest.raises(PickleRefused):
        pull("someone/pickled", remote=hub.url, registry=target)
    assert target.list(all_versions=True) == []


def test_invalid_adapter_commit_is_refused_whole(hub: HubServer, minilm_adapter_dir: Path) -> None:
    """A commit whose adapter fails its checks (here: a card that names other bytes) changes neither hub nor registry."""
    api = HfApi(endpoint=hub.url)
    api.create_repo("someone/bad-card")
    head = api.model_info("someone/bad-card").sha
    fake = {
        "namespace": "someone", "name": "bad-card", "version": 1, "task": "x", "rank": 4, "alpha": 8, "created_at": "2026-01-01T00:00:00Z",
        "files": [{"path": "adapter_model.safetensors", "sha256": "0" * 64, "size": 1}],
    }  # fmt: skip
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("someone/bad-card", [
            CommitOperationAdd("adapter_config.json", str(minilm_adapter_dir / "adapter_config.json")),
            CommitOperationAdd("adapter_model.safetensors", str(minilm_adapter_dir / "adapter_model.safetensors")),
            CommitOperationAdd("adapterhub.json", json.dumps(fake).encode()),
        ], commit_message="bad")  # fmt: skip
    assert err.value.response.status_code == 400 and "integrity" in err.value.response.json()["error"]
    assert api.model_info("someone/bad-card").sha == head
    assert [c.full_name for c in hub.registry().list() if c.full_name == "someone/bad-card"] == []


def test_pull_from_a_hub_that_went_away(source: Registry, tmp_path: Path) -> None:
    server = start_hub(tmp_path / "gone-hub")
    try:
        push("me/sentiment", remote=server.url, registry=source)
    finally:
        stop_hub(server)
    target = Registry(home=tmp_path / "t")
    with pytest.raises(RemoteError):
        pull("me/sentiment", remote=server.url, registry=target)
    assert target.list(all_versions=True) == [] and _no_leftovers(target) == []


def test_pull_missing_repo(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(RepoNotFound):
        pull("nobody/nothing", remote=hub.url, registry=Registry(home=tmp_path / "t"))


def test_registry_json_api(source: Registry, hub: HubServer, minilm_adapter_dir: Path) -> None:
    source.add(minilm_adapter_dir, "me/other", "sentiment", scores=[EvalScore(dataset="sst2", metric="accuracy", value=0.95)])
    first = push("me/sentiment", remote=hub.url, repo="me/versions", registry=source)
    # Pushing unchanged files again is a no-op: the client compares the oids preupload returns and skips the commit.
    assert push("me/sentiment", remote=hub.url, repo="me/versions", registry=source).commit == first.commit
    push("me/other", remote=hub.url, repo="me/versions", registry=source)
    body = httpx.get(f"{hub.url}/api/adapterhub/adapters/me/versions").json()
    assert [v["version"] for v in body["versions"]] == [2, 1] and body["aliases"] == {"latest": 2}
    assert httpx.get(f"{hub.url}/api/adapterhub/adapters/me/versions/1").json()["version"] == 1
    got = httpx.get(
        f"{hub.url}/api/adapterhub/search", params={"task": "sentiment", "min_score": "sst2/accuracy:0.9", "limit": 50}
    ).json()
    assert "me/versions" in {f"{c['namespace']}/{c['name']}" for c in got["items"]}
    assert httpx.get(f"{hub.url}/api/adapterhub/adapters/me/none").status_code == 404


def test_concurrent_pushes_to_one_repo(hub: HubServer, minilm_adapter_dir: Path, tmp_path: Path) -> None:
    """Pushes racing on one repo: each lands whole or is refused (409 on its stale parent); versions match commits."""
    from concurrent.futures import ThreadPoolExecutor

    reg = Registry(home=tmp_path / "src")
    for i in range(4):
        reg.add(
            minilm_adapter_dir, "race/a", "sentiment", scores=[EvalScore(dataset="d", metric="m", value=i / 10)], force_new=True
        )

    def one(version: int) -> str:
        try:
            return push(f"race/a@{version}", remote=hub.url, registry=reg).commit
        except RemoteError as exc:
            assert "409" in str(exc)
            return "refused"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(1, 5)))
    landed = [r for r in results if r != "refused"]
    assert landed  # the first one in always lands
    api = HfApi(endpoint=hub.url)
    history = [c.commit_id for c in api.list_repo_commits("race/a")]
    assert set(landed) <= set(history) and len(history) == len(landed) + 1  # + the initial commit
    assert len(hub.registry().versions("race/a")) == len(landed)
