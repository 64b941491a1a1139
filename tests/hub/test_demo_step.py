"""The demo's hub step on its own: it starts a hub, pushes, pulls into a second registry, searches, and stops."""

from __future__ import annotations

from pathlib import Path

from adapterhub.demo import DemoContext, hub_steps
from adapterhub.store.registry import Registry


def test_hub_step_runs_end_to_end(tmp_path: Path, minilm_dir: Path, minilm_adapter_dir: Path) -> None:
    reg = Registry(home=tmp_path / "registry")
    card = reg.add(minilm_adapter_dir, "demo/sentiment", "sentiment", base=minilm_dir)
    lines: list[str] = []
    other = reg.add(minilm_adapter_dir, "demo/topic", "topic")
    # Shaped like the earlier steps leave them: seeded refs in a list, trained ones as {task: ref}.
    ctx = DemoContext(reg, minilm_dir, tmp_path, results={"adapters": [other.ref], "trained": {"sentiment": card.ref}}, echo=lines.append)
    hub_steps.run(ctx)
    text = "\n".join(lines)
    assert ctx.results["pulled"] == "demo/sentiment@1"
    pulled = Registry(home=tmp_path / "registry-2").get("demo/sentiment").base_model
    identity = ("name", "arch_hash", "content_hash")  # the pulled copy's base is declared by the pull, not verified
    assert pulled is not None and card.base_model is not None
    assert pulled.model_dump(include=set(identity)) == card.base_model.model_dump(include=set(identity)) and not pulled.verified
    assert "files identical to the pushed ones: True" in text
    assert "task=sentiment: demo/sentiment@1" in text
    assert "demo/topic@1" in text  # the seeded adapter was pushed too
    assert "hub stopped" in text
