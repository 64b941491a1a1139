"""Compose several LoRA adapters into one new PEFT adapter, with lineage recorded in the registry.

The target of every method is the weighted sum of the adapters' true deltas, Σ_i w_i · s_i · B_i A_i, with each
adapter's own scaling s_i (rsLoRA, rank/alpha patterns) folded in; the result is written with lora_alpha = r
(scaling 1) and no rsLoRA, so PEFT reads back exactly the delta computed here.

- cat: exact (rank = Σ r_i).  svd: the best rank-R approximation of that sum (exact when R ≥ its rank).
- linear: PEFT's factor mixing (A' = Σ ±√|w s| A_i, B' = Σ √|w s| B_i); approximate, equal ranks only.
- ties, dare_linear, dare_ties, magnitude_prune: PEFT's task-vector rules applied to the full deltas, then
  factored to rank R by SVD (PEFT's `<method>_svd` combination types). DARE draws from a seeded generator.
Modules only some adapters target are combined from those that do. DoRA and lora_bias cannot be composed.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel

from ..card import AdapterCard, Lineage, ParentLink
from ..errors import UnsupportedFeature, UsageError
from ..peft_format import LoraConfig
from ..peft_weights import LoraModule, PeftAdapter, load_adapter, save_adapter
from ..sources import needs_registry, registry_or_default, resolve
from .compose_methods import (
    METHODS,
    NEEDS_DENSITY,
    Factors,
    Part,
    SignMethod,
    linear_factors,
    low_rank,
    low_rank_of_factors,
    task_vector_merge,
)
from .compose_methods import cat as cat_factors
from .merge import AdapterArg, normalize_adapter_args
from .stream import one_intra_op_thread

if TYPE_CHECKING:
    from ..store.registry import Registry


@dataclass
class ComposeOutput:
    """The composed adapter in memory, with the retained energy of each module (methods that truncate)."""

    adapter: PeftAdapter
    energy: dict[str, float]


class ComposeResult(BaseModel):
    method: str
    rank: int  # the config's r (the largest module rank)
    modules: int
    params: dict[str, Any]
    parents: list[ParentLink]
    energy: dict[str, float]  # per module: kept σ² / total σ² (1.0 = exact)
    out: str | None = None  # the folder written, when one was asked for
    card: AdapterCard | None = None


def compose_adapters(
    adapters: list[tuple[PeftAdapter, float]],
    method: str = "cat",
    *,
    rank: int | None = None,
    density: float | None = None,
    seed: int | None = None,
    majority_sign_method: SignMethod = "total",
) -> ComposeOutput:
    """The library core: combine loaded adapters with weights; no files, no registry."""
    _check_args(adapters, method, rank, density, majority_sign_method)
    fifo = {bool(a.config.fan_in_fan_out) for a, _ in adapters}
    if len(fifo) > 1:
        raise UsageError("cannot compose adapters with different fan_in_fan_out", hint="compose adapters of the same base model")
    if method in ("dare_linear", "dare_ties") and seed is None:
        raise UsageError(f"method {method} needs a seed", hint="pass --seed so the random drops can be reproduced")
    default_rank = rank or max(_max_rank(a) for a, _ in adapters)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    by_module: dict[str, list[tuple[LoraModule, float]]] = {}
    for a, w in adapters:
        for name, m in a.modules.items():
            if m.magnitude is not None:
                raise UnsupportedFeature("composing DoRA adapters", where=name, hint="merge DoRA adapters into the base instead")
            if m.lora_B_bias is not None:
                raise UnsupportedFeature("composing adapters with lora_bias", where=name)
            by_module.setdefault(name, []).append((m, w))

    modules: dict[str, LoraModule] = {}
    energy: dict[str, float] = {}
    for name in sorted(by_module):  # sorted: DARE's draws do not depend on dict order
        entries = by_module[name]
        _check_shapes(name, entries)
        parts = [Part(m.lora_A, m.lora_B, m.scaling, w) for m, w in entries]
        f = _combine(method, parts, default_rank, density, majority_sign_method, generator)
        kind = entries[0][0].kind
        modules[name] = LoraModule(name, kind, f.lora_A.contiguous(), f.lora_B.contiguous(), f.rank, float(f.rank), 1.0)
        if f.energy is not None and method != "cat":
            energy[name] = f.energy
    overrides = _overrides(adapters)
    config = _config(adapters, modules, overrides)
    return ComposeOutput(PeftAdapter(config, modules, overrides), energy)


def _combine(
    method: str, parts: list[Part], rank: int, density: float | None, sign: SignMethod, gen: torch.Generator | None
) -> Factors:
    if method == "cat":
        return cat_factors(parts)
    if method == "linear":
        return linear_factors(parts)
    if method == "svd":
        c = cat_factors(parts)
        return low_rank_of_factors(c.lora_B, c.lora_A, rank)
    assert density is not None
    return low_rank(_task_vector(method, parts, density, sign, gen), rank)


def _task_vector(method: str, parts: list[Part], density: float, sign: SignMethod, gen: torch.Generator | None) -> torch.Tensor:
    # PEFT's task vectors are the deltas with scaling folded in; the user's weight is applied by the method
    deltas = [(p.lora_B.float() @ p.lora_A.float()) * p.scaling for p in parts]
    return task_vector_merge(method, deltas, [p.weight for p in parts], density=density, sign_method=sign, generator=gen)


def compose(
    adapters: list[AdapterArg],
    method: str = "cat",
    *,
    name: str | None = None,
    out: str | Path | None = None,
    rank: int | None = None,
    density: float | None = None,
    seed: int | None = None,
    majority_sign_method: SignMethod = "total",
    task: str | None = None,
    base: str | Path | None = None,
    description: str = "",
    registry: Registry | None = None,
    register: bool = True,
    overwrite: bool = False,
) -> ComposeResult:
    """Compose adapters (folders or `ns/name[@v]`, each with a weight), write a PEFT adapter, register it as `name`."""
    args = normalize_adapter_args(adapters)
    if register and not name:
        raise UsageError("compose needs --name NS/NAME to register the result", hint="or pass out= with register=False")
    if not register and out is None:
        raise UsageError("compose with register=False needs out= (a folder to write)")
    if method in ("dare_linear", "dare_ties") and seed is None:
        seed = random.SystemRandom().randrange(2**31)  # recorded in the lineage, so the result can be redone
    reg = registry_or_default(registry) if register or needs_registry([a for a, _ in args]) else None
    loaded = []
    parents: list[ParentLink] = []
    cards: list[AdapterCard | None] = []
    for arg, w in args:
        source = resolve(arg, reg)
        loaded.append((load_adapter(source.folder), w))
        parents.append(ParentLink(ref=source.label, weight=w))
        cards.append(source.card)
    with one_intra_op_thread():
        result = compose_adapters(
            loaded, method, rank=rank, density=density, seed=seed, majority_sign_method=majority_sign_method
        )
    params: dict[str, Any] = {"rank": rank}
    if method in NEEDS_DENSITY:
        params["density"] = density
    if method in ("dare_linear", "dare_ties"):
        params["seed"] = seed
    if method in ("ties", "dare_ties"):
        params["majority_sign_method"] = majority_sign_method

    tmp_root = None
    folder = Path(out) if out is not None else None
    if folder is None:
        tmp_root = Path(tempfile.mkdtemp(prefix="adapterhub-compose-"))
        folder = tmp_root / "adapter"
    try:
        save_adapter(result.adapter, folder, overwrite=overwrite)
        card = None
        if register:
            assert reg is not None and name is not None
            lineage = Lineage(method=f"compose:{method}", parents=parents, base=_common_base(cards), params=params)
            card = reg.add(
                folder, name=name, task=task or _common_task(cards), base=base, description=description, lineage=lineage
            )
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    ranks = [m.rank for m in result.adapter.modules.values()]
    return ComposeResult(method=method, rank=max(ranks), modules=len(ranks), params=params, parents=parents,
                         energy=result.energy, out=str(out) if out is not None else None, card=card)  # fmt: skip


# --- helpers --------------------------------------------------------------------------------------------------


def _check_args(
    adapters: list[tuple[PeftAdapter, float]], method: str, rank: int | None, density: float | None, sign: str
) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown compose method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if not adapters:
        raise UsageError("no adapters to compose")
    if rank is not None and rank < 1:
        raise UsageError(f"rank must be at least 1, got {rank}")
    if method in NEEDS_DENSITY:
        if density is None or not 0 < density <= 1:
            raise UsageError(f"method {method} needs --density in (0, 1], got {density}")
    if sign not in ("total", "frequency"):
        raise UsageError(f"majority sign method must be total or frequency, got {sign!r}")


def _max_rank(a: PeftAdapter) -> int:
    return max([a.config.r, *(m.rank for m in a.modules.values())])


def _check_shapes(name: str, entries: list[tuple[LoraModule, float]]) -> None:
    first = entries[0][0]
    for m, _ in entries[1:]:
        if m.kind is not first.kind or m.lora_A.shape[1] != first.lora_A.shape[1] or m.lora_B.shape[0] != first.lora_B.shape[0]:
            raise UsageError(
                f"module {name}: adapters disagree on its shape ({list(first.lora_B.shape)}x{list(first.lora_A.shape)} vs "
                f"{list(m.lora_B.shape)}x{list(m.lora_A.shape)})", hint="compose adapters trained on the same base model"
            )  # fmt: skip


def _overrides(adapters: list[tuple[PeftAdapter, float]]) -> dict[str, torch.Tensor]:
    """modules_to_save/bias tensors are carried over unchanged; two adapters replacing one tensor is refused."""
    out: dict[str, torch.Tensor] = {}
    for a, _ in adapters:
        for param, t in a.overrides.items():
            if param in out:
                raise UsageError(
                    f"two adapters replace {param} (modules_to_save)", hint="compose adapters without overlapping modules_to_save"
                )
            out[param] = t
    return out


def _config(
    adapters: list[tuple[PeftAdapter, float]], modules: dict[str, LoraModule], overrides: dict[str, torch.Tensor]
) -> LoraConfig:
    """The first parent's config with exact targets (full module paths), per-module ranks, and scaling 1."""
    r = max(m.rank for m in modules.values())
    pattern = {_exact(name): m.rank for name, m in sorted(modules.items()) if m.rank != r}
    data = adapters[0][0].config.to_json_dict()
    to_save = sorted({s for a, _ in adapters for s in (a.config.modules_to_save or [])}) if overrides else None
    data.update(
        r=r, lora_alpha=r, rank_pattern=pattern, alpha_pattern={k: float(v) for k, v in pattern.items()}, use_rslora=False,
        use_dora=False, lora_bias=False, target_modules=sorted(modules), exclude_modules=None, layers_to_transform=None,
        layers_pattern=None, modules_to_save=to_save, init_lora_weights=True,
    )  # fmt: skip
    return LoraConfig.model_validate(data)


def _exact(module: str) -> str:
    # PEFT matches pattern keys as regex suffixes of the module path; escape so the key names only this module
    return module.replace(".", r"\.")


def _common_base(cards: list[AdapterCard | None]) -> str | None:
    hashes = {c.base_model.content_hash for c in cards if c is not None and c.base_model is not None}
    return hashes.pop() if len(hashes) == 1 and all(c is not None and c.base_model for c in cards) else None


def _common_task(cards: list[AdapterCard | None]) -> str:
    tasks = {c.task for c in cards if c is not None}
    return tasks.pop() if len(tasks) == 1 and all(c is not None for c in cards) else "composed"
