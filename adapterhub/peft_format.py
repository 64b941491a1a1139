"""PEFT's on-disk LoRA format: the one module that knows its file names, config fields and tensor key names.

An adapter folder holds `adapter_config.json` and `adapter_model.safetensors`. Keys look like
`base_model.model.<module path>.lora_A.weight`; PEFT strips the adapter name (`.default`) when saving, and older
or hand-made files sometimes keep it, so both spellings are read. Everything here that reads only headers and
configs imports no torch; `load_adapter` and `save_adapter` do.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidAdapter, PickleRefused, UnsupportedFeature
from .tensorfile import Header, TensorInfo, read_header

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "pytorch_model.bin")
KEY_PREFIX = "base_model.model."
DEFAULT_ADAPTER_NAME = "default"
# transformers' names for the layer stack, used by `layers_to_transform` when `layers_pattern` is not given.
LAYER_STACK_NAMES = ("layers", "h", "block", "blocks", "layer")


class LayerKind(str, Enum):
    LINEAR = "linear"  # nn.Linear, or transformers' Conv1D when fan_in_fan_out is set
    EMBEDDING = "embedding"


class LoraConfig(BaseModel):
    """The fields of PEFT's LoraConfig that adapterhub acts on; unknown (newer) fields are kept as they are."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    peft_type: str = "LORA"
    r: int = Field(8, gt=0)
    lora_alpha: float = 8
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    use_rslora: bool = False
    rank_pattern: dict[str, int] = Field(default_factory=dict)
    alpha_pattern: dict[str, float] = Field(default_factory=dict)
    fan_in_fan_out: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    lora_bias: bool = False
    modules_to_save: list[str] | None = None
    use_dora: bool = False
    layers_to_transform: int | list[int] | None = None
    layers_pattern: str | list[str] | None = None
    base_model_name_or_path: str | None = None
    revision: str | None = None
    task_type: str | None = None
    peft_version: str | None = None
    lora_dropout: float = 0.0
    inference_mode: bool = True

    @field_validator("rank_pattern", "alpha_pattern", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("target_modules", "modules_to_save", "exclude_modules", mode="before")
    @classmethod
    def _set_to_list(cls, v: Any) -> Any:
        return sorted(v) if isinstance(v, (set, tuple)) else v

    # --- per-module rank and scaling, resolved the way PEFT does -------------------------------------------

    @staticmethod
    def pattern_key(patterns: dict[str, Any], module: str) -> str | None:
        """The first pattern that matches `module` as a dotted suffix (PEFT's `get_pattern_key` rule)."""
        for key in patterns:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        return None

    def rank_for(self, module: str) -> int:
        key = self.pattern_key(self.rank_pattern, module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        key = self.pattern_key(self.alpha_pattern, module)
        return float(self.alpha_pattern[key]) if key is not None else float(self.lora_alpha)

    def scaling_for(self, module: str) -> float:
        """alpha / r, or alpha / sqrt(r) with rsLoRA: the factor on B @ A."""
        return lora_scaling(self.alpha_for(module), self.rank_for(module), self.use_rslora)

    # --- which modules the config targets -------------------------------------------------------------------

    def targets(self, module: str, *, is_linear: bool = True, is_output_layer: bool = False) -> bool:
        """Whether PEFT would put a LoRA layer on `module` (a dotted path in the base model)."""
        if self.exclude_modules and _name_matches(self.exclude_modules, module):
            return False
        tm = self.target_modules
        if tm is None:
            return False
        if tm == "all-linear":
            hit = is_linear and not is_output_layer
        else:
            hit = _name_matches(tm, module)
        if hit and self.layers_to_transform is not None and not isinstance(tm, str):
            idx = layer_index(module, self.layers_pattern)
            wanted = [self.layers_to_transform] if isinstance(self.layers_to_transform, int) else self.layers_to_transform
            hit = idx is not None and idx in wanted
        return hit

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def lora_scaling(alpha: float, rank: int, use_rslora: bool) -> float:
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def _name_matches(spec: list[str] | str, module: str) -> bool:
    if isinstance(spec, str):
        return re.fullmatch(spec, module) is not None
    return any(module == t or module.endswith("." + t) for t in spec)


def layer_index(module: str, layers_pattern: str | list[str] | None) -> int | None:
    names = [layers_pattern] if isinstance(layers_pattern, str) else (layers_pattern or list(LAYER_STACK_NAMES))
    for name in names:
        m = re.match(rf"(?:.*\.)?{re.escape(name)}\.(\d+)\.", module)
        if m:
            return int(m.group(1))
    return None


# --- key names ---------------------------------------------------------------------------------------------

_LORA_SUFFIXES = {
    "lora_A.weight": ("A", LayerKind.LINEAR),
    "lora_B.weight": ("B", LayerKind.LINEAR),
    "lora_B.bias": ("B_bias", LayerKind.LINEAR),
    "lora_embedding_A": ("A", LayerKind.EMBEDDING),
    "lora_embedding_B": ("B", LayerKind.EMBEDDING),
    "lora_magnitude_vector": ("magnitude", None),
    "lora_magnitude_vector.weight": ("magnitude", None),
}
_ADAPTER_NAME_IN_KEY = re.compile(
    r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|modules_to_save)\.([A-Za-z0-9_-]+)(?=\.|$)"
)


@dataclass(frozen=True)
class ParsedKey:
    module: str  # dotted module path in the base model
    part: str  # "A", "B", "B_bias", "magnitude", or "override" (a full parameter replacing the base's)
    kind: LayerKind | None
    param: str = ""  # for overrides: the parameter path in the base model, e.g. "classifier.weight"


def normalize_key(key: str, adapter_name: str = DEFAULT_ADAPTER_NAME) -> str:
    """PEFT's saved spelling of a key: prefix kept, adapter name and `base_layer`/`modules_to_save` wrappers removed."""
    key = re.sub(rf"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)\.{re.escape(adapter_name)}(?=\.|$)", r".\1", key)
    key = re.sub(rf"\.modules_to_save\.{re.escape(adapter_name)}(?=\.)", "", key)
    key = key.replace(".base_layer.", ".")
    return key


def parse_key(key: str) -> ParsedKey:
    """Split a saved key into module path and part; unknown LoRA-looking parts raise UnsupportedFeature."""
    k = key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else key
    for suffix, (part, kind) in _LORA_SUFFIXES.items():
        if k.endswith("." + suffix):
            return ParsedKey(k[: -len(suffix) - 1], part, kind)
    if re.search(r"\.(lora_[A-Za-z_]+|hada_|lokr_|ia3_|oft_|boft_|vera_)", k):
        raise UnsupportedFeature(f"tensor {key!r}", where="not a LoRA/DoRA parameter adapterhub can apply")
    module, _, _leaf = k.rpartition(".")
    return ParsedKey(module, "override", None, param=k)


# --- header-only layout (no torch) -------------------------------------------------------------------------


@dataclass
class ModuleLayout:
    """The shapes of one LoRA module as saved: enough to check it against a base without loading tensors."""

    module: str
    kind: LayerKind
    rank: int
    alpha: float
    scaling: float
    a: TensorInfo | None = None
    b: TensorInfo | None = None
    b_bias: TensorInfo | None = None
    magnitude: TensorInfo | None = None

    def base_weight_shape(self, fan_in_fan_out: bool) -> tuple[int, ...] | None:
        """The shape the base module's weight must have: (out, in) for Linear, (in, out) for Conv1D,
        (num_embeddings, dim) for Embedding."""
        if self.a is None or self.b is None or len(self.a.shape) != 2 or len(self.b.shape) != 2:
            return None
        if self.kind is LayerKind.EMBEDDING:
            return (self.a.shape[1], self.b.shape[0])
        out_f, in_f = self.b.shape[0], self.a.shape[1]
        return (in_f, out_f) if fan_in_fan_out else (out_f, in_f)


@dataclass
class AdapterLayout:
    folder: Path
    config: LoraConfig
    header: Header
    modules: dict[str, ModuleLayout]
    overrides: dict[str, TensorInfo]  # full parameters that replace the base's (modules_to_save, trained biases)
    problems: list[str] = field(default_factory=list)

    @property
    def weights_path(self) -> Path:
        return self.header.path

    @property
    def method(self) -> str:
        return "dora" if self.config.use_dora else "lora"

    @property
    def target_module_names(self) -> list[str]:
        """The distinct last-segment names of the LoRA modules (`q_proj`, `query`...), sorted."""
        return sorted({m.rsplit(".", 1)[-1] for m in self.modules})

    @property
    def rank_by_module(self) -> dict[str, int]:
        return {m: lay.rank for m, lay in sorted(self.modules.items())}


def find_weights(folder: Path | str) -> Path:
    """The adapter's safetensors file; a pickle-only adapter is refused with the reason."""
    folder = Path(folder)
    st = folder / WEIGHTS_NAME
    if st.is_file():
        return st
    for name in PICKLE_NAMES:
        if (folder / name).is_file():
            raise PickleRefused(str(folder / name))
    raise InvalidAdapter(str(folder), [f"no {WEIGHTS_NAME} in the folder"])


def read_config(folder: Path | str) -> LoraConfig:
    path = Path(folder) / CONFIG_NAME
    if not Path(folder).is_dir():
        raise InvalidAdapter(str(folder), ["not a folder"], hint="pass the folder PEFT's save_pretrained wrote")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidAdapter(str(folder), [f"no {CONFIG_NAME} in the folder"]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapter(str(folder), [f"{CONFIG_NAME} is not valid JSON ({exc})"]) from None
    if not isinstance(raw, dict):
        raise InvalidAdapter(str(folder), [f"{CONFIG_NAME} is not a JSON object"])
    peft_type = str(raw.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UnsupportedFeature(f"peft_type {peft_type}", where=str(folder), hint="adapterhub handles LoRA and DoRA adapters")
    try:
        return LoraConfig.model_validate(raw)
    except ValidationError as exc:
        errs = [f"{CONFIG_NAME} field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidAdapter(str(folder), errs) from None


def read_layout(folder: Path | str, *, strict: bool = True) -> AdapterLayout:
    """Config plus header shapes, checked for consistency; `strict` raises InvalidAdapter on any problem."""
    folder = Path(folder)
    config = read_config(folder)
    header = read_header(find_weights(folder))
    modules: dict[str, ModuleLayout] = {}
    overrides: dict[str, TensorInfo] = {}
    problems: list[str] = []
    seen: dict[str, str] = {}
    dtypes = set()
    for key in sorted(header.tensors):
        info = header.tensors[key]
        norm = normalize_key(key)
        if norm in seen:
            problems.append(f"duplicate key: {key!r} and {seen[norm]!r} name the same tensor")
            continue
        seen[norm] = key
        pk = parse_key(norm)
        if pk.part == "override":
            overrides[pk.param] = info
            continue
        dtypes.add(info.dtype)
        lay = modules.get(pk.module)
        if lay is None:
            rank = config.rank_for(pk.module)
            alpha = config.alpha_for(pk.module)
            lay = ModuleLayout(pk.module, pk.kind or LayerKind.LINEAR, rank, alpha, lora_scaling(alpha, rank, config.use_rslora))
            modules[pk.module] = lay
        if pk.kind is not None:
            lay.kind = pk.kind
        setattr(lay, {"A": "a", "B": "b", "B_bias": "b_bias", "magnitude": "magnitude"}[pk.part], info)
    if len(dtypes) > 1:
        problems.append(f"mixed dtypes in LoRA tensors: {', '.join(sorted(dtypes))}")
    for name, lay in modules.items():
        problems.extend(_module_problems(name, lay, config))
    if not modules:
        problems.append("no LoRA tensors (lora_A / lora_B) in the weights file")
    layout = AdapterLayout(folder, config, header, modules, overrides, problems)
    if strict and problems:
        raise InvalidAdapter(str(folder), problems)
    return layout


def _module_problems(name: str, lay: ModuleLayout, config: LoraConfig) -> list[str]:
    out: list[str] = []
    if lay.a is None or lay.b is None:
        missing = "lora_A" if lay.a is None else "lora_B"
        return [f"module {name}: {missing} is missing"]
    if len(lay.a.shape) != 2 or len(lay.b.shape) != 2:
        raise UnsupportedFeature(
            f"LoRA on a {len(lay.a.shape)}-d weight (module {name}, e.g. Conv2d)",
            hint="adapterhub applies LoRA to Linear, Conv1D and Embedding layers",
        )
    r = lay.rank
    if lay.a.shape[0] != r or lay.b.shape[1] != r:
        out.append(
            f"module {name}: rank {r} from the config, but lora_A is {list(lay.a.shape)} and lora_B is {list(lay.b.shape)}"
        )
    if lay.magnitude is not None:
        if not config.use_dora:
            out.append(f"module {name}: has a DoRA magnitude vector but use_dora is false")
        elif lay.magnitude.shape != (lay.b.shape[0],) and lay.kind is LayerKind.LINEAR:
            out.append(f"module {name}: magnitude has shape {list(lay.magnitude.shape)}, expected [{lay.b.shape[0]}]")
    elif config.use_dora and lay.kind is LayerKind.LINEAR:
        out.append(f"module {name}: use_dora is true but the magnitude vector is missing")
    return out


def nonfinite_tensors(layout: AdapterLayout) -> list[str]:
    """Names of adapter tensors holding NaN or Inf (reads the bytes with numpy; no torch)."""
    from .tensorfile import count_nonfinite

    return [name for name, info in layout.header.tensors.items() if count_nonfinite(layout.header.path, info)]


# --- tensors (torch) ---------------------------------------------------------------------------------------


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


def load_adapter(folder: Path | str, *, device: str | None = None, dtype: torch.dtype | None = None) -> PeftAdapter:
    """Read and check an adapter folder into tensors; raises InvalidAdapter/PickleRefused/UnsupportedFeature."""
    from safetensors.torch import load_file

    layout = read_layout(folder)
    tensors = load_file(str(layout.weights_path), device=device or "cpu")
    modules: dict[str, LoraModule] = {}
    overrides: dict[str, torch.Tensor] = {}
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        pk = parse_key(normalize_key(key))
        if pk.part == "override":
            overrides[pk.param] = t
        else:
            by_module.setdefault(pk.module, {})[pk.part] = t
    for name, parts in by_module.items():
        lay = layout.modules[name]
        modules[name] = LoraModule(
            name, lay.kind, parts["A"], parts["B"], lay.rank, lay.alpha, lay.scaling, parts.get("magnitude"), parts.get("B_bias")
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
        # PEFT saves a LoRA-wrapped module's own parameters (trained biases) under its `base_layer`.
        out[KEY_PREFIX + (f"{module}.base_layer.{leaf}" if module in adapter.modules else param)] = t
    return out


def save_adapter(adapter: PeftAdapter, folder: Path | str, *, overwrite: bool = False) -> Path:
    """Write `adapter_config.json` + `adapter_model.safetensors` atomically, loadable by PeftModel.from_pretrained."""
    from safetensors.torch import save_file

    from .fsutil import atomic_directory

    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(adapter).items()}
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(adapter.config.to_json_dict(), indent=2, sort_keys=True) + "\n")
    return folder
