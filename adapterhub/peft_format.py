"""PEFT's on-disk LoRA format: the one module that knows its file names, config fields and tensor key names.

An adapter folder holds `adapter_config.json` and `adapter_model.safetensors`. Keys look like
`base_model.model.<module path>.lora_A.weight`; PEFT strips the adapter name (`.default`) when saving, and older
or hand-made files sometimes keep it, so both spellings are read. Everything here that reads only headers and
configs imports no torch; `load_adapter` and `save_adapter` do.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import regex
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidAdapter, PickleRefused, UnsupportedFeature
from .tensorfile import Header, TensorInfo, read_header

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "pytorch_model.bin")
KEY_PREFIX = "base_model.model."
DEFAULT_ADAPTER_NAME = "default"
# transformers' names for the layer stack (kept for callers; PEFT itself matches any `<name>.<index>.` segment).
LAYER_STACK_NAMES = ("layers", "h", "block", "blocks", "layer")
# Module names whose full weights PEFT saves with `save_embedding_layers` (its EMBEDDING_LAYER_NAMES, plus the
# spellings other architectures use for the same layers).
EMBEDDING_MODULE_NAMES = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out", "shared", "embed_in")
# Config fields adapterhub only displays: a value of an unexpected type is kept verbatim for the round trip and
# reads as None instead of failing the whole adapter.
LENIENT_FIELDS = ("base_model_name_or_path", "revision", "task_type", "peft_version", "lora_dropout", "inference_mode")
# Newer PEFT LoRA options that change what the adapter computes; adapterhub cannot apply them faithfully.
UNSUPPORTED_OPTIONS = {
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "layer_replication": "layer_replication",
    "target_parameters": "LoRA on raw parameters (target_parameters)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "arrow_config": "Arrow routing (arrow_config)",
    "kasa_config": "KaSA (kasa_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "use_qalora": "QA-LoRA (use_qalora)",
}


# Config strings PEFT uses as regular expressions come from untrusted files. They are checked with `re` (PEFT's
# engine, so what is valid stays exactly what PEFT accepts) but matched with the `regex` engine, which releases the
# GIL and can be stopped: `(a+)+` must not freeze a server. Limits: pattern and module name length, and the CPU
# time all pattern matches of one config may take together.
MAX_PATTERN_CHARS = 256
MAX_MODULE_CHARS = 512
PATTERN_CPU_BUDGET_S = 1.0


class LayerKind(str, Enum):
    LINEAR = "linear"  # nn.Linear, or transformers' Conv1D when fan_in_fan_out is set
    EMBEDDING = "embedding"


class LoraConfig(BaseModel):
    """The fields of PEFT's LoraConfig that adapterhub acts on; unknown (newer) fields are kept as they are."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    peft_type: str = "LORA"
    r: int = Field(8, gt=0)
    lora_alpha: int | float = Field(8, allow_inf_nan=False)
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    use_rslora: bool = False
    rank_pattern: dict[str, int] = Field(default_factory=dict)
    alpha_pattern: dict[str, int | float] = Field(default_factory=dict)
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

    # original JSON values of LENIENT_FIELDS that did not fit their type; written back unchanged by to_json_dict
    _unparsed: dict[str, Any] = PrivateAttr(default_factory=dict)
    # CPU seconds this config's pattern matches have taken so far (bounded by PATTERN_CPU_BUDGET_S)
    _regex_cpu: float = PrivateAttr(default=0.0)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_odd_values(cls, data: Any, handler: Any) -> Any:
        kept: dict[str, Any] = {}
        if isinstance(data, dict):
            data = dict(data)
            for name in LENIENT_FIELDS:
                if name in data:
                    try:
                        TypeAdapter(cls.model_fields[name].annotation).validate_python(data[name])
                    except ValidationError:
                        kept[name] = data.pop(name)
        obj = handler(data)
        obj._unparsed.update(kept)
        return obj

    @field_validator("rank_pattern", "alpha_pattern", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("target_modules", "modules_to_save", "exclude_modules", "layers_pattern", mode="before")
    @classmethod
    def _set_to_list(cls, v: Any) -> Any:
        return sorted(v) if isinstance(v, (set, frozenset, tuple)) and all(isinstance(x, str) for x in v) else v

    @field_validator("target_modules", "exclude_modules", "layers_pattern", "modules_to_save", "rank_pattern", "alpha_pattern")
    @classmethod
    def _regexes_compile(cls, v: Any) -> Any:
        """PEFT uses these strings as regular expressions; one that does not compile would fail at load time, and
        one longer than MAX_PATTERN_CHARS is refused (no real module pattern comes close)."""
        for pattern in [v] if isinstance(v, str) else (v or []):
            if isinstance(pattern, str) and len(pattern) > MAX_PATTERN_CHARS:
                raise ValueError(f"pattern {pattern[:40]!r}... is {len(pattern)} characters long (the limit is {MAX_PATTERN_CHARS})")
            try:
                re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
        return v

    @field_validator("rank_pattern")
    @classmethod
    def _ranks_positive(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k, r in v.items() if r <= 0]
        if bad:
            raise ValueError(f"ranks must be positive (pattern {bad[0]!r})")
        return v

    @field_validator("alpha_pattern")
    @classmethod
    def _alphas_finite(cls, v: dict[str, float]) -> dict[str, float]:
        if not all(math.isfinite(a) for a in v.values()):
            raise ValueError("alphas must be finite numbers")
        return v

    # --- bounded regular expressions ------------------------------------------------------------------------

    def regex_match(self, pattern: str, module: str, *, full: bool = False) -> regex.Match[str] | None:
        """`re.match(pattern, module)` (or fullmatch) for a pattern built from this config's strings, stopped when the
        config's matches have used PATTERN_CPU_BUDGET_S of CPU in all: then InvalidAdapter, one line, nothing changed."""
        if len(module) > MAX_MODULE_CHARS:
            raise InvalidAdapter(CONFIG_NAME, [f"module name {module[:40]!r}... is {len(module)} characters long (the limit is {MAX_MODULE_CHARS})"],
                                 hint="module names are dotted paths in the base model")
        left = PATTERN_CPU_BUDGET_S - self._regex_cpu
        compiled = _compiled(pattern)
        start = time.thread_time()
        try:
            # The timeout is wall-clock; the budget counts this thread's CPU, so a busy machine does not trip it early.
            m = (compiled.fullmatch if full else compiled.match)(module, timeout=max(left, 0.25), concurrent=True)
        except TimeoutError:
            self._regex_cpu = PATTERN_CPU_BUDGET_S
            m = None
        else:
            self._regex_cpu += time.thread_time() - start
        if self._regex_cpu >= PATTERN_CPU_BUDGET_S:
            raise InvalidAdapter(CONFIG_NAME, [f"its module patterns take over {PATTERN_CPU_BUDGET_S:g} s of CPU to match ({pattern[:60]!r})"],
                                 hint="use plain module names or simple patterns")  # fmt: skip
        return m

    # --- per-module rank and scaling, resolved the way PEFT does -------------------------------------------

    def pattern_key(self, patterns: dict[str, Any], module: str) -> str | None:
        """The first pattern that matches `module` as a dotted suffix (PEFT's `get_pattern_key` rule)."""
        for key in patterns:
            if self.regex_match(rf"(.*\.)?({key})$", module):
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
        """Whether PEFT would put a LoRA layer on `module` (a dotted path in the base model).

        Mirrors PEFT's `check_target_module_exists`: exclusions and modules_to_save first, a string is a full-match
        regex (except "all-linear"), list entries match as dotted suffixes, then `layers_to_transform` filters."""
        if self.exclude_modules and self._name_matches(self.exclude_modules, module):
            return False
        if self.modules_to_save and any(self.regex_match(rf"(^|.*\.){m}($|\..*)", module) for m in self.modules_to_save):
            return False
        tm = self.target_modules
        if tm is None:
            return False
        if tm == "all-linear":
            hit = is_linear and not is_output_layer
        elif isinstance(tm, str):
            return self.regex_match(tm, module, full=True) is not None  # PEFT ignores layers_to_transform for a regex
        else:
            hit = self._name_matches(tm, module)
        wanted = self.layers_to_transform
        if hit and wanted is not None and wanted != []:
            idx = layer_index(module, self.layers_pattern, self)
            hit = idx is not None and (idx == wanted if isinstance(wanted, int) else idx in wanted)
        return hit

    def _name_matches(self, spec: list[str] | str, module: str) -> bool:
        if isinstance(spec, str):
            return self.regex_match(spec, module, full=True) is not None
        return any(module == t or module.endswith("." + t) for t in spec)

    def saves_module(self, module: str) -> bool:
        """Whether `module` (or a parent) is in modules_to_save, matched like PEFT's `_set_trainable` (suffix)."""
        parts = module.split(".")
        prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
        return any(p.endswith(m) for m in self.modules_to_save or [] for p in prefixes)

    def unsupported_options(self) -> list[str]:
        """The PEFT options set in this config that change the adapter's maths in ways adapterhub cannot apply."""
        extra = self.model_extra or {}
        return [what for name, what in UNSUPPORTED_OPTIONS.items() if extra.get(name) not in (None, False, [], {}, "")]

    def to_json_dict(self) -> dict[str, Any]:
        """The config as PEFT writes it: known fields, every unknown field, and odd values exactly as read."""
        out = self.model_dump(mode="json", by_alias=True)
        out.update(self._unparsed)
        return out


def lora_scaling(alpha: float, rank: int, use_rslora: bool) -> float:
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> regex.Pattern[str]:
    """A pattern PEFT would build, compiled by the bounded engine (V0: `re`'s syntax and semantics)."""
    try:
        return regex.compile(pattern, regex.V0)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise InvalidAdapter(CONFIG_NAME, [f"pattern {pattern[:60]!r} is not supported ({exc})"]) from None


def layer_index(module: str, layers_pattern: str | list[str] | None, config: LoraConfig | None = None) -> int | None:
    """The layer number PEFT reads from a module path: the first `<name>.<digits>.` (or `<pattern>.<digits>.`).

    `layers_pattern` comes from a config and is matched within that config's time budget."""
    if not layers_pattern:
        m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", module)
        return int(m.group("idx")) if m else None
    cfg = config if config is not None else LoraConfig(layers_pattern=layers_pattern)
    for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern:
        m = cfg.regex_match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", module)
        if m:
            return int(m.group("idx"))
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
# Parts of other PEFT methods, or of LoRA options adapterhub does not apply, recognisable by name.
_FOREIGN_PART = re.compile(r"\.(lora_[A-Za-z_]+|hada_|lokr_|ia3_|oft_|boft_|vera_|token_adapter\.|trainable_tokens_)")


@dataclass(frozen=True)
class ParsedKey:
    module: str  # dotted module path in the base model
    part: str  # "A", "B", "B_bias", "magnitude", or "override" (a full parameter replacing the base's)
    kind: LayerKind | None
    param: str = ""  # for overrides: the parameter path in the base model, e.g. "classifier.weight"


def normalize_key(key: str, adapter_name: str = DEFAULT_ADAPTER_NAME) -> str:
    """PEFT's saved spelling of a key: prefix kept, adapter name and `base_layer`/`modules_to_save` wrappers removed.

    `adapter_name` is removed wherever PEFT puts one; a different name in that position is removed too, so a file
    holding two adapters shows up as duplicate keys instead of being half-read."""
    name = re.escape(adapter_name)
    key = re.sub(rf"\.(lora_A|lora_B)\.(?!weight$|bias$)(?:{name}|[A-Za-z0-9_-]+)(?=\.(?:weight|bias)$)", r".\1", key)
    key = re.sub(rf"\.(lora_embedding_A|lora_embedding_B)\.(?:{name}|[A-Za-z0-9_-]+)$", r".\1", key)
    key = re.sub(rf"\.lora_magnitude_vector\.(?!weight$)(?:{name}|[A-Za-z0-9_-]+)(?=\.weight$|$)", ".lora_magnitude_vector", key)
    key = re.sub(rf"\.modules_to_save\.(?:{name}|[A-Za-z0-9_-]+)(?=\.)", "", key)
    return key.replace(".base_layer.", ".")


def parse_key(key: str) -> ParsedKey:
    """Split a saved key into module path and part; unknown LoRA-looking parts raise UnsupportedFeature."""
    k = key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else key
    for suffix, (part, kind) in _LORA_SUFFIXES.items():
        if k.endswith("." + suffix):
            return ParsedKey(k[: -len(suffix) - 1], part, kind)
    if _FOREIGN_PART.search("." + k):
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
    problems: list[str] = field(default_factory=list)  # what makes the adapter invalid (strict raises InvalidAdapter)
    unsupported: list[str] = field(default_factory=list)  # PEFT features adapterhub cannot apply (UnsupportedFeature)
    key_map: dict[str, str] = field(default_factory=dict)  # normalised key -> key as stored in the file

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


def parse_config(raw: Any, where: str) -> LoraConfig:
    """Validate already-decoded adapter_config.json content; `where` names the source in error messages."""
    if not isinstance(raw, dict):
        raise InvalidAdapter(where, [f"{CONFIG_NAME} is not a JSON object"])
    peft_type = raw.get("peft_type")
    peft_type = getattr(peft_type, "value", peft_type)  # PEFT's own to_dict() holds a PeftType enum
    peft_type = "LORA" if peft_type is None else str(peft_type).upper()
    if peft_type != "LORA":
        raise UnsupportedFeature(f"peft_type {peft_type}", where=where, hint="adapterhub handles LoRA and DoRA adapters")
    try:
        return LoraConfig.model_validate(raw)
    except (OverflowError, RecursionError) as exc:
        raise InvalidAdapter(where, [f"{CONFIG_NAME} holds a value out of range ({type(exc).__name__})"]) from None
    except ValidationError as exc:
        errs = [f"{CONFIG_NAME} field {'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors()]
        raise InvalidAdapter(where, errs) from None


MAX_CONFIG_BYTES = 1 << 20  # real adapter_config.json files are a few kilobytes
_MAX_INT_DIGITS = 19  # every count in a config fits 64 bits; 10**400 would overflow float() and the database


def _config_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"integer {text[:12]}... is too large")
    return int(text)


def load_config_json(path: Path, where: str) -> Any:
    """The JSON of an adapter_config.json, bounded: over `MAX_CONFIG_BYTES`, nested too deep or integers beyond 64
    bits are InvalidAdapter with the reason (never a RecursionError or OverflowError)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise InvalidAdapter(where, [f"no {CONFIG_NAME} in the folder"]) from None
    except OSError as exc:
        raise InvalidAdapter(where, [f"cannot read {CONFIG_NAME}: {exc.strerror or exc}"]) from None
    return config_json(raw, where)


def config_json(raw: bytes, where: str) -> Any:
    """The bytes of an adapter_config.json decoded with the bounds `load_config_json` describes."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidAdapter(where, [f"{CONFIG_NAME} is over {MAX_CONFIG_BYTES} bytes"])
    try:
        return json.loads(raw, parse_int=_config_int)  # NaN/Infinity parse as PEFT's json does; fields refuse them
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, RecursionError):
            why = "nested too deeply"
        raise InvalidAdapter(where, [f"{CONFIG_NAME} is not valid JSON ({why})"]) from None


