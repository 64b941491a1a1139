"""Fresh trainable LoRA adapters on a live model, saved in PEFT's format so PEFT (and adapterhub) can load them."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidAdapter, UnsupportedFeature, UsageError
from ..peft_format import LayerKind, LoraConfig, lora_scaling
from ..peft_weights import LoraModule, PeftAdapter, load_adapter
from ..peft_weights import save_adapter as _save_peft
from .attach import attach_loaded, folder_stamp
from .layers import AdapterLayer, LoraEmbedding, module_weight, wrapper_class
from .state import AdapterRecord, adapter_name, runtime_state


def add_trainable(
    model: nn.Module,
    name: str,
    r: int = 8,
    lora_alpha: float = 16,
    target_modules: Sequence[str] | str = "all-linear",
    use_rslora: bool = False,
    *,
    lora_dropout: float = 0.0,
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
    modules_to_save: Sequence[str] | None = None,
    activate: bool = True,
) -> str:
    """Add a new LoRA initialised as PEFT does (A kaiming-uniform, B zeros); only its parameters require grad.

    `target_modules`: "all-linear" (every Linear/Conv1D but the output layer, as PEFT), a list of module-name
    suffixes, or a regex string matched against the full path. `modules_to_save`: modules trained in full (copies).
    """
    if r <= 0:
        raise UsageError(f"rank r={r} must be positive", hint="pass r=8 or another positive integer")
    if not 0.0 <= lora_dropout < 1.0:
        raise UsageError(f"lora_dropout={lora_dropout} is not in [0, 1)", hint="pass e.g. 0.05")
    tm: list[str] | str = target_modules if isinstance(target_modules, str) else list(target_modules)
    cfg = LoraConfig(
        r=r, lora_alpha=lora_alpha, target_modules=tm, use_rslora=use_rslora, lora_dropout=lora_dropout,
        rank_pattern=dict(rank_pattern or {}), alpha_pattern=dict(alpha_pattern or {}),
        modules_to_save=list(modules_to_save) if modules_to_save else None, inference_mode=False,
    )  # fmt: skip
    get_output = getattr(model, "get_output_embeddings", None)  # transformers models have it; a bare nn.Module not
    output_layer = get_output() if callable(get_output) else None
    modules: dict[str, LoraModule] = {}
    overrides: dict[str, torch.Tensor] = {}
    for path, mod in _logical_modules(model):
        cls = wrapper_class(mod)
        is_linear = cls is not None and cls is not LoraEmbedding
        if cfg.targets(path, is_linear=is_linear, is_output_layer=mod is output_layer):
            if cls is None:
                raise UnsupportedFeature(
                    f"LoRA on a {type(mod).__name__} layer", where=path, hint="target Linear, Conv1D or Embedding modules"
                )
            modules[path] = _fresh_module(path, mod, cfg)
        if modules_to_save and any(path == t or path.endswith("." + t) for t in modules_to_save):
            for pname, p in mod.named_parameters():
                overrides[f"{path}.{pname}"] = p.detach().clone()
    if not modules:
        raise UsageError(
            f"target_modules={target_modules!r} matches no module of the model", hint="list names such as ['q_proj', 'v_proj']"
        )
    # Save explicit names, so the adapter means the same modules wherever it is loaded.
    cfg.target_modules = _target_names(model, list(modules))
    # PEFT's flag for transformers' Conv1D (weights stored [in, out]); PEFT would set it itself, with a warning.
    cfg.fan_in_fan_out = any(
        getattr(wrapper_class(m), "fan_in_fan_out", False) for p, m in _logical_modules(model) if p in modules
    )
    peft = PeftAdapter(cfg, modules, overrides)
    attach_loaded(model, peft, name, activate=activate, trainable=True, dropout=lora_dropout)
    return name


def _source(rec: AdapterRecord) -> PeftAdapter:
    """A frozen adapter's source tensors: kept in memory, or re-read from its unchanged folder (see `_keep_one_copy`)."""
    if rec.source_stamp is None:
        return rec.adapter
    path = rec.adapter.path
    assert path is not None  # sources are dropped only for adapters read from a folder
    if folder_stamp(path) != rec.source_stamp:
        raise InvalidAdapter(str(path), ["the folder changed since the adapter was attached"],
                             hint="attach it again (or export the registry version) to save it exactly")  # fmt: skip
    return load_adapter(path)


