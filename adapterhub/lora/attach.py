"""Attach PEFT LoRA adapters to a live model at load time, keep several resident, switch or combine them cheaply.

The base model's parameters are never modified or copied: each targeted module is replaced by a thin wrapper
(`adapterhub.lora.layers`) that holds the original module and adds the LoRA term; `detach` puts the originals back.
All wrappers of a model share one `RuntimeState`, so changing the active adapter is one assignment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import AdapterNotFound, AlreadyExists, IncompatibleAdapter, UnsupportedFeature, UsageError
from ..peft_format import LayerKind
from ..peft_weights import LoraModule, PeftAdapter, load_adapter
from ..sources import AdapterSpec, resolve
from .delta import delta_weight
from .layers import AdapterLayer, LoraEmbedding, LoraLinear, OverrideLayer, module_weight, wrapper_class
from .state import STATE_ATTR, AdapterRecord, RuntimeState, adapter_name, is_peft_layer, runtime_state, unwrap_peft

AdapterSource = AdapterSpec | PeftAdapter


@dataclass
class _Planned:
    path: str
    parent: nn.Module
    attr: str
    current: nn.Module  # the module now at `path` (a wrapper if another adapter already put one there)
    cls: type[AdapterLayer]


# --- public API ------------------------------------------------------------------------------------------------


def attach(
    model: nn.Module, adapter: AdapterSource, name: str | None = None, weight: float = 1.0, *, activate: bool = True
) -> str:
    """Attach `adapter` (PEFT folder, `PeftAdapter`, or registry ref `ns/name[@version]`) to `model`; return its name.

    Everything is checked before the model changes (missing module, shape, unsupported layer -> error, model intact).
    With `activate` the adapter becomes the only active one, at `weight`.
    """
    _check_weight(weight)
    peft, default_name, aliases = _load(adapter, _model_device(model))
    name = name or default_name
    st = runtime_state(model)
    if st is not None:
        if name in st.adapters:
            raise AlreadyExists(f"adapter {name!r} on this model", hint="detach it first or pass another name=")
        _refuse_while_fused(st, "attach")
    attach_loaded(model, peft, name, weight=weight, activate=activate, aliases=aliases)
    return name


def detach(model: nn.Module, name: str | None = None) -> None:
    """Remove one adapter (or all with None); with none left the original module tree is restored exactly.

    A fused model is unfused first, so the base weights are restored bit-exactly before anything is removed.
    """
    model = unwrap_peft(model)
    st = runtime_state(model)
    if st is None:
        if name is None:
            return
        raise AdapterNotFound(name, hint="no adapter is attached to this model")
    if name is not None:
        name = adapter_name(st, name)
    if st.fused is not None:
        unfuse(model)
    for n in [name] if name is not None else list(st.adapters):
        rec = st.adapters.pop(n)
        for path in dict.fromkeys(rec.modules + rec.override_owners):
            wrapper = st.wrappers[path]
            wrapper.remove(n)
            if wrapper.empty:
                found = _resolve(model, path)
                assert found is not None  # a wrapper's path exists while it is attached
                parent, attr, _cur = found
                setattr(parent, attr, wrapper.base_layer)
                del st.wrappers[path]
    st.active = tuple(p for p in st.active if p[0] in st.adapters)
    st.lora_active = st.active
    if not st.adapters:
        for pname, p in model.named_parameters():
            if pname in st.requires_grad:
                p.requires_grad_(st.requires_grad[pname])
        del model.__dict__[STATE_ATTR]


def set_active(model: nn.Module, names: str | Sequence[str] | None, weights: float | Sequence[float] | None = None) -> None:
    """Activate one adapter, several (output = base + sum w_i * delta_i), or none (the bare base). O(#names)."""
    st = runtime_state(model)
    wanted = _as_names(names)
    if st is None:
        if wanted:
            raise AdapterNotFound(wanted[0], hint="no adapter is attached to this model")
        return
    _refuse_while_fused(st, "change the active adapters")
    pairs = _pairs(st, wanted, weights)
    st.active = pairs
    st.lora_active = pairs


@contextmanager
def activation(
    model: nn.Module, names: str | Sequence[str] | None, weights: float | Sequence[float] | None = None
) -> Iterator[None]:
    """Temporarily activate `names` (as `set_active`); the previous activation is restored on exit."""
    st = runtime_state(model)
    previous = st.active if st is not None else ()
    set_active(model, names, weights)
    try:
        yield
    finally:
        st = runtime_state(model)
        if st is not None and st.fused is None:
            restored = tuple(p for p in previous if p[0] in st.adapters)
            st.active = restored
            st.lora_active = restored


def list_adapters(model: nn.Module) -> list[str]:
    """Names of the adapters attached to `model`, in attach order (empty if none)."""
    st = runtime_state(model)
    return list(st.adapters) if st is not None else []


def active_adapters(model: nn.Module) -> dict[str, float]:
    """The active adapters and their weights (empty: the bare base runs)."""
    st = runtime_state(model)
    return dict(st.active) if st is not None else {}


def fuse(model: nn.Module) -> None:
    """Fold the active adapter(s) into the base weights in place for plain-speed inference; `unfuse` restores them.

    The fused values are computed with `delta.delta_weight` and the forward's own DoRA norm, so fused and unfused
    outputs agree for several active adapters too (a DoRA adapter after another one rescales the sum, as PEFT does;
    `delta.merged_weight` is that same formula for a single adapter).
    Choice: the original values of every weight (and bias) changed are kept as a full copy, so `unfuse` restores the
    base bit-exactly into the same storage (subtracting the delta again would not be exact). Memory cost: one copy
    of the targeted weights while fused. Overrides (`modules_to_save`) keep working unchanged.
    """
    st = runtime_state(model)
    if st is None or not st.active:
        raise UsageError("no active adapter to fuse", hint="attach an adapter (or set_active) first")
    _refuse_while_fused(st, "fuse again")
    if st.route is not None:
        raise UsageError("cannot fuse inside a route() block", hint="leave the mixed-batch block first")
    work: list[tuple[LoraLinear | LoraEmbedding, list[tuple[str, float]]]] = []
    for path, w in st.wrappers.items():
        act = [(n, wt) for n, wt in st.active if n in w._slots]
        if not act:
            continue
        assert isinstance(w, (LoraLinear, LoraEmbedding))
        for n, _wt in act:
            if w._slots[n].bias is not None and getattr(w._base, "bias", None) is None:
                raise UnsupportedFeature("fusing lora_bias into a layer without a bias", where=path, hint="run unfused")
        work.append((w, act))
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for w, act in work:
            # Fold into the tensors the forward reads: an active override (modules_to_save) or the base's own.
            ov = w._active_override(st) or {}
            weight: torch.Tensor = ov.get("weight", w._base.weight)
            bias: torch.Tensor | None = ov.get("bias", getattr(w._base, "bias", None))
            new_w, new_b = _fused_values(w, act, weight, bias)
            saved.append((weight, weight.detach().clone()))
            if new_b is not None:
                assert bias is not None  # _fused_values adds to a bias only when there is one
                saved.append((bias, bias.detach().clone()))
                bias.copy_(new_b.to(bias.dtype))
            weight.copy_(new_w.to(weight.dtype))
    st.fused = saved
    st.lora_active = ()


def unfuse(model: nn.Module) -> None:
    """Restore the base weights changed by `fuse`, bit-exactly and in the same storage."""
    st = runtime_state(model)
    if st is None or st.fused is None:
        return
    with torch.no_grad():
        for param, original in st.fused:
            param.copy_(original)
    st.fused = None
    st.lora_active = st.active


def is_fused(model: nn.Module) -> bool:
    st = runtime_state(model)
    return st is not None and st.fused is not None


# --- attach internals -----------------------------------------------------------------------------------------


def attach_loaded(
    model: nn.Module,
    peft: PeftAdapter,
    name: str,
    *,
    weight: float = 1.0,
    activate: bool = True,
    trainable: bool = False,
    dropout: float = 0.0,
    aliases: frozenset[str] = frozenset(),
) -> AdapterRecord:
    """Check `peft` against `model` completely, then wire it in (the part that cannot fail). On a PEFT `PeftModel`
    it attaches to the model inside, wrapping PEFT's own base layers, so both sets of adapters act."""
    model = unwrap_peft(model)
    st = runtime_state(model)
    if st is not None and name in st.adapters:
        raise AlreadyExists(f"adapter {name!r} on this model", hint="detach it first or pass another name=")
    lora_plan, override_plan = _plan(model, peft, name, skip_identical=not trainable)
    if st is None:
        st = RuntimeState()
        st.requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        model.__dict__[STATE_ATTR] = st
    _refuse_while_fused(st, "attach")
    rec = AdapterRecord(name, _safe_key(name, st), peft, weight=weight, trainable=trainable, aliases=aliases - {name})
    for item, m in lora_plan:
        w = _ensure_wrapper(st, item)
        w.add_slot(name, rec.key, m, trainable=trainable, dropout=dropout)
        rec.modules.append(item.path)
    for item, leaf, value in override_plan:
        w = _ensure_wrapper(st, item)
        w.add_override(name, rec.key, leaf, value, trainable=trainable)
        if item.path not in rec.override_owners:
            rec.override_owners.append(item.path)
    rec.override_params = frozenset(peft.overrides)
    if not trainable:
        _keep_one_copy(rec, st)
    st.adapters[name] = rec
    if activate:
        set_active(model, name, weight)
    return rec


def _plan(
    model: nn.Module, peft: PeftAdapter, name: str, *, skip_identical: bool = True
) -> tuple[list[tuple[_Planned, LoraModule]], list[tuple[_Planned, str, torch.Tensor]]]:
    """Resolve and check every module and override; raise before anything changes. Pure: the model is only read."""
    problems: list[str] = []
    lora: list[tuple[_Planned, LoraModule]] = []
    for path, m in peft.modules.items():
        found = _resolve(model, path)
        if found is None:
            problems.append(f"module {path} is not in the model")
            continue
        parent, attr, cur = found
        base = cur.base_layer if isinstance(cur, AdapterLayer) else cur
        if m.lora_A.dim() != 2 or m.lora_B.dim() != 2:
            raise UnsupportedFeature(f"LoRA with {m.lora_A.dim()}-d factors (e.g. Conv2d)", where=path)
        cls = wrapper_class(base)
        if cls is None:
            raise UnsupportedFeature(f"LoRA on a {type(base).__name__} layer", where=path)
        problems.extend(_shape_problems(path, m, base, cls))
        if m.magnitude is not None and cls is LoraEmbedding:
            raise UnsupportedFeature("DoRA on an Embedding layer", where=path, hint="use plain LoRA on embeddings")
        lora.append((_Planned(path, parent, attr, cur, cls), m))
    overrides: list[tuple[_Planned, str, torch.Tensor]] = []
    for param_path, value in peft.overrides.items():
        owner_path, _, leaf = param_path.rpartition(".")
        if not owner_path:
            raise UnsupportedFeature(f"replacing the root parameter {param_path!r}", where=name)
        found = _resolve(model, owner_path)
        if found is None:
            problems.append(f"parameter {param_path} is not in the model")
            continue
        parent, attr, cur = found
        base = cur.base_layer if isinstance(cur, AdapterLayer) else cur
        target = base._parameters.get(leaf)
        if target is None:
            problems.append(f"parameter {param_path} is not in the model")
        elif tuple(target.shape) != tuple(value.shape):
            problems.append(f"parameter {param_path}: adapter has {list(value.shape)}, model has {list(target.shape)}")
        elif skip_identical and _same_values(target, value):
            # PEFT saves unchanged base weights too (e.g. a LoRA-targeted embedding's full matrix with
            # save_embedding_layers): replacing a parameter by its own values is skipped, saving a full copy.
            continue
        else:
            overrides.append((_Planned(owner_path, parent, attr, cur, wrapper_class(base) or OverrideLayer), leaf, value))
    if problems:
        raise IncompatibleAdapter(name, _model_name(model), problems)
    return lora, overrides


def _keep_one_copy(rec: AdapterRecord, st: RuntimeState) -> None:
    """A frozen adapter read from a folder keeps one copy of its tensors: when the layers hold a cast (another dtype
    or device than the file's), the source tensors are dropped and an exact save re-reads the folder instead."""
    src = rec.adapter
    if src.path is None:
        return  # built in memory: the source is the only exact copy
    sources = [t for m in src.modules.values() for t in (m.lora_A, m.lora_B, m.magnitude, m.lora_B_bias) if t is not None]
    sources += list(src.overrides.values())
    used = {t.untyped_storage().data_ptr() for path in dict.fromkeys(rec.modules + rec.override_owners)
            for n, t in st.wrappers[path]._parameters.items() if t is not None and n.partition("__")[2] == rec.key}  # fmt: skip
    if all(t.untyped_storage().data_ptr() in used for t in sources):
        return  # the layers use the source tensors themselves: nothing extra is held
    stamp = folder_stamp(src.path)
    if stamp is None:
        return
    rec.source_stamp = stamp
    rec.adapter = PeftAdapter(src.config, {}, {}, src.path)


def folder_stamp(folder: Path) -> tuple[tuple[str, int, int], ...] | None:
    """(name, size, mtime_ns) of a folder's files: how a save notices the folder changed since attach."""
    try:
        return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file()))
    except OSError:
        return None


