"""PEFT's tensor key names: the saved spelling of a key (`normalize_key`) and what a key names (`parse_key`): a
module path and a LoRA part (A, B, bias, DoRA magnitude) or a full parameter that overrides the base's.
Part of PEFT's format (`peft_format` re-exports these names); no torch, no files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .errors import UnsupportedFeature

KEY_PREFIX = "base_model.model."
DEFAULT_ADAPTER_NAME = "default"


class LayerKind(str, Enum):
    LINEAR = "linear"  # nn.Linear, or transformers' Conv1D when fan_in_fan_out is set
    EMBEDDING = "embedding"


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
    k = key[len(KEY_PREFIX) :] if key.startswith(KEY_PREFIX) else key
    for suffix, (part, kind) in _LORA_SUFFIXES.items():
        if k.endswith("." + suffix):
            return ParsedKey(k[: -len(suffix) - 1], part, kind)
    if _FOREIGN_PART.search("." + k):
        raise UnsupportedFeature(f"tensor {key!r}", where="not a LoRA/DoRA parameter adapterhub can apply")
    module, _, _leaf = k.rpartition(".")
    return ParsedKey(module, "override", None, param=k)
