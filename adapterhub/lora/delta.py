"""The weight change a LoRA module makes, laid out like the base weight, for plain LoRA and DoRA.

Shared by fuse (attach), merge, compose and extract so every path computes the same numbers PEFT does.
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedFeature
from ..peft_format import LayerKind
from ..peft_weights import LoraModule


def delta_weight(m: LoraModule, *, fan_in_fan_out: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """scaling * B @ A in the base weight's layout: [out, in] (Linear), [in, out] (Conv1D), [num_emb, dim] (Embedding)."""
    d = (m.lora_B.to(dtype) @ m.lora_A.to(dtype)) * m.scaling
    return d.T if (fan_in_fan_out or m.kind is LayerKind.EMBEDDING) else d


def dora_norm(weight_oi: torch.Tensor, delta_oi: torch.Tensor) -> torch.Tensor:
    """||W + ΔW|| per output feature, both laid out [out, in], in float32: DoRA's weight norm, the one place it is
    computed (forward, fuse, merge). PEFT takes it on the base weight plus this adapter's delta, detached."""
    norm: torch.Tensor = torch.linalg.norm(weight_oi.to(torch.float32) + delta_oi.to(torch.float32), dim=1)
    return norm


def merged_weight(base: torch.Tensor, m: LoraModule, *, fan_in_fan_out: bool = False, weight: float = 1.0) -> torch.Tensor:
    """The base weight with `weight` x this module folded in, computed in float32, returned in float32.

    DoRA: W' = m / ||W + s·BA||_row · (W + s·BA), the norm taken per output feature as PEFT does; with a
    weight other than 1 the LoRA delta is scaled first (PEFT's weighted-merge convention).
    """
    w = base.to(torch.float32)
    d = delta_weight(m, fan_in_fan_out=fan_in_fan_out) * weight
    if m.magnitude is None:
        return w + d
    if m.kind is LayerKind.EMBEDDING:
        raise UnsupportedFeature("DoRA on an Embedding layer", where=m.module)
    # work in [out, in] layout
    w_oi = w.T if fan_in_fan_out else w
    d_oi = d.T if fan_in_fan_out else d
    merged = (m.magnitude.to(torch.float32) / dora_norm(w_oi, d_oi)).unsqueeze(1) * (w_oi + d_oi)
    return merged.T if fan_in_fan_out else merged


def merged_weight_onto(
    current: torch.Tensor, base: torch.Tensor, m: LoraModule, *, fan_in_fan_out: bool = False, weight: float = 1.0
) -> torch.Tensor:
    """Fold `weight` x this module into `current`, a weight that may already hold other merged adapters.

    LoRA adds its delta to `current`. DoRA rescales `current + delta` per output feature by m / ||base + delta||,
    the norm taken on the unmerged `base`, as PEFT (>= 0.21) does when it merges several adapters in turn and as
    DoRA's forward computes it. Returned in float32.
    """
    if m.magnitude is None or current is base:
        return merged_weight(current, m, fan_in_fan_out=fan_in_fan_out, weight=weight)
    if m.kind is LayerKind.EMBEDDING:
        raise UnsupportedFeature("DoRA on an Embedding layer", where=m.module)
    d = delta_weight(m, fan_in_fan_out=fan_in_fan_out) * weight
    b = base.to(torch.float32)
    c = current.to(torch.float32)
    norm = dora_norm(b.T if fan_in_fan_out else b, d.T if fan_in_fan_out else d)
    factor = (m.magnitude.to(torch.float32) / norm).unsqueeze(1)
    merged = factor * ((c.T if fan_in_fan_out else c) + (d.T if fan_in_fan_out else d))
    return merged.T if fan_in_fan_out else merged