def _same_values(base: torch.Tensor, value: torch.Tensor) -> bool:
    return base.dtype == value.dtype and base.device == value.device and torch.equal(base, value)


def _shape_problems(path: str, m: LoraModule, base: nn.Module, cls: type[AdapterLayer]) -> list[str]:
    w = module_weight(base)
    a, b = tuple(m.lora_A.shape), tuple(m.lora_B.shape)
    if cls is LoraEmbedding:
        if m.kind is not LayerKind.EMBEDDING:
            return [f"module {path}: Linear LoRA factors on an Embedding layer"]
        num, dim = w.shape
        ok = a[1] == num and b[0] == dim and a[0] == b[1]
        expect = f"A [r, {num}] and B [{dim}, r]"
        out = dim
    else:
        if m.kind is LayerKind.EMBEDDING:
            return [f"module {path}: Embedding LoRA factors on a {type(base).__name__} layer"]
        fan = getattr(cls, "fan_in_fan_out", False)  # LoraLinear and LoraConv1D define it
        in_f, out_f = (w.shape[0], w.shape[1]) if fan else (w.shape[1], w.shape[0])
        ok = a[1] == in_f and b[0] == out_f and a[0] == b[1]
        expect = f"A [r, {in_f}] and B [{out_f}, r]"
        out = out_f
    found: list[str] = []
    if not ok:
        found.append(f"module {path}: adapter has A {list(a)} and B {list(b)}, the model needs {expect}")
    if m.magnitude is not None and tuple(m.magnitude.shape) != (out,):
        found.append(f"module {path}: DoRA magnitude {list(m.magnitude.shape)}, the model needs [{out}]")
    if m.lora_B_bias is not None and tuple(m.lora_B_bias.shape) != (out,):
        found.append(f"module {path}: lora_B bias {list(m.lora_B_bias.shape)}, the model needs [{out}]")
    return found


