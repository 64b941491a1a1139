"""The demo's tuning step wired end to end on the tiny chat Llama (the real run on SmolLM2 is tests/test_demo.py, slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.card import ScoreSource
from adapterhub.demo import run_demo


def test_tune_step_registers_measured_scores_and_prints_the_gain(
    chat_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adapterhub.demo.tune_steps as step
    import adapterhub.gguf_base

    monkeypatch.setattr(adapterhub.gguf_base, "embedded_base", lambda home=None: chat_llama_dir)
    monkeypatch.setattr(step, "DEMO_SETTINGS", {**step.DEMO_SETTINGS, "max_steps": 2})
    lines: list[str] = []
    ctx = run_demo(tmp_path / "demo", base_dir=tmp_path, echo=lines.append, only=("tune_steps",))
    text = "\n".join(lines)
    assert "Tune an adapter from JSONL" in text and "gain of demo/dates-iso@1 over the base" in text
    card = ctx.registry.get(ctx.results["tuned"])
    assert card.tune_provenance is not None and card.tune_provenance.data[0].name == "dates-train.jsonl"
    (s,) = card.scores
    assert (s.source, s.dataset, s.provenance.dataset_size) == (ScoreSource.MEASURED, "adapterhub-dates", 64)
    (b,) = ctx.registry.get_base(card.base_model.content_hash).scores
    assert ctx.results["tune_gain"] == pytest.approx(s.value - b.value)
