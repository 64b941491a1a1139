"""PEFT adapters as tensors (torch): `LoraModule`, `PeftAdapter`, and reading/writing an adapter folder.

`peft_format` knows the file names, config and key names from headers alone (no torch); this module turns a checked
layout into tensors and back, with the exact key names PEFT saves and loads.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidAdapter
from .peft_format import CONFIG_NAME, KEY_PREFIX, WEIGHTS_NAME, AdapterLayout, LayerKind, LoraConfig, parse_key, read_layout

if TYPE_CHECKING:
    import torch


@dataclass
class LoraModule:
    """One module's LoRA factors. Linear: A [r, in], B [out, r]. Embedding: A [r, num_embeddings], B [dim, r]."""

    module: str
    kind: LayerKind
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    rank: int
    alpha: float
    scaling: float
    magnitude: torch.Tensor | None = None  # DoRA: per output feature
    lora_B_bias: torch.Tensor | None = None  # lora_bias=True

    def delta(self, fan_in_fan_out: bool = False) -> torch.Tensor:
        """scaling * B @ A laid out like the base weight (transposed for Conv1D/fan_in_fan_out and Embedding)."""
        d = (self.lora_B.float() @ self.lora_A.float()) * self.scaling
        return d.T if (fan_in_fan_out or self.kind is LayerKind.EMBEDDING) else d


@dataclass
class PeftAdapter:
    """An adapter in memory: config, LoRA modules, and full parameters that replace the base's."""

    config: LoraConfig
    modules: dict[str, LoraModule]
    overrides: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None


