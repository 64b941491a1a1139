"""What the engine's rows share: one left-padded KV cache, the attention mask over it, and per-row sampling.

Rows join a running batch by prefilling on their own (left padded among themselves) and having their cache
left-padded to the running batch's length and concatenated; padded positions are masked, so a row's tokens are those
it would get alone. A finished row is dropped from the cache (`batch_select_indices`), and columns no row uses any
more are cut off the left, so the cache stays as long as its longest live row.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [len(seqs), longest], padded on the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids from a left-padded mask: each row counts from 0 at its first real token (pads get 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=getattr(model, "config", None))


def _layers(cache: Any) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if layers is None:  # pragma: no cover - transformers < 4.56 keeps lists of tensors
        raise RuntimeError("this transformers version's cache has no per-layer objects; upgrade transformers")
    return list(layers)


def check_cache(cache: Any) -> None:
    """Refuse caches the merge below cannot handle (sliding-window or recurrent layers)."""
    for layer in _layers(cache):
        if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys"):
            raise RuntimeError(f"cannot batch rows over a {type(layer).__name__} cache layer")


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    extra = width - t.shape[-2]
    return t if extra == 0 else F.pad(t, (0, 0, extra, 0))


def merge(cache: Any, mask: torch.Tensor, new: Any, new_mask: torch.Tensor) -> torch.Tensor:
    """Append `new`'s rows to `cache` in place (both left padded to the longer one); the merged mask is returned."""
    width = max(mask.shape[1], new_mask.shape[1])
    for old_l, new_l in zip(_layers(cache), _layers(new), strict=True):
        old_l.keys = torch.cat([_pad_left(old_l.keys, width), _pad_left(new_l.keys, width)], dim=0)
        old_l.values = torch.cat([_pad_left(old_l.values, width), _pad_left(new_l.values, width)], dim=0)
    return torch.cat([F.pad(mask, (width - mask.shape[1], 0)), F.pad(new_mask, (width - new_mask.shape[1], 0))], dim=0)


def keep_rows(cache: Any, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only `rows` (in this order) and cut the left columns none of them uses; the new mask is returned."""
    idx = torch.tensor(rows, dtype=torch.long)
    mask = mask[idx]
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if used.numel() else mask.shape[1]
    for layer in _layers(cache):
        layer.keys = layer.keys[idx, :, start:, :]
        layer.values = layer.values[idx, :, start:, :]
    return mask[:, start:]


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """One token id from a row's last logits: argmax at temperature 0, else nucleus sampling with the row's own RNG."""
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = sorted_p.cumsum(-1)
        drop = cum - sorted_p > top_p  # keep the smallest prefix whose mass reaches top_p (at least one token)
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))
