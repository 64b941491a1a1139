"""The arithmetic of combining LoRA modules: exact concatenation, low-rank SVD, and task-vector merges.

Everything works in "B @ A" layout (Linear [out, in], Conv1D and Embedding before their transpose): the
layout is the same for every input of one module, so element-wise methods do not care. A part's delta is
weight · scaling · B @ A (its task vector, as PEFT calls it, is scaling · B @ A). Results come back as factors (A [r, in], B [out, r]) with scaling 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import UsageError

METHODS = ("cat", "linear", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
# Methods that prune or mix element-wise on the full delta, then factor it back to rank R by SVD.
TASK_VECTOR_METHODS = ("ties", "dare_linear", "dare_ties", "magnitude_prune")
NEEDS_DENSITY = TASK_VECTOR_METHODS
SignMethod = Literal["total", "frequency"]


@dataclass
class Part:
    """One adapter's factors for one module, with its LoRA scaling and the user's weight."""

    lora_A: torch.Tensor  # [r, in]
    lora_B: torch.Tensor  # [out, r]
    scaling: float
    weight: float

    @property
    def rank(self) -> int:
        return int(self.lora_A.shape[0])


@dataclass
class Factors:
    """A module's combined adapter as factors with scaling 1, and how much of the target's energy they keep."""

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    energy: float | None = None  # sum of kept σ² / sum of all σ², for methods that truncate

    @property
    def rank(self) -> int:
        return int(self.lora_A.shape[0])


def cat(parts: list[Part]) -> Factors:
    """Exact: stack A's (each carrying weight·scaling) and B's; B' @ A' = Σ w_i s_i B_i A_i, rank = Σ r_i."""
    a = torch.cat([p.lora_A.float() * (p.weight * p.scaling) for p in parts], dim=0)
    b = torch.cat([p.lora_B.float() for p in parts], dim=1)
    return Factors(a, b, 1.0)


def linear_factors(parts: list[Part]) -> Factors:
    """PEFT's `linear`: A' = Σ ±√|w s| A_i, B' = Σ √|w s| B_i. An approximation (cross terms), same ranks only."""
    ranks = {p.rank for p in parts}
    if len(ranks) != 1:
        raise UsageError(f"method linear needs equal ranks, got {sorted(ranks)}", hint="use --method cat or svd")
    a = torch.zeros_like(parts[0].lora_A, dtype=torch.float32)
    b = torch.zeros_like(parts[0].lora_B, dtype=torch.float32)
    for p in parts:
        ws = p.weight * p.scaling
        root = math.sqrt(abs(ws))
        a = a + p.lora_A.float() * (root if ws >= 0 else -root)  # the sign goes on one side only
        b = b + p.lora_B.float() * root
    return Factors(a, b, None)


def low_rank_of_factors(b: torch.Tensor, a: torch.Tensor, rank: int) -> Factors:
    """Best rank-`rank` approximation (Eckart-Young) of b @ a, computed through QR of the thin factors:
    the SVD is of a k×k core (k = inner dimension), so it never forms the full delta."""
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    return _truncate(qb @ u, s, vh @ qa.T, rank)


EXACT_SVD_MAX_DIM = 1024  # above this, a randomized SVD with power iterations (exact for deltas of rank <= r)


def low_rank(delta: torch.Tensor, rank: int) -> Factors:
    """Best rank-`rank` approximation of a full delta (after pruning, which makes it full rank), in float64.

    Past EXACT_SVD_MAX_DIM a full SVD costs tens of seconds per matrix; the randomized one (q = rank + 10,
    4 power iterations) is exact for deltas of rank <= `rank` and near-optimal otherwise. Energy uses the exact
    Frobenius norm as the total."""
    d = delta.double()
    if min(d.shape) <= EXACT_SVD_MAX_DIM:
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        return _truncate(u, s, vh, rank)
    r = max(1, min(rank, *d.shape))
    u, s, v = torch.svd_lowrank(d, q=min(r + 10, *d.shape), niter=4)
    f = _truncate(u, s, v.T, r)
    total = float(d.pow(2).sum())
    f.energy = float(s[:r].pow(2).sum()) / total if total > 0 else 1.0
    return f


def _truncate(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> Factors:
    r = max(1, min(rank, s.shape[0]))
    total = float((s.double() ** 2).sum())
    kept = float((s[:r].double() ** 2).sum())
    root = s[:r].sqrt()
    # split σ evenly between the factors: both stay well scaled if the result is trained further
    b = (u[:, :r] * root).float()
    a = (root.unsqueeze(1) * vh[:r]).float()
    return Factors(a.contiguous(), b.contiguous(), kept / total if total > 0 else 1.0)


# --- task-vector methods (TIES, DARE, magnitude pruning) on full deltas ------------------------------------


def magnitude_mask(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the int(density·n) largest-magnitude entries."""
    if density >= 1:
        return torch.ones_like(t, dtype=torch.bool)
    k = int(density * t.numel())
    if k <= 0:
        return torch.zeros_like(t, dtype=torch.bool)
    mag = t.abs()
    # the k-th largest magnitude as a threshold: a selection, not topk's sort; ties at the threshold (rare in
    # float deltas) keep a few more than k where topk would pick among them arbitrarily
    threshold = mag.reshape(-1).kthvalue(t.numel() - k + 1).values
    return mag >= threshold


def dare_drop(t: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability `density` and rescale by 1/density (expectation preserved)."""
    if density >= 1:
        return t
    keep = torch.bernoulli(torch.full(t.shape, density, dtype=torch.float32), generator=generator)
    return t * keep / density


def elect_and_merge(tensors: list[torch.Tensor], weights: list[float], sign_method: SignMethod) -> torch.Tensor:
    """TIES: elect a sign per entry from the (unweighted, pruned) tensors, average the weighted entries that agree."""
    stacked = torch.stack(tensors)
    signs = stacked.sign()
    votes = stacked.sum(0) if sign_method == "total" else signs.sum(0)
    majority = torch.where(votes >= 0, 1.0, -1.0)
    agree = signs == majority
    w = torch.tensor(weights, dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    total = (stacked * w * agree).sum(0)
    return total / agree.sum(0).clamp(min=1)


def task_vector_merge(
    method: str,
    deltas: list[torch.Tensor],
    weights: list[float],
    *,
    density: float,
    sign_method: SignMethod = "total",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PEFT's merge_utils semantics on full deltas (= its `<method>_svd` combination types before the SVD)."""
    if method == "magnitude_prune":
        return sum(d * magnitude_mask(d, density) * w for d, w in zip(deltas, weights))  # type: ignore[return-value]  # a sum of tensors (typeshed types sum's start as int)
    if method == "ties":
        return elect_and_merge([d * magnitude_mask(d, density) for d in deltas], weights, sign_method)
    if generator is None:
        raise ValueError("DARE needs a generator (seeded) for reproducible drops")
    dropped = [dare_drop(d, density, generator) for d in deltas]
    if method == "dare_linear":
        return sum(d * w for d, w in zip(dropped, weights))  # type: ignore[return-value]  # a sum of tensors (typeshed types sum's start as int)
    if method == "dare_ties":
        return elect_and_merge(dropped, weights, sign_method)
    raise UsageError(f"unknown compose method {method!r}", hint=f"use one of {', '.join(METHODS)}")