def _resolve(model: nn.Module, path: str) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute, module) for a dotted path of the original model, looking through adapter wrappers."""
    cur: nn.Module = model
    parent: nn.Module | None = None
    attr = ""
    for seg in path.split("."):
        if isinstance(cur, AdapterLayer):
            cur = cur.base_layer
        elif is_peft_layer(cur):
            cur = _child(cur, "base_layer")
        child = cur._modules.get(seg)
        if child is None:
            return None
        parent, attr, cur = cur, seg, child
    while is_peft_layer(cur):  # a layer PEFT wrapped: ours goes around PEFT's base layer, inside PEFT's
        parent, attr, cur = cur, "base_layer", _child(cur, "base_layer")
    return (parent, attr, cur) if parent is not None else None


def _child(module: nn.Module, name: str) -> nn.Module:
    """A registered submodule, typed (torch types module attributes `Tensor | Module`)."""
    child = module._modules[name]
    assert child is not None
    return child


def _ensure_wrapper(st: RuntimeState, item: _Planned) -> AdapterLayer:
    w = st.wrappers.get(item.path)
    if w is not None:
        return w
    if isinstance(item.current, AdapterLayer):  # pragma: no cover - every wrapper is in st.wrappers
        return item.current
    w = item.cls(item.current, st)
    setattr(item.parent, item.attr, w)
    st.wrappers[item.path] = w
    return w


def _fused_values(w: LoraLinear | LoraEmbedding, act: list[tuple[str, float]], weight: torch.Tensor,
                  bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """The fused weight (and bias) in float32, applying the active adapters in order exactly as the forward does:
    plain LoRA adds w·Δ; DoRA rescales everything so far plus its delta by m / ||W_base + w·Δ|| (PEFT's order)."""
    fan = bool(getattr(w, "fan_in_fan_out", False))
    new_w = weight.float().T.clone() if fan else weight.float().clone()  # [out, in] (Embedding: its own layout)
    extra: torch.Tensor | None = None  # what the adapters add to the bias
    for n, wt in act:
        s = w._slots[n]
        d = delta_weight(w.slot_module(n)) * wt  # fan_in_fan_out=False: [out, in] like new_w
        lora_b = s.bias.float() * (s.scale * wt) if s.bias is not None else None
        if s.magnitude is None:
            new_w += d
            if lora_b is not None:
                extra = lora_b if extra is None else extra + lora_b
        else:
            assert isinstance(w, LoraLinear)  # fuse refuses DoRA on embeddings at attach time
            ms = w._dora_scale(s, s.scale * wt, weight).float()
            new_w = ms.unsqueeze(1) * (new_w + d)
            if extra is not None or lora_b is not None:
                extra = ms * ((extra if extra is not None else 0.0) + (lora_b if lora_b is not None else 0.0))
    new_b = None if extra is None or bias is None else bias.float() + extra
    return (new_w.T if fan else new_w), new_b


# --- small helpers --------------------------------------------------------------------------------------------


def _load(adapter: AdapterSource, device: torch.device | None) -> tuple[PeftAdapter, str, frozenset[str]]:
    """A PeftAdapter, its default name and its aliases, from an in-memory adapter or anything `sources.resolve`
    takes: a folder (named after it), a registry reference (named as given; it also answers to its resolved
    version `ns/name@3` and that version's aliases `ns/name@prod`), or an adapter a check resolved already."""
    if isinstance(adapter, PeftAdapter):
        return adapter, adapter.path.name if adapter.path is not None else "adapter", frozenset()
    dev = str(device) if device is not None and device.type != "meta" else None
    source = resolve(adapter)
    peft = load_adapter(source.folder, device=dev, layout=source.layout)
    card = source.card
    if card is None:
        return peft, source.folder_name, frozenset(a for a in (source.asked, str(source.folder)) if a)
    aliases = {card.ref, *(f"{card.full_name}@{a}" for a in card.aliases)} | ({source.asked} if source.asked else set())
    return peft, source.asked or card.ref, frozenset(aliases)


def _model_device(model: nn.Module) -> torch.device | None:
    for p in model.parameters():
        return p.device
    return None


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "_name_or_path", "") or type(model).__name__)