def save_attached(model: nn.Module, name: str, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write adapter `name` (trainable or attached) as a PEFT folder that `PeftModel.from_pretrained` loads.

    An attached (frozen) adapter is written from its source tensors, unchanged; a trainable one from its current
    parameters.
    """
    st = runtime_state(model)
    name = adapter_name(st, name)
    assert st is not None  # adapter_name raises when nothing is attached
    rec = st.adapters[name]
    if not rec.trainable:
        return _save_peft(_source(rec), folder, overwrite=overwrite)
    modules: dict[str, LoraModule] = {}
    for path in rec.modules:
        m = st.wrappers[path].slot_module(name)
        src = rec.adapter.modules[path]
        modules[path] = LoraModule(
            path, src.kind, m.lora_A.detach().clone(), m.lora_B.detach().clone(), src.rank, src.alpha, src.scaling,
            None if m.magnitude is None else m.magnitude.detach().clone(),
            None if m.lora_B_bias is None else m.lora_B_bias.detach().clone(),
        )  # fmt: skip
    overrides: dict[str, torch.Tensor] = {}
    for path in rec.override_owners:
        for leaf, t in st.wrappers[path]._overrides[name].items():
            overrides[f"{path}.{leaf}"] = t.detach().clone()
    cfg = rec.adapter.config.model_copy(update={"inference_mode": True})
    return _save_peft(PeftAdapter(cfg, modules, overrides), folder, overwrite=overwrite)


def _fresh_module(path: str, mod: nn.Module, cfg: LoraConfig) -> LoraModule:
    """PEFT's default init: Linear A kaiming-uniform(a=sqrt(5)), B zeros; Embedding A zeros, B normal."""
    rank, alpha = cfg.rank_for(path), cfg.alpha_for(path)
    scaling = lora_scaling(alpha, rank, cfg.use_rslora)
    w = module_weight(mod)
    dt = w.dtype if w.is_floating_point() else torch.float32
    if isinstance(mod, nn.Embedding):
        a = torch.zeros(rank, w.shape[0], dtype=dt, device=w.device)
        b = torch.empty(w.shape[1], rank, dtype=dt, device=w.device)
        nn.init.normal_(b)
        return LoraModule(path, LayerKind.EMBEDDING, a, b, rank, alpha, scaling)
    in_f, out_f = (w.shape[0], w.shape[1]) if getattr(wrapper_class(mod), "fan_in_fan_out", False) else (w.shape[1], w.shape[0])
    a = torch.empty(rank, in_f, dtype=dt, device=w.device)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    b = torch.zeros(out_f, rank, dtype=dt, device=w.device)
    return LoraModule(path, LayerKind.LINEAR, a, b, rank, alpha, scaling)


def _target_names(model: nn.Module, paths: list[str]) -> list[str]:
    """The last-segment names if they select exactly `paths` (PEFT's usual spelling), else the full paths."""
    leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
    chosen = {p for p, _m in _logical_modules(model) if p.rsplit(".", 1)[-1] in leaves}
    return leaves if chosen == set(paths) else sorted(paths)


def _logical_modules(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """named_modules() of the original tree: an adapter wrapper stands for the module it wraps."""
    for name, child in model._modules.items():
        if child is None:
            continue
        path = f"{prefix}{name}"
        if isinstance(child, AdapterLayer):
            child = child.base_layer
        yield path, child
        yield from _logical_modules(child, path + ".")
