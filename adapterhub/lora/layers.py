"""The wrapper modules that add LoRA terms to Linear, transformers' Conv1D and Embedding layers at run time.

A wrapper holds the original module unchanged (`base_layer`) plus, per attached adapter, a `LoraSlot`. What runs
is decided by the model's one shared `RuntimeState` (active adapters and weights, or a per-row routing plan), so
switching adapters never walks the modules. A and B are kept exactly as saved (no copy when dtype and device
match) and the scale is applied inside the forward's addmm, so attaching does no arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..peft_format import LayerKind
from ..peft_weights import LoraModule
from .delta import dora_norm
from .state import RoutePlan, RuntimeState

try:  # transformers is optional: without it there is simply no Conv1D to wrap
    from transformers.pytorch_utils import Conv1D as _HFConv1D
except ImportError:  # pragma: no cover - transformers is installed with the `hf` extra
    _HFConv1D = None  # type: ignore[assignment,misc]  # the optional class is simply absent


class LoraSlot:
    """One adapter's factors on one layer, laid out for the fastest forward.

    Linear/Conv1D: A [r, in], B [out, r]. Embedding: A [num_embeddings, r], B [r, dim] (PEFT's tensors transposed,
    so the forward is F.embedding(x, A) @ B). `scale` multiplies B @ A, as PEFT's `scaling`.
    """

    __slots__ = ("key", "A", "B", "bias", "magnitude", "scale", "dropout", "dora_cache")

    def __init__(self, key: str, scale: float, dropout: float) -> None:
        self.key = key
        self.scale = scale
        self.dropout = dropout
        self.A: torch.Tensor
        self.B: torch.Tensor
        self.bias: torch.Tensor | None = None
        self.magnitude: torch.Tensor | None = None
        self.dora_cache: dict[float, torch.Tensor] = {}


class AdapterLayer(nn.Module):
    """Base class of the wrappers: the original module plus per-adapter LoRA slots and parameter overrides."""

    kind: LayerKind | None = None
    # The wrapped layer (nn.Linear, transformers' Conv1D, nn.Embedding, or any module an override replaces a
    # parameter of). Any, because torch types every Module attribute as `Tensor | Module`.
    _base: Any

    def __init__(self, base_layer: nn.Module, state: RuntimeState) -> None:
        super().__init__()
        self.base_layer = base_layer
        # Adapter tensors are registered directly as parameters named `lora_<part>__<key>` (part: A, B, B_bias,
        # magnitude, or override_<param>): they follow .to()/.half(), show in state_dict, and cost no submodules.
        # Plain attributes (not registered) so forward reads them without nn.Module.__getattr__.
        object.__setattr__(self, "_base", base_layer)  # not a second registration of the same child
        self._state = state
        self._slots: dict[str, LoraSlot] = {}
        self._overrides: dict[str, dict[str, torch.Tensor]] = {}  # adapter name -> {param leaf: tensor}
        self._override_keys: dict[str, str] = {}  # adapter name -> key in its override parameters' names
        self.training = base_layer.training  # not train(): that would walk the base's submodules
        # state_dict() shows the base's own keys and values (adapter tensors left out), so save_pretrained() on an
        # attached model writes the base checkpoint; loading base keys into an attached model works too.
        self.register_state_dict_post_hook(_base_state_dict)  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.register_load_state_dict_pre_hook(_base_load_pre_hook)  # type: ignore[no-untyped-call]  # same

    def __repr__(self) -> str:
        # One line, so it reads well in print(model) and inside PEFT's "Target module ... is not supported" error.
        names = ", ".join(dict.fromkeys([*self._slots, *self._overrides]))
        return (f"{type(self).__name__}({self._base!r} + adapterhub adapters [{names}]; PEFT cannot wrap this layer: "
                f"apply PEFT first and attach after, or adapterhub.detach(model) before get_peft_model)")  # fmt: skip

    # --- bookkeeping (attach/detach) --------------------------------------------------------------------------

    def add_slot(
        self,
        name: str,
        key: str,
        m: LoraModule,
        *,
        trainable: bool = False,
        dropout: float = 0.0,
    ) -> None:
        """Add adapter `name`'s factors (checked by the caller), cast to the base weight's dtype and device."""
        ref = self._ref_weight()
        dev, dt = ref.device, (ref.dtype if ref.is_floating_point() else torch.float32)
        a, b = m.lora_A.to(device=dev, dtype=dt), m.lora_B.to(device=dev, dtype=dt)
        bias = m.lora_B_bias.to(device=dev, dtype=dt) if m.lora_B_bias is not None else None
        if self.kind is LayerKind.EMBEDDING:
            a, b = a.T, b.T  # stored transposed so the forward is a lookup then one matmul
        # No arithmetic here: the loaded tensors become the parameters as they are (no copy when dtype and
        # device already match), and the scale is applied by the forward's addmm for free.
        reg = self.register_parameter
        reg(_pname("A", key), nn.Parameter(a.contiguous(), requires_grad=trainable))
        reg(_pname("B", key), nn.Parameter(b.contiguous(), requires_grad=trainable))
        if bias is not None:
            reg(_pname("B_bias", key), nn.Parameter(bias, requires_grad=trainable))
        if m.magnitude is not None:
            reg(_pname("magnitude", key), nn.Parameter(m.magnitude.to(device=dev, dtype=dt), requires_grad=trainable))
        self._slots[name] = LoraSlot(key, m.scaling, dropout)
        self._refresh()

    def add_override(self, name: str, key: str, leaf: str, value: torch.Tensor, *, trainable: bool = False) -> None:
        """While `name` is active, parameter `leaf` of the base module is replaced by `value` (base untouched)."""
        ref = getattr(self._base, leaf)
        p = nn.Parameter(value.to(device=ref.device, dtype=ref.dtype).contiguous(), requires_grad=trainable)
        self.register_parameter(_pname(f"override_{leaf}", key), p)
        self._override_keys[name] = key
        self._overrides.setdefault(name, {})[leaf] = p

    def remove(self, name: str) -> None:
        """Drop everything adapter `name` put on this layer."""
        slot = self._slots.pop(name, None)
        if slot is not None:
            for part in ("A", "B", "B_bias", "magnitude"):
                self._parameters.pop(_pname(part, slot.key), None)
        key = self._override_keys.pop(name, None)
        for leaf in self._overrides.pop(name, {}):
            self._parameters.pop(_pname(f"override_{leaf}", key or ""), None)

    @property
    def empty(self) -> bool:
        return not self._slots and not self._overrides

    def slot_module(self, name: str) -> LoraModule:
        """Adapter `name`'s factors on this layer in PEFT's layout (the tensors themselves, not copies)."""
        s = self._slots[name]
        a, b = s.A, s.B
        if self.kind is LayerKind.EMBEDDING:
            a, b = a.T, b.T
        return LoraModule("", self.kind or LayerKind.LINEAR, a, b, int(s.A.shape[0 if self.kind is not LayerKind.EMBEDDING else 1]),
                          0.0, s.scale, s.magnitude, s.bias)  # fmt: skip

    def _refresh(self) -> None:
        # Re-read the slot tensors from the registered parameters (they may be new objects after `.to()`).
        params = self._parameters
        for s in self._slots.values():
            s.A = _tensor(params[_pname("A", s.key)])
            s.B = _tensor(params[_pname("B", s.key)])
            s.bias = params.get(_pname("B_bias", s.key))
            s.magnitude = params.get(_pname("magnitude", s.key))
            s.dora_cache.clear()
        for name, key in self._override_keys.items():
            self._overrides[name] = {leaf: _tensor(params[_pname(f"override_{leaf}", key)]) for leaf in self._overrides[name]}

    def _apply(self, fn: Any, recurse: bool = True) -> AdapterLayer:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves Module._apply unannotated
        self._refresh()
        return self

    def _ref_weight(self) -> torch.Tensor:
        w = getattr(self._base, "weight", None)
        if isinstance(w, torch.Tensor):
            return w
        first: torch.Tensor = next(self._base.parameters())
        return first

    def _active_override(self, st: RuntimeState) -> dict[str, torch.Tensor] | None:
        # At most one active adapter overrides a given parameter (set_active checks), so the first hit wins.
        for name, _w in st.active:
            ov = self._overrides.get(name)
            if ov is not None:
                return ov
        return None

    # --- forward ------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        st = self._state
        if st.route is not None:
            return self._routed_forward(st.route, x, *args, **kwargs)
        ov = self._active_override(st) if self._overrides else None
        out: torch.Tensor = self._base(x, *args, **kwargs) if ov is None else self._base_with(ov, x, *args, **kwargs)
        if self._slots and st.lora_active:
            for name, w in st.lora_active:
                s = self._slots.get(name)
                if s is not None:
                    out = self._add_lora(out, x, s, w, ov)
        return out

    def _base_with(self, ov: dict[str, torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The base module's forward with some parameters replaced (generic; subclasses use a direct formula)."""
        out: torch.Tensor = torch.func.functional_call(self._base, ov, (x, *args), kwargs, strict=False)
        return out

    def _add_lora(self, out: torch.Tensor, x: torch.Tensor, s: LoraSlot, w: float,
                  ov: dict[str, torch.Tensor] | None) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError  # only the LoRA-capable subclasses have slots

    def _routed_forward(self, plan: RoutePlan, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Each row group gets its own adapter's override and LoRA term; base rows get the base alone."""
        rows_plan = plan.for_batch(x.shape[0])  # generate's beams / num_return_sequences repeat each row k times
        if rows_plan is None:
            raise UsageError(
                f"routing names {plan.batch} rows but a layer got a batch of {x.shape[0]}",
                hint="pass one name per row of the batch (None for the base)",
            )
        plan = rows_plan
        out: torch.Tensor = self._base(x, *args, **kwargs)
        grad = torch.is_grad_enabled()
        for name, rows in plan.groups(x.device):
            ov = self._overrides.get(name)
            s = self._slots.get(name)
            if ov is None and s is None:
                continue
            xr = x[rows]
            if ov is not None:
                base_r = self._base_with(ov, xr, *args, **kwargs)
            else:
                base_r = out[rows]
            new_r = self._add_lora(base_r, xr, s, 1.0, ov) if s is not None else base_r
            if grad:
                out = _put_rows(out, rows, new_r)
            else:
                out[rows] = new_r
        return out


BASE_PREFIX = "base_layer."
_ADAPTER_PREFIX = "lora_"


def _base_state_dict(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any]) -> None:
    """state_dict post-hook: `x.base_layer.weight` -> `x.weight`, adapter tensors dropped, and while fused the base
    values from before the fuse. This wrapper's keys were the last ones added, so only the dict's tail is touched."""
    assert isinstance(module, AdapterLayer)
    tail: list[tuple[str, Any]] = []
    for key in reversed(list(state_dict)):
        if not key.startswith(prefix):
            break
        tail.append((key, state_dict.pop(key)))
    fused = module._state.fused
    originals = {id(p): orig for p, orig in fused} if fused is not None else {}
    inner = prefix + BASE_PREFIX
    for key, value in reversed(tail):
        if not key.startswith(inner):
            continue  # the wrapper's own parameters: adapter tensors
        leaf = key[len(inner) :]
        param = module._base._parameters.get(leaf)
        if param is not None and id(param) in originals:
            value = originals[id(param)]
        state_dict[prefix + leaf] = value