def _safe_key(name: str, st: RuntimeState) -> str:
    base = re.sub(r"\W", "_", name) or "adapter"
    used = {r.key for r in st.adapters.values()}
    key, i = base, 2
    while key in used:
        key, i = f"{base}_{i}", i + 1
    return key


def _check_weight(w: float) -> None:
    if not isinstance(w, (int, float)) or not math.isfinite(float(w)):
        raise UsageError(f"adapter weight {w!r} is not a finite number", hint="pass a float such as 1.0 or 0.5")


def _as_names(names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def _pairs(st: RuntimeState, names: list[str], weights: float | Sequence[float] | None) -> tuple[tuple[str, float], ...]:
    names = [adapter_name(st, n) for n in names]  # the name, an alias or the resolved version -> the attached name
    if len(set(names)) != len(names):
        raise UsageError(f"an adapter is named twice in {names}", hint="name each adapter once")
    if weights is None:
        ws = [st.adapters[n].weight for n in names]
    elif isinstance(weights, (int, float)):
        ws = [float(weights)] * len(names)
    else:
        ws = [float(x) for x in weights]
        if len(ws) != len(names):
            raise UsageError(f"{len(names)} adapters but {len(ws)} weights", hint="pass one weight per adapter")
    for x in ws:
        _check_weight(x)
    seen: dict[str, str] = {}
    for n in names:  # two active adapters replacing the same parameter would be ambiguous
        for p in st.adapters[n].override_params:
            if p in seen:
                raise UsageError(f"adapters {seen[p]!r} and {n!r} both replace {p}", hint="activate only one of them")
            seen[p] = n
    return tuple(zip(names, ws, strict=True))


def _refuse_while_fused(st: RuntimeState, what: str) -> None:
    if st.fused is not None:
        raise UsageError(f"cannot {what} while adapters are fused into the weights", hint="call unfuse(model) first")
