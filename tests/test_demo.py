"""`make demo` end to end, as the README promises: every step runs and what it shows is true."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.demo import STEPS, run_demo


@pytest.mark.slow
def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    lines: list[str] = []
    ctx = run_demo(tmp_path / "demo", echo=lines.append)
    text = "\n".join(lines)
    assert "is not part of this build" not in text, "every demo step must ship"
    assert len(STEPS) == 6
    reg = ctx.registry
    # trained adapters were registered with the scores the demo measured on held-out examples
    for task, ref in ctx.results["trained"].items():
        card = reg.get(ref)
        assert card.task == task and card.scores, f"{ref} has no measured score"
        assert all(0.0 <= s.value <= 1.0 for s in card.scores)
    # seeded adapters are labelled untrained and carry no invented scores
    for ref in ctx.results["adapters"]:
        card = reg.get(ref)
        assert "untrained" in card.tags and card.scores == []
    assert ctx.results["mixed_batch_max_diff"] <= 1e-5
    merged = reg.list_bases()
    assert any(b.lineage and b.lineage.method == "merge" for b in merged)
    assert (Path(ctx.results["merged_dir"]) / "config.json").is_file()
    assert len(ctx.results["composed"]) == 2
    assert ctx.results["pulled"] in set(ctx.results["trained"].values())
    assert reg.fsck().clean
    answers = ctx.results["deploy_answers"]  # SmolLM2 deployed once, one chat request per adapter
    assert "Paris" in answers["smollm2"] and len(set(answers.values())) == len(answers)
    assert ctx.results["deploy_concurrent_same"]
    tuned = reg.get(ctx.results["tuned"])
    assert tuned.tune_provenance is not None and [s.source.value for s in tuned.scores] == ["measured"]
    assert ctx.results["tune_gain"] > 0  # the tuned adapter beats the base on held-out dates