def read_config(folder: Path | str) -> LoraConfig:
    if not Path(folder).is_dir():
        raise InvalidAdapter(str(folder), ["not a folder"], hint="pass the folder PEFT's save_pretrained wrote")
    return parse_config(load_config_json(Path(folder) / CONFIG_NAME, str(folder)), str(folder))


def read_layout(folder: Path | str, *, strict: bool = True) -> AdapterLayout:
    """Config plus header shapes, checked for consistency.

    `strict` raises UnsupportedFeature for a feature adapterhub cannot apply, else InvalidAdapter listing every
    problem; non-strict returns them in `unsupported` / `problems`. Unreadable config or header always raise."""
    folder = Path(folder)
    config = read_config(folder)
    header = read_header(find_weights(folder))
    modules: dict[str, ModuleLayout] = {}
    overrides: dict[str, TensorInfo] = {}
    problems: list[str] = []
    unsupported = config.unsupported_options()
    key_map: dict[str, str] = {}
    for key in sorted(header.tensors):
        info = header.tensors[key]
        norm = normalize_key(key)
        if norm in key_map:
            problems.append(f"duplicate key: {key!r} and {key_map[norm]!r} name the same tensor")
            continue
        key_map[norm] = key
        try:
            pk = parse_key(norm)
        except UnsupportedFeature as exc:
            unsupported.append(exc.feature)
            continue
        if pk.part == "override":
            overrides[pk.param] = info
            continue
        lay = modules.get(pk.module)
        if lay is None:
            rank = config.rank_for(pk.module)
            alpha = config.alpha_for(pk.module)
            lay = ModuleLayout(pk.module, pk.kind or LayerKind.LINEAR, rank, alpha, lora_scaling(alpha, rank, config.use_rslora))
            modules[pk.module] = lay
        if pk.kind is not None:
            if pk.kind is not lay.kind and (lay.a or lay.b):
                problems.append(f"module {pk.module}: mixes Linear (lora_A/lora_B) and Embedding (lora_embedding_A/B) keys")
            lay.kind = pk.kind
        setattr(lay, {"A": "a", "B": "b", "B_bias": "b_bias", "magnitude": "magnitude"}[pk.part], info)
    from .adapter_check import layout_problems  # the consistency rules live with the checker

    found, more_unsupported = layout_problems(config, header, modules, overrides)
    problems += found
    unsupported += more_unsupported
    if not modules and not unsupported:
        problems.append("no LoRA tensors (lora_A / lora_B) in the weights file")
    layout = AdapterLayout(folder, config, header, modules, overrides, problems, unsupported, key_map)
    if strict and unsupported:
        raise UnsupportedFeature(
            "; ".join(dict.fromkeys(unsupported)),
            where=str(folder),
            hint="adapterhub applies plain LoRA/DoRA on Linear, Conv1D and Embedding layers",
        )
    if strict and problems:
        raise InvalidAdapter(str(folder), problems)
    return layout


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


def load_adapter(folder: Path | str, *, device: str | None = None, dtype: torch.dtype | None = None) -> PeftAdapter:
    """Read and check an adapter folder into tensors; raises InvalidAdapter (also for NaN/Inf), PickleRefused or
    UnsupportedFeature. Tensors are read with safetensors only: nothing is ever unpickled."""
    from safetensors import safe_open

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
        raise InvalidAdapter(str(folder), [f"tensor {k!r} holds NaN or Inf" for k in sorted(bad)], hint="the adapter diverged in training; use an earlier checkpoint")
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
