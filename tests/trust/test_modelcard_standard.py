"""Model cards are the Hub's standard card (issue 11): written through huggingface_hub's `ModelCardData` /
`EvalResult`, read back through them, with the `base_model:adapter:<base>` tag the Hub's model tree filters on and
no adapterhub-only fields in the front matter (they live in `adapterhub.json`). Round trips through a real hub on
SQLite and PostgreSQL, with `ModelCard.load` as the oracle; the YAML safety rules still hold on the new path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, hf_hub_download

from adapterhub.card import AdapterCard, EvalScore
from adapterhub.hub import modelcard
from adapterhub.hub.client import pull, push
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry
from tests.factories import write_large_adapter

from .conftest import BACKENDS, fresh_database, hub_registry, serve

BASE = "org/tiny-base"
SCORES = [
    EvalScore(dataset="sst2", metric="accuracy", value=0.91),
    EvalScore(dataset="sst2", metric="loss", value=0.3, higher_is_better=False),
    EvalScore(dataset="imdb", metric="f1", value=0.8, split="validation"),
]
STANDARD_KEYS = {"base_model", "base_model_relation", "library_name", "license", "tags", "model-index"}


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundHub]:
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"cards-{request.param}") / "home"
        home.mkdir(parents=True)
        with serve(home, db_url) as server:
            server.registry = lambda: hub_registry(home, db_url)  # type: ignore[method-assign]  # this backend's database
            yield server


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("cards-src")
    folder = write_large_adapter(root / "a", seed=3, layers=1, width=64, rank=4)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": BASE}))
    reg = Registry(home=root / "home")
    reg.add(folder, "team/card", "sentiment", scores=SCORES, tags=["english"], license="apache-2.0", description="Sentiment.")
    return reg


def _results(card: ModelCard) -> set[tuple[str, str, str, str, float]]:
    return {(r.task_type, r.dataset_type, r.dataset_split, r.metric_type, r.metric_value) for r in card.data.eval_results}


def _want(scores: list[EvalScore]) -> set[tuple[str, str, str, str, float]]:
    return {("sentiment", s.dataset, s.split, s.metric, s.value) for s in scores}


def test_rendered_card_is_the_hubs_standard_card(source: Registry) -> None:
    card = source.get("team/card")
    text = modelcard.render(card, repo_id="team/card")
    parsed = ModelCard(text)
    assert _results(parsed) == _want(SCORES)
    assert parsed.data.base_model == BASE and parsed.data.base_model_relation == "adapter"
    assert f"base_model:adapter:{BASE}" in parsed.data.tags and "english" in parsed.data.tags
    front = yaml.safe_load(text.split("---")[1])
    assert set(front) <= STANDARD_KEYS, set(front) - STANDARD_KEYS  # nothing adapterhub-only up there
    assert "higher_is_better" not in text.split("---")[1]
    assert parsed.data.to_yaml() == modelcard.card_data(card, "team/card").to_yaml()  # what ModelCardData wrote


def test_push_then_read_back_by_hub_pull_and_modelcard_load(hub: BackgroundHub, source: Registry, tmp_path: Path) -> None:
    card = source.get("team/card")
    push("team/card", remote=hub.url, registry=source)
    readme = hf_hub_download("team/card", "README.md", endpoint=hub.url, cache_dir=tmp_path / "hf")
    loaded = ModelCard.load(readme)
    assert _results(loaded) == _want(SCORES) and loaded.data.base_model == BASE

    def same(other: AdapterCard) -> None:
        assert other.scores == card.scores and other.tags == card.tags and other.task == card.task
        assert other.base_model_name_or_path == BASE and other.license == card.license

    reg = hub.registry()
    same(reg.get("team/card"))
    reg.db.dispose()
    same(pull("team/card", remote=hub.url, registry=Registry(home=tmp_path / "dest")))
    api = HfApi(endpoint=hub.url)
    assert api.model_info("team/card").card_data.base_model == BASE
    assert [m.id for m in api.list_models(filter=f"base_model:adapter:{BASE}")] == ["team/card"]


def test_a_card_without_adapterhub_json_reads_the_same(hub: BackgroundHub, source: Registry, tmp_path: Path) -> None:
    """A repository holding only the PEFT files and the README (no adapterhub.json): the hub and pull read the
    scores, base and tags from the standard card alone; a loss is lower-is-better without a field saying so."""
    card = source.get("team/card")
    folder = source.adapter_path(card.ref)
    ops = [
        CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(folder / f.path)) for f in card.files if f.path != "README.md"
    ]
    ops.append(
        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=modelcard.render(card, repo_id="team/plain").encode())
    )
    api = HfApi(endpoint=hub.url)
    api.create_repo("team/plain")
    api.create_commit("team/plain", ops, commit_message="plain PEFT repo")
    reg = hub.registry()
    for got in (reg.get("team/plain"), pull("team/plain", remote=hub.url, registry=Registry(home=tmp_path / "d"))):
        assert sorted(got.scores, key=str) == sorted(card.scores, key=str) and got.tags == card.tags
        assert got.task == "sentiment" and got.license == "apache-2.0"
    reg.db.dispose()


def test_yaml_safety_still_applies_on_the_modelcard_path() -> None:
    bomb = "---\na: &a [x, x]\nb: &b [*a, *a]\nmodel-index: [*b]\n---\n"
    with pytest.raises(ValueError, match="anchors and aliases"):
        modelcard.card_info(bomb)
    huge = "---\ntags: [x]\n---\n" + "y" * (modelcard.MAX_CARD_BYTES + 1)
    with pytest.raises(ValueError, match="limit"):
        modelcard.card_info(huge)
    # a hostile model-index is no scores, never an exception or an attribute smuggled into ModelCardData
    for index in ("[1, 2]", "{to_dict: 1}", "[{name: x, results: [{task: 3}]}]", "[{results: {metrics: [{value: .nan}]}}]"):
        info = modelcard.card_info(f"---\nmodel-index: {index}\ntags: [adapterhub, sentiment]\n---\n")
        assert info.scores == [] and info.task == "sentiment"
    nan = "---\nmodel-index:\n- name: x\n  results:\n  - task: {type: t}\n    dataset: {name: d, type: d}\n    metrics:\n    - {type: acc, value: .nan}\n---\n"
    assert modelcard.card_info(nan).scores == []
