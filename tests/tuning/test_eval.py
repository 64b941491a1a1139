"""adapterhub eval: metrics against hand-computed values, mixed-adapter batches equal separate runs, measured scores
recorded with provenance (the base's on the base record), and measured vs reported in search on both databases."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import adapterhub
from adapterhub.card import EvalScore, ScoreProvenance, ScoreSource, SearchQuery
from adapterhub.errors import UsageError
from adapterhub.store.registry import Registry
from adapterhub.tuning.metrics import score

from .conftest import copy_rows, write_jsonl


def test_exact_match_and_accuracy() -> None:
    preds, refs = [" 2020-01-02 ", "Positive.", "no"], ["2020-01-02", "positive", "yes"]
    assert score("exact_match", preds, refs) == pytest.approx(1 / 3)  # only the first: case and period count
    assert score("accuracy", preds, refs) == pytest.approx(2 / 3)  # "Positive." ~ "positive"


def test_rouge_l_by_hand() -> None:
    # LCS("the cat sat", "the cat sat down") = 3 words: P = 3/3, R = 3/4, F1 = 2PR/(P+R) = 6/7
    assert score("rougeL", ["the cat sat"], ["the cat sat down"]) == pytest.approx(6 / 7)
    assert score("rougeL", ["a b", "x"], ["a b", "y"]) == pytest.approx(0.5)


def test_chrf_bounds_and_by_hand() -> None:
    assert score("chrf", ["abc"], ["abc"]) == pytest.approx(1.0)
    assert score("chrf", ["xyz"], ["abc"]) == pytest.approx(0.0)
    # "ab" vs "abc": char 1-grams P=2/2 R=2/3, 2-grams P=1/1 R=1/2, no 3..6-grams on the hypothesis side (P=R=0 -> skipped
    # by sacrebleu's effective order); chrF averages P and R over the n-gram orders present, then F-beta with beta=2.
    p, r = (1 + 1) / 2, (2 / 3 + 1 / 2) / 2
    assert score("chrf", ["ab"], ["abc"]) == pytest.approx(5 * p * r / (4 * p + r), abs=1e-4)


def test_unknown_metric_and_lengths() -> None:
    with pytest.raises(UsageError):
        score("bleu", ["a"], ["a"])
    with pytest.raises(UsageError):
        score("exact_match", ["a"], ["a", "b"])


@pytest.fixture(scope="module")
def two_adapters(chat_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("eval")
    reg = Registry(home=d / "home")
    data = write_jsonl(d / "train.jsonl", copy_rows(16))
    held = write_jsonl(d / "held.jsonl", copy_rows(6))
    a = adapterhub.tune(chat_llama_dir, data, name="t/a", task="copy", registry=reg, max_steps=4, lr=2e-2, batch_size=4, seed=1)
    b = adapterhub.tune(chat_llama_dir, data, name="t/b", task="copy", registry=reg, max_steps=4, lr=2e-2, batch_size=4, seed=2)
    return {"registry": reg, "held": held, "refs": [a.ref, b.ref]}


def test_mixed_batches_equal_separate_runs_and_scores_are_recorded(two_adapters: dict[str, Any], chat_llama_dir: Path) -> None:
    reg, held, (a, b) = two_adapters["registry"], two_adapters["held"], two_adapters["refs"]
    mixed = adapterhub.evaluate([a, b], held, base=chat_llama_dir, registry=reg, with_base=True, max_tokens=6, batch_size=3)
    alone_a = adapterhub.evaluate([a], held, base=chat_llama_dir, registry=reg, max_tokens=6, batch_size=1, record=False)
    alone_b = adapterhub.evaluate([b], held, base=chat_llama_dir, registry=reg, max_tokens=6, batch_size=1, record=False)
    assert mixed.get(a).predictions == alone_a.get(a).predictions
    assert mixed.get(b).predictions == alone_b.get(b).predictions
    assert mixed.get(a).predictions != mixed.get("base").predictions  # the rows really ran different weights
    base_value = mixed.get("base").score.value
    assert mixed.get(a).gain == pytest.approx(mixed.get(a).score.value - base_value)
    # recorded: measured, with provenance; the base's score on the base record
    card = reg.get(a)
    (s,) = [x for x in card.scores if x.metric == "exact_match"]
    assert s.source is ScoreSource.MEASURED and s.dataset == "held" and s.value == mixed.get(a).score.value
    prov = s.provenance
    assert prov.dataset_sha256 == hashlib.sha256(held.read_bytes()).hexdigest() and prov.dataset_size == 6
    assert prov.decoding == {
        "strategy": "greedy",
        "max_new_tokens": 6,
        "batch_size": 3,
        "dtype": "float32",
        "chat_template": True,
    }
    assert prov.base_fingerprint == mixed.base_fingerprint and prov.adapterhub_version == adapterhub.__version__
    (bs,) = reg.get_base(mixed.base_fingerprint).scores
    assert (bs.source, bs.value, bs.dataset) == (ScoreSource.MEASURED, base_value, "held")
    # a later run without the base finds the recorded base score for the gain; re-measuring replaces, never duplicates
    again = adapterhub.evaluate([a], held, base=chat_llama_dir, registry=reg, max_tokens=6, batch_size=3)
    assert again.get(a).gain == pytest.approx(again.get(a).score.value - base_value)
    assert len([x for x in reg.get(a).scores if x.metric == "exact_match"]) == 1


def test_perplexity_matches_the_models_own_loss(two_adapters: dict[str, Any], chat_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from adapterhub.tuning.data import read_jsonl
    from adapterhub.tuning.encode import encode

    reg, a = two_adapters["registry"], two_adapters["refs"][0]
    one = write_jsonl(tmp_path / "one.jsonl", copy_rows(1))
    got = adapterhub.evaluate([a], one, base=chat_llama_dir, registry=reg, metric="perplexity", record=False).get(a).score
    assert got.higher_is_better is False
    tok = AutoTokenizer.from_pretrained(str(chat_llama_dir))
    row = encode(tok, read_jsonl(one).examples[0], 512)
    model = adapterhub.load(chat_llama_dir, [a], registry=reg, dtype="float32")
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss
    assert got.value == pytest.approx(math.exp(float(loss)), rel=1e-4)


def _measured(value: float) -> EvalScore:
    from datetime import datetime, timezone

    prov = ScoreProvenance(dataset_sha256="0" * 64, dataset_size=3, metric="exact_match", base_fingerprint="f" * 64,
                           adapterhub_version="0.1.0", date=datetime.now(timezone.utc))  # fmt: skip
    return EvalScore(dataset="dates", metric="exact_match", value=value, source=ScoreSource.MEASURED, provenance=prov)


def test_measured_vs_reported_in_search(registry: Registry, llama_adapter_dir: Path) -> None:
    # a reported score (typed in), and a score that claims to be measured on add: stored as reported all the same
    registry.add(llama_adapter_dir, "ns/typed", "dates", scores=[EvalScore(dataset="dates", metric="exact_match", value=0.99)])
    claimed = registry.add(llama_adapter_dir, "ns/claims", "dates", scores=[_measured(0.98)])
    assert claimed.scores[0].source is ScoreSource.REPORTED and claimed.scores[0].provenance is None
    registry.add(llama_adapter_dir, "ns/real", "dates")
    registry.record_scores("ns/real", [_measured(0.5)])
    registry.add(llama_adapter_dir, "ns/real2", "dates")
    registry.record_scores("ns/real2", [_measured(0.7)])

    def names(**kw: object) -> list[str]:
        return [c.full_name for c in registry.search(SearchQuery(**kw)).items]  # type: ignore[arg-type]

    assert set(names()) == {"ns/typed", "ns/claims", "ns/real", "ns/real2"}
    assert set(names(measured=True)) == {"ns/real", "ns/real2"}
    assert set(names(min_scores={"dates/exact_match": 0.6})) == {"ns/typed", "ns/claims", "ns/real2"}
    assert names(measured=True, min_scores={"dates/exact_match": 0.6}) == ["ns/real2"]  # the 0.99 typed in does not count
    assert names(measured=True, sort="dates/exact_match") == ["ns/real2", "ns/real"]
    assert names(measured=True, sort="dates/exact_match", task="dates") == ["ns/real2", "ns/real"]
    card = registry.get("ns/real")
    assert card.scores[0].source is ScoreSource.MEASURED and card.scores[0].provenance.dataset_size == 3
    assert any("(measured)" in line for line in card.summary_lines())
