"""What one model's attached adapters share: `RuntimeState` (on the model), `AdapterRecord` per adapter, and the
mixed-batch `RoutePlan`. Plain data below attach, layers and routing, so none of them imports another for it.

`attach.py` owns every write; the wrappers in `layers.py` read it at forward time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import AdapterNotFound, UsageError
from ..peft_weights import PeftAdapter

if TYPE_CHECKING:
    from .layers import AdapterLayer

STATE_ATTR = "_adapterhub_state"
BASE = "__base__"  # PEFT's name for "no adapter" in `adapter_names`; None means the same here

Rows = slice | torch.Tensor


@dataclass
class AdapterRecord:
    """One attached adapter: where it lives in the model, and its source tensors (kept for an exact save)."""

    name: str
    key: str  # the name made safe for parameter names (state_dict keys while attached)
    adapter: PeftAdapter
    weight: float = 1.0  # used when set_active names it without weights
    modules: list[str] = field(default_factory=list)  # paths of the LoRA wrappers it has a slot in
    override_owners: list[str] = field(default_factory=list)  # paths of modules whose parameters it replaces
    override_params: frozenset[str] = frozenset()
    trainable: bool = False
    aliases: frozenset[str] = frozenset()
    # Set when the source tensors were dropped after attach (a frozen adapter cast to the base's dtype keeps only the
    # cast copy; an exact save re-reads the folder, which must still have these files' sizes and times).
    source_stamp: tuple[tuple[str, int, int], ...] | None = (
        None  # other names it answers to: the reference as typed, the resolved version, `@alias`
    )


class RoutePlan:
    """Which rows go to which adapter; index tensors are made once per device."""

    def __init__(self, names_per_row: Sequence[str | None]) -> None:
        self.names = tuple(names_per_row)
        self.batch = len(names_per_row)
        self._repeated: dict[int, RoutePlan] = {}
        rows: dict[str, list[int]] = {}
        for i, n in enumerate(names_per_row):
            if n is not None and n != BASE:
                rows.setdefault(n, []).append(i)
        self.rows = rows
        self._by_device: dict[torch.device, list[tuple[str, Rows]]] = {}

    def for_batch(self, batch: int) -> RoutePlan | None:
        """The plan for a batch of `batch` rows: itself, or each row repeated k times in place when `batch` is k
        times its rows (what `generate` does for beams and num_return_sequences: input_ids.repeat_interleave(k));
        None when `batch` is not a multiple."""
        if batch == self.batch:
            return self
        if self.batch == 0 or batch % self.batch:
            return None
        k = batch // self.batch
        got = self._repeated.get(k)
        if got is None:
            got = self._repeated[k] = RoutePlan([n for n in self.names for _ in range(k)])
        return got

    def groups(self, device: torch.device) -> list[tuple[str, Rows]]:
        got = self._by_device.get(device)
        if got is None:
            got = []
            for name, idx in self.rows.items():
                if idx == list(range(idx[0], idx[-1] + 1)):
                    got.append((name, slice(idx[0], idx[-1] + 1)))
                else:
                    got.append((name, torch.tensor(idx, dtype=torch.long, device=device)))
            self._by_device[device] = got
        return got


@dataclass
class RuntimeState:
    """What every wrapper of one model reads at forward time; `attach.py` owns all writes."""

    adapters: dict[str, AdapterRecord] = field(default_factory=dict)  # in attach order
    active: tuple[tuple[str, float], ...] = ()  # the user's selection: (name, weight) pairs
    lora_active: tuple[tuple[str, float], ...] = ()  # the LoRA terms wrappers add: `active`, or () while fused
    route: RoutePlan | None = None  # a mixed-adapter batch in progress
    wrappers: dict[str, AdapterLayer] = field(default_factory=dict)  # module path -> wrapper
    fused: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (base parameter, copy of its original values)
    requires_grad: dict[str, bool] = field(default_factory=dict)  # base parameters' flags before the first attach


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT `PeftModel` (adapters attach there, beside PEFT's), else `model`."""
    get = getattr(model, "get_base_model", None)
    if callable(get) and type(model).__module__.startswith("peft."):
        inner = get()
        assert isinstance(inner, nn.Module)
        return inner
    return model


def is_peft_layer(module: nn.Module) -> bool:
    """A PEFT tuner layer (its LoRA Linear, ...): adapterhub wraps the layer's own `base_layer` instead."""
    return type(module).__module__.startswith("peft.") and isinstance(getattr(module, "base_layer", None), nn.Module)


def runtime_state(model: nn.Module) -> RuntimeState | None:
    """The shared state of `model`'s adapters, or None when nothing is attached."""
    state = unwrap_peft(model).__dict__.get(STATE_ATTR)
    return state if isinstance(state, RuntimeState) else None


def adapter_name(st: RuntimeState | None, name: str) -> str:
    """The attached name `name` stands for: itself, or the one adapter that has it as an alias (the reference the
    user typed, `team/x@prod`, or the resolved `team/x@1`). Unknown: AdapterNotFound; two matches: UsageError."""
    if st is not None and name in st.adapters:
        return name
    hits = [n for n, r in st.adapters.items() if name in r.aliases] if st is not None else []
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UsageError(f"{name!r} names {len(hits)} attached adapters: {', '.join(hits)}", hint="use one of those names")
    raise AdapterNotFound(
        name, hint=f"attached: {', '.join(st.adapters) or 'none'}" if st else "no adapter is attached to this model"
    )
