"""Does an adapter fit a base model? Answered from safetensors headers and configs alone (no weights loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidModel
from .peft_format import AdapterLayout, LayerKind
from .tensorfile import TensorInfo, read_header


@dataclass(frozen=True)
class BaseTensors:
    """Every tensor of a base model by name, from its headers."""

    tensors: dict[str, TensorInfo]

    @classmethod
    def from_path(cls, path: Path | str) -> BaseTensors:
        from .fingerprint import resolve_model_files

        tensors: dict[str, TensorInfo] = {}
        for f in resolve_model_files(Path(path)):
            tensors.update(read_header(f, error=InvalidModel).tensors)
        return cls(tensors)

    def resolve(self, param: str) -> str | None:
        """The base tensor name for an adapter-side parameter path, tolerating a task-head prefix on either side
        (PEFT paths of `BertForSequenceClassification` start with `bert.`, a BertModel checkpoint's do not)."""
        if param in self.tensors:
            return param
        parts = param.split(".")
        for i in range(1, len(parts) - 1):
            if ".".join(parts[i:]) in self.tensors:
                return ".".join(parts[i:])
        hits = [n for n in self.tensors if n.endswith("." + param)]
        return hits[0] if len(hits) == 1 else None


def expected_shape_problems(layout: AdapterLayout, base: BaseTensors) -> list[str]:
    """One line per LoRA module that is missing from the base or whose shape does not match, with both shapes."""
    problems: list[str] = []
    fan = layout.config.fan_in_fan_out
    for name, mod in sorted(layout.modules.items()):
        base_name = base.resolve(f"{name}.weight")
        if base_name is None:
            problems.append(f"module {name}: not found in the base model")
            continue
        found = base.tensors[base_name].shape
        expected = mod.base_weight_shape(fan)
        if expected is None:
            continue
        if tuple(found) == tuple(expected):
            continue
        if mod.kind is LayerKind.LINEAR and len(found) == 2 and not fan and tuple(found) == tuple(reversed(expected)):
            problems.append(
                f"module {name}: base weight is {list(found)} (stored [in, out] like GPT-2's Conv1D) but fan_in_fan_out is false"
            )
        else:
            problems.append(f"module {name}: expected base weight shape {list(expected)}, found {list(found)}")
    for param, info in sorted(layout.overrides.items()):
        base_name = base.resolve(param)
        if base_name is None:
            # a new head (modules_to_save on a layer the base checkpoint lacks, e.g. a classifier) is allowed
            continue
        if tuple(base.tensors[base_name].shape) != tuple(info.shape):
            problems.append(
                f"parameter {param}: expected shape {list(base.tensors[base_name].shape)}, found {list(info.shape)}"
            )
    return problems
