"""Model cards: what push writes parses with huggingface_hub's own ModelCard, and reading gives the card back."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from huggingface_hub import ModelCard

from adapterhub.card import AdapterCard, BaseModelRefInfo, EvalScore
from adapterhub.hub import modelcard


def _card(**kw) -> AdapterCard:  # type: ignore[no-untyped-def]
    base = dict(
        namespace="me", name="cls", version=3, task="text-classification", rank=8, alpha=16, license="mit", tags=["english"],
        base_model=BaseModelRefInfo(name="tiny-base", arch_hash="a" * 64, content_hash="c" * 64),
        base_model_name_or_path="org/tiny-base", description="Classifies things.",
        scores=[EvalScore(dataset="sst2", metric="accuracy", value=0.9), EvalScore(dataset="sst2", metric="loss", value=0.2, higher_is_better=False)],
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )  # fmt: skip
    return AdapterCard(**{**base, **kw})


def test_rendered_card_follows_hub_conventions() -> None:
    text = modelcard.render(_card(), repo_id="team/cls")
    data = ModelCard(text).data
    assert data.base_model == "org/tiny-base" and data.base_model_relation == "adapter" and data.library_name == "peft"
    assert data.license == "mit" and data.tags[:2] == ["text-classification", "adapterhub"] and "english" in data.tags
    assert {(r.dataset_type, r.metric_type, r.metric_value) for r in data.eval_results} == {
        ("sst2", "accuracy", 0.9),
        ("sst2", "loss", 0.2),
    }
    assert data.model_name == "team/cls"


def test_reading_back_gives_task_scores_and_tags() -> None:
    card = _card()
    info = modelcard.card_info(modelcard.render(card))
    assert (info.task, info.base_model, info.license, info.tags) == ("text-classification", "org/tiny-base", "mit", ["english"])
    assert info.scores == card.scores
    assert info.description == "Classifies things."


@pytest.mark.parametrize(
    ("declared", "expected"), [("org/tiny-base", "org/tiny-base"), ("/home/me/models/base", "tiny-base"), (None, "tiny-base")]
)
def test_base_model_prefers_a_hub_id(declared: str | None, expected: str) -> None:
    assert modelcard.hub_base_model(_card(base_model_name_or_path=declared)) == expected


def test_plain_readme_and_config_fallbacks() -> None:
    assert modelcard.card_info(None, {"task_type": "CAUSAL_LM", "base_model_name_or_path": "x/y"}).task == "text-generation"
    assert modelcard.card_info("no front matter\n\nJust text.", {}).description == "no front matter"
    with pytest.raises(ValueError):
        modelcard.front_matter("---\nkey: [unclosed\n---\n")
    assert modelcard.front_matter("---\n---\nbody") == {}