def _nonfinite_keys(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Keys of tensors holding NaN/Inf. One fused norm over all tensors answers the common all-finite case in a
    single call (an adapter has hundreds of small tensors); only a non-finite norm triggers the per-tensor check."""
    import torch

    floats = {k: t for k, t in tensors.items() if t.is_floating_point() and t.numel()}
    if not floats:
        return []
    norms = torch._foreach_norm([t.float() if t.dtype not in (torch.float32, torch.float64) else t for t in floats.values()])
    if bool(torch.isfinite(torch.stack(norms)).all()):
        return []
    # a huge but finite tensor can overflow its norm: decide exactly, tensor by tensor
    return [k for k, t in floats.items() if not bool(torch.isfinite(t).all())]


def load_adapter(
    folder: Path | str, *, device: str | None = None, dtype: torch.dtype | None = None, layout: AdapterLayout | None = None
) -> PeftAdapter:
    """Read and check an adapter folder into tensors; raises InvalidAdapter (also for NaN/Inf), PickleRefused or
    UnsupportedFeature. Tensors are read with safetensors only: nothing is ever unpickled. `layout`: the folder's
    strict `read_layout`, when a check already parsed it (not parsed twice)."""
    from safetensors import safe_open

    if layout is None or layout.problems or layout.unsupported:
        layout = read_layout(folder)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(layout.weights_path), framework="pt", device=device or "cpu") as fh:
            for norm, key in layout.key_map.items():
                tensors[norm] = fh.get_tensor(key)
    except Exception as exc:  # safetensors raises its own SafetensorError for bytes the header check missed
        raise InvalidAdapter(str(folder), [f"cannot read tensors: {str(exc).splitlines()[0] if str(exc) else exc}"]) from exc
    bad = [layout.key_map[k] for k in _nonfinite_keys(tensors)]
    if bad:
        raise InvalidAdapter(
            str(folder),
            [f"tensor {k!r} holds NaN or Inf" for k in sorted(bad)],
            hint="the adapter diverged in training; use an earlier checkpoint",
        )
    modules: dict[str, LoraModule] = {}
    overrides: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for norm, t in tensors.items():
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        pk = parse_key(norm)
        if pk.part == "override":
            overrides[pk.param] = t
        else:
            parts.setdefault(pk.module, {})[pk.part] = t
    for name, p in parts.items():
        lay = layout.modules[name]
        modules[name] = LoraModule(
            name, lay.kind, p["A"], p["B"], lay.rank, lay.alpha, lay.scaling, p.get("magnitude"), p.get("B_bias")
        )
    return PeftAdapter(layout.config, modules, overrides, Path(folder))


def adapter_state_dict(adapter: PeftAdapter) -> dict[str, torch.Tensor]:
    """The tensors under the exact key names PEFT saves (and loads)."""
    out: dict[str, torch.Tensor] = {}
    for name, m in adapter.modules.items():
        if m.kind is LayerKind.EMBEDDING:
            out[f"{KEY_PREFIX}{name}.lora_embedding_A"] = m.lora_A
            out[f"{KEY_PREFIX}{name}.lora_embedding_B"] = m.lora_B
        else:
            out[f"{KEY_PREFIX}{name}.lora_A.weight"] = m.lora_A
            out[f"{KEY_PREFIX}{name}.lora_B.weight"] = m.lora_B
            if m.lora_B_bias is not None:
                out[f"{KEY_PREFIX}{name}.lora_B.bias"] = m.lora_B_bias
        if m.magnitude is not None:
            out[f"{KEY_PREFIX}{name}.lora_magnitude_vector"] = m.magnitude
    for param, t in adapter.overrides.items():
        module, _, leaf = param.rpartition(".")
        # PEFT saves a LoRA-wrapped module's own parameters (trained biases, embeddings) under its `base_layer`.
        out[KEY_PREFIX + (f"{module}.base_layer.{leaf}" if module in adapter.modules else param)] = t
    return out


def export_config(adapter: PeftAdapter) -> LoraConfig:
    """The adapter's config with rank_pattern/alpha_pattern entries added for modules whose factor shapes or
    scaling differ from what the config alone gives (merged or edited adapters), so PEFT rebuilds the same maths."""
    cfg = adapter.config
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for name, m in sorted(adapter.modules.items()):
        rank = int(m.lora_A.shape[0])
        alpha = m.scaling * (math.sqrt(rank) if cfg.use_rslora else rank)
        exact = re.escape(name)
        if rank != cfg.rank_for(name):
            ranks[exact] = rank
        if not math.isclose(alpha, cfg.alpha_for(name), rel_tol=1e-9, abs_tol=1e-12) or exact in ranks:
            alphas[exact] = int(alpha) if float(alpha).is_integer() else alpha
    if not ranks and not alphas:
        return cfg
    # exact entries first: PEFT takes the first pattern that matches
    update = {"rank_pattern": {**ranks, **cfg.rank_pattern}, "alpha_pattern": {**alphas, **cfg.alpha_pattern}}
    return cfg.model_copy(update=update)


def save_adapter(adapter: PeftAdapter, folder: Path | str, *, overwrite: bool = False) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` atomically, loadable by PeftModel.from_pretrained.

    The written folder is read back (strict) before it is moved into place, so an export never leaves an adapter
    that adapterhub itself would refuse."""
    from safetensors.torch import save_file

    from .fsutil import atomic_directory

    folder = Path(folder)
    config = export_config(adapter)
    checkable = config.target_modules not in (None, "all-linear")
    untargeted = [n for n in adapter.modules if checkable and not config.targets(n)]
    if untargeted:
        raise InvalidAdapter(
            str(folder),
            [f"module {n} is not matched by target_modules {config.target_modules}" for n in sorted(untargeted)],
            hint="add the module names to config.target_modules (PEFT would silently ignore these tensors)",
        )
    state = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(adapter).items()}
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        # key order is kept: PEFT resolves rank_pattern/alpha_pattern by the first matching key
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_json_dict(), indent=2) + "\n", encoding="utf-8")
        try:
            read_layout(tmp)
        except InvalidAdapter as exc:
            raise InvalidAdapter(str(folder), exc.problems, hint="nothing was written; fix the adapter in memory") from None
    return folder