def _base_load_pre_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                        strict: bool, missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:  # fmt: skip
    """load_state_dict pre-hook: base keys (`x.weight`) load into the wrapped layer (`x.base_layer.weight`); the adapter
    tensors a base checkpoint lacks keep their values (they are not reported missing)."""
    assert isinstance(module, AdapterLayer)
    inner = prefix + BASE_PREFIX
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest.startswith(BASE_PREFIX) or (rest.startswith(_ADAPTER_PREFIX) and "." not in rest):
            continue  # already the wrapped name, or one of this wrapper's adapter tensors
        state_dict[inner + rest] = state_dict.pop(key)
    for pname, p in module._parameters.items():
        if pname.startswith(_ADAPTER_PREFIX) and p is not None and prefix + pname not in state_dict:
            state_dict[prefix + pname] = p.detach()


def _tensor(p: torch.Tensor | None) -> torch.Tensor:
    """A registered parameter that `_refresh` knows exists (the parameter dict's values are typed Optional)."""
    assert p is not None
    return p


def _pname(part: str, key: str) -> str:
    return f"lora_{part}__{key}"


def _put_rows(out: torch.Tensor, rows: slice | torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """out with `rows` replaced by `value`, out of place (autograd-safe)."""
    if isinstance(rows, slice):
        return torch.cat([out[: rows.start], value, out[rows.stop :]], dim=0)
    return out.index_copy(0, rows, value)


class LoraLinear(AdapterLayer):
    """Wraps nn.Linear: out = base(x) + sum_i w_i * s_i * B_i A_i x (DoRA: PEFT's magnitude-normalised form)."""

    kind = LayerKind.LINEAR
    fan_in_fan_out = False

    def in_out(self) -> tuple[int, int]:
        w = self._base.weight
        return (w.shape[0], w.shape[1]) if self.fan_in_fan_out else (w.shape[1], w.shape[0])

    def _bias(self, ov: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
        if ov is not None and "bias" in ov:
            return ov["bias"]
        bias: torch.Tensor | None = self._base.bias
        return bias

    def _base_with(self, ov: dict[str, torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return F.linear(x, ov.get("weight", self._base.weight), self._bias(ov))

    def _routed_forward(self, plan: RoutePlan, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        plain = not self._overrides and not self.training and not torch.is_grad_enabled()
        fast = self._batched_lora(plan, x) if plain else None
        return fast if fast is not None else super()._routed_forward(plan, x, *args, **kwargs)

    def _batched_lora(self, plan: RoutePlan, x: torch.Tensor) -> torch.Tensor | None:
        """Every row's LoRA term in two batched matmuls, each row with its own adapter's A and B (what multi-adapter
        servers do, e.g. punica's BGMV), instead of a loop over the batch's adapters. Plain LoRA of one rank and
        several adapters in the batch only; None otherwise (the loop handles it)."""
        rows_plan = plan.for_batch(x.shape[0])
        if rows_plan is None or x.dim() < 2:
            return None
        slots = [self._slots.get(n) if n is not None else None for n in rows_plan.names]
        present = {id(s): s for s in slots if s is not None}
        if len(present) < 2:
            return None  # one adapter (or none) in the batch: the grouped path is one matmul pair already
        first = next(iter(present.values()))
        if any(s.magnitude is not None or s.bias is not None or s.A.shape != first.A.shape or s.B.shape != first.B.shape
               or s.A.dtype != x.dtype for s in present.values()):  # fmt: skip
            return None
        zero_a, zero_b = first.A.new_zeros(first.A.shape), first.B.new_zeros(first.B.shape)
        a = torch.stack([s.A if s is not None else zero_a for s in slots])  # [batch, r, in]
        b = torch.stack([s.B if s is not None else zero_b for s in slots])  # [batch, out, r]
        scale = torch.tensor([s.scale if s is not None else 0.0 for s in slots], dtype=x.dtype, device=x.device)
        out: torch.Tensor = self._base(x)
        h = torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]), a.transpose(1, 2)) * scale.view(-1, 1, 1)
        return out + torch.bmm(h, b.transpose(1, 2)).view(out.shape)

    def _weight_oi(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The base weight (or an override of it) as [out, in]."""
        w: torch.Tensor = self._base.weight if weight is None else weight
        return w.T if self.fan_in_fan_out else w

    def _add_lora(self, out: torch.Tensor, x: torch.Tensor, s: LoraSlot, w: float,
                  ov: dict[str, torch.Tensor] | None) -> torch.Tensor:  # fmt: skip
        if s.dropout and self.training:
            x = F.dropout(x, s.dropout, True)
        h = F.linear(x, s.A)
        coef = s.scale * w
        if s.magnitude is None and s.bias is None:
            # out + coef · h Bᵀ as one addmm: no separate scale or add pass over the output.
            n, r = out.shape[-1], h.shape[-1]
            return torch.addmm(out.reshape(-1, n), h.reshape(-1, r), s.B.t(), alpha=coef).view(out.shape)
        d = F.linear(h, s.B, s.bias) * coef
        if s.magnitude is None:
            return out + d
        # DoRA, as PEFT: (m/||W + c·BA||_row - 1) * (output so far, without the bias) + m/||...|| * c·(BA x + b).
        # The norm uses the base weight; "output so far" includes earlier active adapters, so order matters (PEFT's).
        ms = self._dora_scale(s, coef, ov["weight"] if ov is not None and "weight" in ov else None)
        bias = self._bias(ov)
        so_far = out - bias if bias is not None else out
        return out + (ms - 1) * so_far + ms * d

    def _dora_scale(self, s: LoraSlot, coef: float, weight: torch.Tensor | None = None) -> torch.Tensor:
        """m / ||W + coef·B A|| per output feature; cached per coefficient for frozen adapters on the base weight."""
        assert s.magnitude is not None
        cacheable = weight is None and not (s.magnitude.requires_grad or s.A.requires_grad)
        cached = s.dora_cache.get(coef) if cacheable else None
        if cached is not None:
            return cached
        with torch.no_grad():  # PEFT detaches the norm too (DoRA paper, sec. 4.3)
            norm = dora_norm(self._weight_oi(weight).float(), (s.B.float() @ s.A.float()) * coef).to(s.magnitude.dtype)
        ms = s.magnitude / norm
        if cacheable:
            s.dora_cache[coef] = ms
        return ms


class LoraConv1D(LoraLinear):
    """Wraps transformers' Conv1D (GPT-2): weight stored [in, out]; the LoRA term is the same as for Linear."""

    fan_in_fan_out = True

    def _base_with(self, ov: dict[str, torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        wt = ov.get("weight", self._base.weight)
        bias = self._bias(ov)
        flat = x.reshape(-1, x.shape[-1])
        y = torch.addmm(bias, flat, wt) if bias is not None else flat @ wt
        return y.view(*x.shape[:-1], wt.shape[1])


class LoraEmbedding(AdapterLayer):
    """Wraps nn.Embedding: out = base(ids) + sum_i w_i * s_i * A_i[ids] @ B_i (PEFT's lora_embedding_A/B)."""

    kind = LayerKind.EMBEDDING

    def in_out(self) -> tuple[int, int]:
        w = self._base.weight
        return (w.shape[0], w.shape[1])

    def _lookup(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        b = self._base
        return F.embedding(x, table, b.padding_idx, b.max_norm, b.norm_type, b.scale_grad_by_freq, b.sparse)

    def _base_with(self, ov: dict[str, torch.Tensor], x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self._lookup(x, ov.get("weight", self._base.weight))
        scale = getattr(self._base, "embed_scale", None)
        return out * scale.to(out.dtype) if isinstance(scale, torch.Tensor) else out

    def _add_lora(self, out: torch.Tensor, x: torch.Tensor, s: LoraSlot, w: float,
                  ov: dict[str, torch.Tensor] | None) -> torch.Tensor:  # fmt: skip
        d = self._lookup(x, s.A) @ s.B
        coef = s.scale * w
        if coef != 1.0:
            d = d * coef
        scale = getattr(self._base, "embed_scale", None)  # scaled embeddings (Gemma): PEFT scales the LoRA term too
        if isinstance(scale, torch.Tensor):
            d = d * scale.to(d.dtype)
        return out + d


class OverrideLayer(AdapterLayer):
    """Wraps any other module whose parameters an adapter replaces (`modules_to_save`, e.g. a classifier head)."""


def module_weight(module: nn.Module) -> torch.Tensor:
    """A Linear, Conv1D or Embedding layer's weight, typed (torch types module attributes `Tensor | Module`)."""
    w = module.weight
    assert isinstance(w, torch.Tensor)
    return w


def wrapper_class(module: nn.Module) -> type[AdapterLayer] | None:
    """The LoRA wrapper for a module type, or None when LoRA cannot be applied to it (Conv2d, LayerNorm...)."""
    if isinstance(module, nn.Linear):
        return LoraLinear
    if _HFConv1D is not None and isinstance(module, _HFConv1D):
        return LoraConv1D
    if isinstance(module, nn.Embedding):
        return LoraEmbedding
    return None
