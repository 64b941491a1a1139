"""Load a frozen base model from a local folder and attach adapters to it, each checked before any is attached.

`load` is the one call most users need; `attach_checked` does the checking-then-attaching on a model already in
memory; `probe` is the quick look behind `adapterhub run` (top next tokens, or an embedding summary).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from .compatibility import CompatibilityReport, check
from .errors import BaseModelNotFound, IncompatibleAdapter, InvalidModel, UsageError
from .modelfiles import read_model_config, resolve_base
from .shapefit import BaseTensors, tied_embeddings
from .sources import AdapterSpec, ResolvedAdapter, needs_registry, registry_or_default, resolve

if TYPE_CHECKING:
    import torch

    from .store.registry import Registry

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


def load(
    base: str | Path,
    adapters: Sequence[AdapterSpec] = (),
    registry: Registry | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    auto_class: str | type | None = None,
    *,
    names: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    activate: bool = True,
    **from_pretrained: Any,
) -> torch.nn.Module:
    """The transformers model at `base`, frozen and in eval mode, with `adapters` (refs or PEFT folders) attached.

    `base` is a folder, a Hugging Face cache folder, or a Hub id `org/name` (from the local cache, else downloaded
    unless HF_HUB_OFFLINE is set). Keywords `from_pretrained` takes (device_map, torch_dtype, trust_remote_code,
    revision, quantization_config, attn_implementation, ...) go to it unchanged.
    Every adapter is validated against `base` before the model is even loaded: an incompatible one raises
    `IncompatibleAdapter` and nothing is attached. With `activate` all of them run together (at `weights`, default
    1.0 each); use `adapterhub.lora.attach.set_active` to switch later.
    """
    base = resolve_base(base, revision=from_pretrained.get("revision"))
    if registry is None and needs_registry(adapters):
        registry = registry_or_default(None)  # one default registry for every reference
    # cheap (headers) and before the expensive model load; attach takes what the check resolved and parsed
    checked = [source for _report, source in _check(adapters, base, registry)]
    model = load_base(base, dtype=dtype, device=device, auto_class=auto_class, **from_pretrained)
    attach_checked(model, base, checked, registry, names=names, weights=weights, activate=activate, checked=True)
    return model


def load_base(
    base: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    auto_class: str | type | None = None,
    **from_pretrained: Any,
) -> torch.nn.Module:
    """A transformers model from a folder (or cache folder, or Hub id: `resolve_base`): class from its config's
    `architectures` unless given; frozen, eval. Other keywords go to `from_pretrained` unchanged."""
    base = resolve_base(base, revision=from_pretrained.get("revision"))
    cls = model_class(base, auto_class)
    kwargs: dict[str, Any] = {"local_files_only": True, **from_pretrained}
    kwargs.pop("revision", None)  # used to pick the snapshot; the folder is that revision
    torch_dtype = kwargs.pop("torch_dtype", None)  # transformers' older name for dtype
    if dtype is None and torch_dtype is not None:
        dtype = torch_dtype
    if isinstance(kwargs.get("dtype"), str) and kwargs["dtype"] != "auto":
        kwargs["dtype"] = _torch_dtype(kwargs["dtype"])
    if dtype is not None:
        kwargs["dtype"] = dtype if isinstance(dtype, str) and dtype == "auto" else _torch_dtype(dtype)
    try:
        model: torch.nn.Module = cls.from_pretrained(str(base), **kwargs)
    except OSError as exc:  # transformers' way of saying the folder lacks config/weights
        raise InvalidModel(str(base), [str(exc).splitlines()[0]]) from None
    if device is not None and "device_map" not in kwargs:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def check_adapters(adapters: Sequence[AdapterSpec], base: Path, registry: Registry | None = None) -> list[CompatibilityReport]:
    """Validate every adapter against `base`; the first incompatible one raises `IncompatibleAdapter`."""
    return [report for report, _source in _check(adapters, base, registry)]


def _check(
    adapters: Sequence[AdapterSpec], base: Path, registry: Registry | None
) -> list[tuple[CompatibilityReport, ResolvedAdapter]]:
    """Resolve each adapter once and check it against `base`, whose headers and config are read once for all."""
    sources = [resolve(a, registry) for a in adapters]
    if not sources:
        return []
    if not base.exists():
        raise BaseModelNotFound(str(base))
    tensors, tied = BaseTensors.from_path(base), tied_embeddings(base)
    out = [check(s, base, tensors, tied=tied) for s in sources]
    for r, _s in out:
        if not r.ok:
            raise IncompatibleAdapter(r.adapter_ref or r.adapter, str(base), r.problems())
    return out


def attach_checked(
    model: torch.nn.Module,
    base: str | Path,
    adapters: Sequence[AdapterSpec],
    registry: Registry | None = None,
    *,
    names: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    activate: bool = True,
    checked: bool = False,
) -> list[str]:
    """Validate all `adapters` against `base`, then attach them all to `model`: all or nothing. Returns their names.

    A failure while attaching (after validation passed) detaches the ones this call attached, so the model is
    left exactly as it was.
    """
    from .lora.attach import attach, detach, set_active

    if names is not None and len(names) != len(adapters):
        raise UsageError(f"{len(names)} names for {len(adapters)} adapters", hint="give one name per adapter or none")
    if weights is not None and len(weights) != len(adapters):
        raise UsageError(f"{len(weights)} weights for {len(adapters)} adapters", hint="give one weight per adapter or none")
    sources = [resolve(a, registry) for a in adapters] if checked else [s for _r, s in _check(adapters, Path(base), registry)]
    done: list[str] = []
    try:
        for i, source in enumerate(sources):
            name = names[i] if names is not None else source.ref
            done.append(attach(model, source, name, activate=False))
    except BaseException:
        for name in reversed(done):
            detach(model, name)
        raise
    if activate and done:
        set_active(model, done, list(weights) if weights is not None else None)
    return done


def model_class(base: Path, auto_class: str | type | None = None) -> Any:
    """The transformers class to load `base` with: `auto_class` (a class or its name), else the config's
    `architectures[0]`, else AutoModel."""
    import transformers

    if auto_class is not None and not isinstance(auto_class, str):
        return auto_class
    name = auto_class
    if name is None:
        cfg = read_model_config(base)
        if cfg is None:
            raise InvalidModel(
                str(base), ["no readable config.json"], hint="save the model with save_pretrained (config included)"
            )
        name = (cfg.get("architectures") or ["AutoModel"])[0]
    cls = getattr(transformers, str(name), None)
    if cls is None:
        raise UsageError(f"unknown model class {name!r}", hint="pass auto_class, e.g. AutoModelForCausalLM")
    return cls


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if key is None:
        raise UsageError(f"unknown dtype {dtype!r}", hint="use float32, float16 or bfloat16")
    out: torch.dtype = getattr(torch, key)
    return out


# --- probe: the quick check behind `adapterhub run` ------------------------------------------------------------


class TokenScore(BaseModel):
    token: str
    token_id: int
    prob: float


class ProbeResult(BaseModel):
    """What `adapterhub run` prints: the adapted output next to the bare base's, so the adapter's effect shows."""

    base: str
    adapters: list[str]
    kind: str  # "causal-lm" or "encoder"
    text: str
    top_tokens: list[TokenScore] = Field(default_factory=list)  # causal LM: next-token distribution with adapters
    base_top_tokens: list[TokenScore] = Field(default_factory=list)  # ... and without
    embedding_norm: float | None = None  # `sentence`: mean-pooled sentence embedding
    pooled: str = ""  # `sentence`: which hidden states were pooled (a causal LM has no sentence embedding of its own)
    base_embedding_norm: float | None = None
    cosine_to_base: float | None = None
    embedding_head: list[float] = Field(default_factory=list)  # the first values of the embedding


def probe(
    base: str | Path,
    adapters: Sequence[AdapterSpec] = (),
    *,
    prompt: str | None = None,
    sentence: str | None = None,
    weights: Sequence[float] | None = None,
    registry: Registry | None = None,
    top_k: int = 5,
    dtype: str | None = None,
) -> ProbeResult:
    """Load `base` with `adapters` and run one input: top next tokens for a causal LM (`prompt`), or a mean-pooled
    embedding summary for an encoder (`sentence`), each next to the bare base's result."""
    import torch

    if (prompt is None) == (sentence is None):
        raise UsageError("give exactly one of prompt or sentence", hint="--prompt for causal LMs, --sentence for encoders")
    base = resolve_base(base)
    model = load(base, adapters, registry, dtype=dtype, weights=weights)
    tok = _tokenizer(base)
    text = prompt if prompt is not None else sentence
    enc = tok(text, return_tensors="pt")
    from .lora.attach import activation

    extra = {"output_hidden_states": True} if sentence is not None else {}
    with torch.no_grad():
        out = model(**enc, **extra)
        with activation(model, None):
            bare = model(**enc, **extra)
    result = ProbeResult(base=str(base), adapters=[str(a) for a in adapters], kind="", text=str(text))
    logits = getattr(out, "logits", None)
    if prompt is not None:
        if logits is None or logits.dim() != 3:
            raise UsageError("--prompt needs a causal LM base", hint="use --sentence for an encoder")
        result.kind = "causal-lm"
        result.top_tokens = _top(tok, logits[0, -1], top_k)
        result.base_top_tokens = _top(tok, bare.logits[0, -1], top_k)
        return result
    causal = logits is not None and logits.dim() == 3
    result.kind = "causal-lm" if causal else "encoder"
    result.pooled = "the last hidden layer (a causal LM: not a trained sentence embedding)" if causal else "the last hidden state"
    emb, bare_emb = _mean_pool(out, enc["attention_mask"]), _mean_pool(bare, enc["attention_mask"])
    result.embedding_norm = float(emb.norm())
    result.base_embedding_norm = float(bare_emb.norm())
    result.cosine_to_base = float(torch.nn.functional.cosine_similarity(emb, bare_emb, dim=0))
    result.embedding_head = [round(float(x), 5) for x in emb[:6]]
    return result


def _tokenizer(base: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidModel(
            str(base),
            [f"no usable tokenizer ({str(exc).splitlines()[0]})"],
            hint="save the tokenizer next to the model (tokenizer.save_pretrained)",
        ) from None


def _top(tok: Any, logits: torch.Tensor, k: int) -> list[TokenScore]:
    probs = logits.float().softmax(-1)
    vals, idx = probs.topk(min(k, probs.numel()))
    return [TokenScore(token=tok.decode([int(i)]), token_id=int(i), prob=round(float(v), 6)) for v, i in zip(vals, idx)]


def _mean_pool(out: Any, mask: torch.Tensor) -> torch.Tensor:
    """The mask-weighted mean of the last hidden layer (never of a causal LM's logits)."""
    if getattr(out, "last_hidden_state", None) is not None:
        hidden = out.last_hidden_state
    elif getattr(out, "hidden_states", None):
        hidden = out.hidden_states[-1]
    else:
        hidden = out[0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled: torch.Tensor = ((hidden * m).sum(1) / m.sum(1).clamp(min=1))[0].float()
    return pooled
