"""Does each module of an adapter fit a base model's weights? The pure shape rules, from headers alone.

`BaseTensors` is a base model's tensors by name (from `modelfiles.read_model_headers`: shards, index and duplicate
checks included); `shape_issues` lists every adapter module whose base weight is missing or mis-shaped. Used by
`compatibility.validate` and by `Registry.add` (one rule, tied embeddings included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from .modelfiles import read_model_config, read_model_headers
from .peft_format import AdapterLayout, LayerKind
from .tensorfile import TensorInfo

# Names under which a checkpoint with tied embeddings omits the output projection (it reuses the input embedding).
OUTPUT_HEADS = ("lm_head", "embed_out")  # output heads a tied base does not store
INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


@dataclass(frozen=True)
class BaseTensors:
    """Every tensor of a base model by name, from its headers (no weights loaded)."""

    tensors: dict[str, TensorInfo]

    @classmethod
    def from_path(cls, path: Path | str) -> BaseTensors:
        return cls(read_model_headers(path).tensors)

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


class ModuleIssue(BaseModel):
    """One adapter module (or full-parameter override) that does not fit the base."""

    module: str
    problem: Literal["missing", "shape"]
    expected: list[int] | None = None  # the base weight shape the adapter needs
    found: list[int] | None = None  # what the base has (None when missing)
    detail: str = ""

    def describe(self) -> str:
        if self.problem == "missing":
            return f"module {self.module}: not found in the base model (needs a weight of shape {self.expected})" + (
                f" ({self.detail})" if self.detail else ""
            )
        return f"module {self.module}: expected base weight shape {self.expected}, found {self.found}" + (
            f" ({self.detail})" if self.detail else ""
        )


def shape_issues(layout: AdapterLayout, base: BaseTensors, tied_embeddings: bool = False) -> list[ModuleIssue]:
    """Each adapter module whose base weight is absent or has another shape than the adapter's factors imply."""
    issues: list[ModuleIssue] = []
    fan = layout.config.fan_in_fan_out
    for name, lay in sorted(layout.modules.items()):
        expected = lay.base_weight_shape(fan)
        info = _base_weight(base, f"{name}.weight", tied_embeddings)
        if info is None:
            issues.append(ModuleIssue(module=name, problem="missing", expected=_list(expected)))
        elif expected is not None and tuple(info.shape) != tuple(expected):
            issue = ModuleIssue(module=name, problem="shape", expected=list(expected), found=list(info.shape))
            if lay.kind is LayerKind.LINEAR and not fan and tuple(info.shape) == tuple(reversed(expected)):
                issue.detail = "the base stores it [in, out] like GPT-2's Conv1D but fan_in_fan_out is false"
            elif len(info.shape) != 2:
                issue.detail = f"a {len(info.shape)}-d weight: LoRA applies to Linear, Conv1D and Embedding layers"
            issues.append(issue)
    for param, t in sorted(layout.overrides.items()):
        info = _base_weight(base, param, tied_embeddings)
        if info is None:
            # the runtime replaces existing parameters only; a head the base lacks cannot be attached
            issues.append(ModuleIssue(module=param, problem="missing", expected=list(t.shape),
                                      detail="a full parameter (modules_to_save) the base does not have"))  # fmt: skip
        elif tuple(info.shape) != tuple(t.shape):
            issues.append(ModuleIssue(module=param, problem="shape", expected=list(t.shape), found=list(info.shape)))
    return issues


def path_prefix_warning(layout: AdapterLayout, base: BaseTensors) -> str | None:
    """A warning when the adapter's module paths match the checkpoint only after adding or dropping a prefix
    (an adapter trained on `BertForSequenceClassification` on a `BertModel` checkpoint, or the reverse)."""
    for name in sorted(layout.modules):
        found = base.resolve(f"{name}.weight")
        if found is not None and found != f"{name}.weight":
            return (
                f"module paths differ from the checkpoint's by a prefix ({name} is stored as {found.removesuffix('.weight')}); "
                "attaching needs a model class whose module tree uses the adapter's paths"
            )
    return None


def tied_embeddings(base: Path) -> bool:
    """Whether the base's config ties the output head to the input embedding (transformers' default: yes)."""
    raw = read_model_config(base)
    if raw is None:
        return False
    text = raw.get("text_config")
    text_cfg: dict[str, Any] = text if isinstance(text, dict) else {}
    return bool(raw.get("tie_word_embeddings", text_cfg.get("tie_word_embeddings", True)))


def _base_weight(base: BaseTensors, param: str, tied: bool) -> TensorInfo | None:
    name = base.resolve(param)
    if name is not None:
        return base.tensors[name]
    if tied and param.rsplit(".", 2)[-2] in OUTPUT_HEADS:
        # tied output head: the checkpoint stores only the input embedding, which has the same shape
        return next((t for k, t in base.tensors.items() if k.endswith(INPUT_EMBEDDINGS)), None)
    return None


def _list(shape: tuple[int, ...] | None) -> list[int] | None:
    return list(shape) if shape is not None else None
