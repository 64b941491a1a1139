"""A byte budget for the adapters resident on one model: load on demand, evict the least recently used, pin some.

A process can then serve far more adapters than fit in memory at once: `cache.use(ref)` attaches the adapter if it
is not resident (evicting others first so the budget is never exceeded), marks it most recently used and makes it
the active one. Before loading, room is made for an upper bound computed from the safetensors header and the model's
dtype; once attached, the adapter is counted at the bytes it really holds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel

from ..card import AdapterRef
from ..errors import AdapterNotFound, CacheFull, InvalidAdapter, UsageError
from ..peft_format import read_layout
from ..sources import default_registry, needs_registry, resolve
from .attach import attach, detach, list_adapters, set_active
from .state import adapter_name, runtime_state

if TYPE_CHECKING:
    from ..store.registry import Registry


class CacheStats(BaseModel):
    hits: int = 0
    misses: int = 0  # loads from disk
    evictions: int = 0
    used_bytes: int = 0
    budget_bytes: int = 0
    resident: list[str] = []  # least recently used first
    pinned: list[str] = []


@dataclass
class _Entry:
    name: str  # the attached name: the registry ref with its version, or the folder path
    nbytes: int
    pinned: bool = False


class AdapterCache:
    """Keep at most `budget_bytes` of adapter tensors attached to `model`; least recently used goes first.

    Adapters the cache did not attach (attached directly before) are left alone and not counted.
    Not thread-safe: one cache per serving loop.
    """

    def __init__(self, model: torch.nn.Module, budget_bytes: int, registry: Registry | None = None) -> None:
        if budget_bytes <= 0:
            raise UsageError(f"budget_bytes must be positive, got {budget_bytes}", hint="e.g. 256 * 2**20 for 256 MiB")
        self.model = model
        self.budget_bytes = int(budget_bytes)
        self._registry = registry
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # LRU first
        self._dtype = _model_dtype(model)
        self.hits = self.misses = self.evictions = 0

    # --- the serving call ------------------------------------------------------------------------------------

    def use(self, adapter: str | Path, weight: float = 1.0) -> str:
        """Make `adapter` (registry ref or PEFT folder) resident and the only active one; return its attached name."""
        name = self.ensure(adapter)
        set_active(self.model, name, weight)
        return name

    def ensure(self, adapter: str | Path) -> str:
        """Make `adapter` resident (most recently used) without changing what is active; return its name."""
        name, folder = self._resolve(adapter)
        entry = self._entries.get(name)
        if entry is not None:
            self._entries.move_to_end(name)
            self.hits += 1
            return name
        bound = adapter_nbytes(folder, self._dtype)
        self._make_room(bound, name)  # room for the upper bound, so the budget holds whatever attach allocates
        attach(self.model, folder, name, activate=False)
        self._entries[name] = _Entry(name, resident_nbytes(self.model, name))
        self.misses += 1
        return name

    # --- pinning and explicit control ------------------------------------------------------------------------

    def pin(self, adapter: str | Path) -> str:
        """Load if needed and never evict it until `unpin`."""
        name = self.ensure(adapter)
        self._entries[name].pinned = True
        return name

    def unpin(self, adapter: str | Path) -> None:
        self._entry(adapter).pinned = False

    def evict(self, adapter: str | Path) -> None:
        """Detach it now (even if pinned)."""
        entry = self._entry(adapter)
        self._drop(entry.name)

    def clear(self) -> None:
        """Detach every adapter this cache attached."""
        for name in list(self._entries):
            self._drop(name)

    # --- introspection ---------------------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    @property
    def resident(self) -> list[str]:
        """Attached names, least recently used first."""
        return list(self._entries)

    def __contains__(self, adapter: object) -> bool:
        if not isinstance(adapter, (str, Path)):
            return False
        try:
            return self._resolve(adapter, load=False)[0] in self._entries
        except (AdapterNotFound, InvalidAdapter, UsageError):
            return False

    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self.hits, misses=self.misses, evictions=self.evictions, used_bytes=self.used_bytes,
            budget_bytes=self.budget_bytes, resident=self.resident, pinned=[n for n, e in self._entries.items() if e.pinned],
        )  # fmt: skip

    # --- internals -------------------------------------------------------------------------------------------

    def _make_room(self, nbytes: int, name: str) -> None:
        if nbytes > self.budget_bytes:
            raise CacheFull(f"adapter {name} needs {nbytes} bytes but the whole budget is {self.budget_bytes}")
        free = self.budget_bytes - self.used_bytes
        victims: list[str] = []
        for n, e in self._entries.items():  # LRU first
            if free >= nbytes:
                break
            if not e.pinned:
                victims.append(n)
                free += e.nbytes
        if free < nbytes:
            raise CacheFull(
                f"adapter {name} needs {nbytes} bytes; {self.budget_bytes - self.used_bytes} free and "
                f"{sum(e.nbytes for e in self._entries.values() if e.pinned)} pinned"
            )
        for n in victims:  # only evict once we know the new adapter will fit
            self._drop(n)
            self.evictions += 1

    def _drop(self, name: str) -> None:
        if name in list_adapters(self.model):
            detach(self.model, name)
        del self._entries[name]

    def _entry(self, adapter: str | Path) -> _Entry:
        name = self._resolve(adapter, load=False)[0]
        entry = self._entries.get(name)
        if entry is None:
            raise AdapterNotFound(name, hint="it is not resident in this cache")
        return entry

    def _resolve(self, adapter: str | Path, *, load: bool = True) -> tuple[str, Path]:
        """(attached name, folder). A ref pinned to a version is its own key, without a registry lookup on hits;
        `ns/name` and aliases are looked up each time, so a new version or a moved alias is picked up."""
        text = str(adapter)
        if text in self._entries and not Path(adapter).is_dir() and AdapterRef.parse(text).version is not None:
            return text, Path()  # a hit: the folder is not needed
        if self._registry is None and needs_registry([adapter]):
            self._registry = default_registry()
        source = resolve(adapter, self._registry)
        return source.label, source.folder if load else Path()


def adapter_nbytes(folder: Path, dtype: torch.dtype) -> int:
    """An upper bound, from the header alone, on the bytes an adapter holds once attached to a `dtype` model:
    its tensors as read from the file (the runtime keeps them, for an exact save) plus a copy cast to `dtype`."""
    layout = read_layout(folder)
    item = torch.empty((), dtype=dtype).element_size()
    return sum(t.nbytes + t.numel * item for t in layout.header.tensors.values())


def resident_nbytes(model: torch.nn.Module, name: str) -> int:
    """Bytes the attached adapter `name` really holds on `model`: its LoRA factors and overrides as the layers use
    them, and the source tensors the runtime keeps, each storage counted once (a cast to the same dtype shares it)."""
    st = runtime_state(model)
    name = adapter_name(st, name)
    assert st is not None  # adapter_name raises when nothing is attached
    rec = st.adapters[name]
    tensors: list[torch.Tensor] = []
    for m in rec.adapter.modules.values():
        tensors += [t for t in (m.lora_A, m.lora_B, m.magnitude, m.lora_B_bias) if t is not None]
    tensors += list(rec.adapter.overrides.values())
    for path in dict.fromkeys(rec.modules + rec.override_owners):
        # a wrapper's own tensors are all adapter tensors, named `lora_<part>__<key>` (the base's live in base_layer)
        own = {**st.wrappers[path]._parameters, **st.wrappers[path]._buffers}
        tensors += [t for n, t in own.items() if t is not None and n.partition("__")[2] == rec.key]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
