"""Weighted models (`ns/a:0.7+ns/b:0.3`) live in the deploy engine's adapter cache: composed in memory when they
become resident, counted against the byte budget, evicted LRU like any adapter, and never written to disk."""

from __future__ import annotations

from pathlib import Path

import torch

from adapterhub.deploy.engine import ServingCache
from adapterhub.deploy.models import ModelResolver, composed_key, composed_parts
from adapterhub.loading import load_base
from adapterhub.lora.routing import route
from adapterhub.store.registry import Registry


def _logits(model: torch.nn.Module, name: str) -> torch.Tensor:
    with torch.no_grad(), route(model, [name]):
        return model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits


def test_composed_adapters_are_evicted_under_the_budget(chat_llama_dir: Path, llama_adapters: dict[str, Path]) -> None:
    model = load_base(chat_llama_dir)
    known = {"team/qv@1": llama_adapters["team/qv"], "team/mlp@1": llama_adapters["team/mlp"]}

    def key(w: float) -> str:
        return composed_key([("team/qv@1", w), ("team/mlp@1", 0.5)])

    probe = ServingCache(model, 1 << 30)
    probe.known.update(known)
    probe.ensure(key(0.1))
    one = probe.used_bytes
    first = _logits(model, key(0.1))
    probe.clear()

    cache = ServingCache(model, 3 * one)  # room for two or three compositions, not six
    cache.known.update(known)
    for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        cache.ensure(key(w))
        assert cache.used_bytes <= cache.budget_bytes
    assert 1 <= len(cache.resident) <= 3 and cache.evictions >= 3
    assert key(0.1) not in cache.resident
    cache.ensure(key(0.1))  # evicted, composed again on demand: the same adapter
    assert torch.equal(_logits(model, key(0.1)), first)
    assert not torch.equal(_logits(model, key(0.6)), first)  # the weights matter


def test_composed_key_round_trips_and_folders_are_not_composed() -> None:
    parts = [("team/qv@1", 0.7), ("team/mlp@12", -0.30000000000000004)]
    assert composed_parts(composed_key(parts)) == parts
    assert composed_parts("team/qv@1") is None
    assert composed_parts("/abs/folder:1") is None


def test_old_composed_folders_are_removed_at_start(tmp_path: Path, chat_llama_dir: Path) -> None:
    stale = tmp_path / "tmp" / "deploy-combined" / "0123abcd"
    stale.mkdir(parents=True)
    (stale / "adapter_model.safetensors").write_bytes(b"x")
    reg = Registry(home=tmp_path)
    try:
        ModelResolver(chat_llama_dir, "tiny", reg)
        assert not stale.parent.exists()
    finally:
        reg.db.dispose()
