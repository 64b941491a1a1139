"""What the server must answer, computed locally with `adapterhub.load` and transformers' `generate`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def local_model(base: Path, home: Path, refs: Sequence[str], weights: Sequence[float] | None = None) -> torch.nn.Module:
    import adapterhub
    from adapterhub.store.registry import Registry

    return adapterhub.load(base, list(refs), registry=Registry(home=home), weights=weights)


def greedy(model: torch.nn.Module, ids: list[int], max_new: int, eos: int = 2) -> list[int]:
    """Greedy new tokens as `generate` gives them, without the final EOS (the server reports it as finish_reason)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, pad_token_id=eos)  # fmt: skip
    new = out[0, len(ids) :].tolist()
    return new[: new.index(eos)] if eos in new else new
