"""PEFT's on-disk LoRA format: the one module that knows its file names, config fields and tensor key names.

An adapter folder holds `adapter_config.json` and `adapter_model.safetensors`. Keys look like
`base_model.model.<module path>.lora_A.weight`; PEFT strips the adapter name (`.default`) when saving, and older
or hand-made files sometimes keep it, so both spellings are read. Everything here reads only headers and configs
and imports no torch (the key names are parsed in `peft_keys`), including the consistency rules `read_layout` applies (`layout_problems`, shared with
`adapter_check`); tensors are `peft_weights`' job.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
from .peft_keys import DEFAULT_ADAPTER_NAME as DEFAULT_ADAPTER_NAME  # the key rules, importable from here as before
from .peft_keys import KEY_PREFIX as KEY_PREFIX
from .peft_keys import LayerKind as LayerKind
from .peft_keys import ParsedKey as ParsedKey
from .peft_keys import normalize_key as normalize_key
from .peft_keys import parse_key as parse_key
from .tensorfile import Header, TensorInfo, read_header

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "pytorch_model.bin")
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
                        annotation = cls.model_fields[name].annotation
                        assert annotation is not None  # every LENIENT_FIELDS entry is a declared field
                        TypeAdapter(annotation).validate_python(data[name])
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
                raise ValueError(
                    f"pattern {pattern[:40]!r}... is {len(pattern)} characters long (the limit is {MAX_PATTERN_CHARS})"
                )
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
            raise InvalidAdapter(
                CONFIG_NAME,
                [f"module name {module[:40]!r}... is {len(module)} characters long (the limit is {MAX_MODULE_CHARS})"],
                hint="module names are dotted paths in the base model",
            )
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
        hit = cfg.regex_match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", module)
        if hit:
            return int(hit.group("idx"))
    return None


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


# --- the consistency rules read_layout applies (header only, no torch) -----------------------------------------


def layout_problems(
    config: LoraConfig, header: Header, modules: dict[str, ModuleLayout], overrides: dict[str, TensorInfo]
) -> tuple[list[str], list[str]]:
    """(problems, unsupported features) of a parsed adapter: dtypes, A/B pairs and shapes vs ranks, lora_bias and
    DoRA consistency, and full parameters that nothing in the config explains."""
    problems = _dtype_problems(header)
    unsupported: list[str] = []
    for name, lay in sorted(modules.items()):
        problems += _module_problems(name, lay, config, unsupported)
    problems += _override_problems(overrides, modules, config)
    return problems, unsupported


def _dtype_problems(header: Header) -> list[str]:
    counts: dict[str, int] = {}
    for info in header.tensors.values():
        counts[info.dtype] = counts.get(info.dtype, 0) + 1
    float_dtypes = {d: n for d, n in counts.items() if d.startswith(("F", "BF"))}
    out = []
    if len(float_dtypes) > 1:
        out.append("mixed dtypes: " + ", ".join(f"{n} tensors {d}" for d, n in sorted(float_dtypes.items())))
    non_float = sorted(set(counts) - set(float_dtypes))
    if non_float:
        out.append(f"non-floating tensors ({', '.join(non_float)}) in an adapter")
    return out


def _module_problems(name: str, lay: ModuleLayout, config: LoraConfig, unsupported: list[str]) -> list[str]:
    if lay.a is None or lay.b is None:
        missing = " and ".join(p for p, t in (("lora_A", lay.a), ("lora_B", lay.b)) if t is None)
        return [f"module {name}: {missing} missing"]
    if len(lay.a.shape) != 2 or len(lay.b.shape) != 2:
        unsupported.append(f"LoRA on a {len(lay.a.shape)}-d weight (module {name}, e.g. Conv2d/Conv3d)")
        return []
    out: list[str] = []
    if config.target_modules not in (None, "all-linear") and not config.targets(name):
        out.append(f"module {name}: not matched by target_modules {config.target_modules!r} (PEFT would ignore its tensors)")
    r, out_f = lay.rank, lay.b.shape[0]
    if lay.a.shape[0] != r or lay.b.shape[1] != r:
        source = "rank_pattern" if config.pattern_key(config.rank_pattern, name) is not None else "r"
        out.append(
            f"module {name}: rank {r} from the config ({source}), but lora_A is {list(lay.a.shape)} and lora_B is {list(lay.b.shape)}"
        )
    if 0 in lay.a.shape or 0 in lay.b.shape:
        out.append(f"module {name}: empty LoRA tensor (unsharded ZeRO-3/FSDP save?)")
    if lay.b_bias is not None:
        if lay.kind is LayerKind.EMBEDDING or not config.lora_bias:
            out.append(f"module {name}: has lora_B.bias but lora_bias is false")
        elif lay.b_bias.shape != (out_f,):
            out.append(f"module {name}: lora_B.bias has shape {list(lay.b_bias.shape)}, expected [{out_f}]")
    elif config.lora_bias and lay.kind is LayerKind.LINEAR:
        out.append(f"module {name}: lora_bias is true but lora_B.bias is missing")
    if lay.magnitude is not None:
        if not config.use_dora:
            out.append(f"module {name}: has a DoRA magnitude vector but use_dora is false")
        elif lay.magnitude.shape != (out_f,):
            out.append(f"module {name}: magnitude has shape {list(lay.magnitude.shape)}, expected [{out_f}]")
    elif config.use_dora:
        out.append(f"module {name}: use_dora is true but the magnitude vector is missing")
    return out


def override_reason(param: str, modules: dict[str, ModuleLayout], config: LoraConfig) -> str | None:
    """Why PEFT saved this full parameter: "modules_to_save", "bias" or "embedding"; None if nothing explains it."""
    module, _, leaf = param.rpartition(".")
    if config.saves_module(module):
        return "modules_to_save"
    if leaf == "bias" and (config.bias == "all" or (config.bias == "lora_only" and module in modules)):
        return "bias"
    lay = modules.get(module)
    if leaf == "weight" and (
        (lay is not None and lay.kind is LayerKind.EMBEDDING) or module.rsplit(".", 1)[-1] in EMBEDDING_MODULE_NAMES
    ):
        return "embedding"  # PEFT's save_embedding_layers (embedding targeted, or vocabulary resized)
    return None


def _override_problems(overrides: dict[str, TensorInfo], modules: dict[str, ModuleLayout], config: LoraConfig) -> list[str]:
    out = []
    for param in sorted(overrides):
        if override_reason(param, modules, config) is None:
            out.append(f"unknown key {param!r}: not a LoRA tensor, and not saved by modules_to_save, bias or embedding layers")
    return out
