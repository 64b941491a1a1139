"""Does an adapter fit a base model? Decided from safetensors headers and configs only: no tensor is loaded.

Three outcomes: exact (the very base it was registered with), compatible (same shapes, other weights: allowed with a
warning naming the base it was trained on), incompatible (names every missing or mis-shaped module and every PEFT
feature the attach runtime cannot apply).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from .card import AdapterCard, AdapterRef, BaseModelRefInfo
from .compat import BaseTensors
from .errors import BaseModelNotFound, UnsupportedFeature
from .peft_format import AdapterLayout, LayerKind, read_config, read_layout
from .tensorfile import TensorInfo

if TYPE_CHECKING:
    from .store.registry import Registry

# LoraConfig fields that change the forward pass in ways the attach runtime does not implement. A field counts only
# when set to something other than its PEFT default (None/False/empty). Init-only fields (loftq, eva, corda, ...) are
# harmless at inference and not listed.
UNSUPPORTED_CONFIG_FIELDS: dict[str, str] = {
    "layer_replication": "layer_replication (duplicated decoder layers)",
    "target_parameters": "target_parameters (LoRA on raw nn.Parameters, e.g. MoE experts)",
    "trainable_token_indices": "trainable_token_indices (trainable token embeddings)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "use_qalora": "QALoRA (use_qalora)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "arrow_config": "Arrow routing (arrow_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "velora_config": "VeLoRA (velora_config)",
    "kasa_config": "KaSA (kasa_config)",
    "megatron_config": "Megatron parallel layers (megatron_config)",
}
# Names under which a checkpoint with tied embeddings omits the output projection (it reuses the input embedding).
_OUTPUT_HEADS = ("lm_head", "embed_out")
_INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


class Outcome(str, Enum):
    EXACT = "exact"  # the base's content hash is the one the adapter was registered with
    COMPATIBLE = "compatible"  # every target module fits; the weights differ or were never recorded
    INCOMPATIBLE = "incompatible"  # a module is missing or mis-shaped, or a feature cannot be applied


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


class CompatibilityReport(BaseModel):
    """The verdict for one adapter on one base, with the evidence behind it."""

    adapter: str  # what was asked for: a reference or a folder
    adapter_ref: str | None = None  # namespace/name@version when it came from the registry
    adapter_path: str
    base: str
    outcome: Outcome
    method: str  # lora | dora
    rank: int
    target_modules: list[str] = Field(default_factory=list)
    modules_checked: int = 0
    trained_on: BaseModelRefInfo | None = None  # the base recorded at registration; None for a bare folder
    base_arch_hash: str | None = None
    base_content_hash: str | None = None  # computed only when there is a recorded base to compare with
    issues: list[ModuleIssue] = Field(default_factory=list)
    unsupported: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.INCOMPATIBLE

    def problems(self) -> list[str]:
        """One line per reason it is incompatible (empty when it fits)."""
        return [f"unsupported: {u}" for u in self.unsupported] + [i.describe() for i in self.issues]


def validate(adapter: str | Path, base: str | Path, *, registry: Registry | None = None) -> CompatibilityReport:
    """Check `adapter` (a registry reference or a PEFT folder) against the model at `base` (folder or .safetensors)."""
    folder, card = resolve_adapter(adapter, registry)
    base_path = Path(base)
    if not base_path.exists():
        raise BaseModelNotFound(str(base_path))
    base_tensors = BaseTensors.from_path(base_path)
    report = CompatibilityReport(
        adapter=str(adapter),
        adapter_ref=card.ref if card else None,
        adapter_path=str(folder),
        base=str(base_path),
        outcome=Outcome.COMPATIBLE,
        method=card.method.value if card else "lora",
        rank=card.rank if card else 0,
        trained_on=card.base_model if card else None,
    )
    try:
        config = read_config(folder)
        report.method, report.rank = ("dora" if config.use_dora else "lora"), config.r
        report.unsupported.extend(unsupported_config_features(config.model_dump(mode="json")))
        layout = read_layout(folder)
    except UnsupportedFeature as exc:  # other PEFT methods, tensors of other methods, LoRA on Conv2d
        report.unsupported.append(exc.message)
        report.outcome = Outcome.INCOMPATIBLE
        return report
    report.target_modules = layout.target_module_names
    report.modules_checked = len(layout.modules) + len(layout.overrides)
    report.unsupported.extend(_unsupported_in_layout(layout))
    report.issues = shape_issues(layout, base_tensors, tied_embeddings(base_path))
    prefix = path_prefix_warning(layout, base_tensors)
    if prefix:
        report.warnings.append(prefix)
    if report.issues or report.unsupported:
        report.outcome = Outcome.INCOMPATIBLE
        return report
    if card is None or card.base_model is None:
        report.notes.append("no recorded base for this adapter: judged from module shapes alone")
        return report
    _compare_with_recorded_base(report, card.base_model, base_path)
    return report


def resolve_adapter(adapter: str | Path, registry: Registry | None = None) -> tuple[Path, AdapterCard | None]:
    """A PEFT folder as is, or a registry reference -> (its local folder, its card)."""
    path = Path(adapter)
    if path.is_dir():
        return path, None
    text = str(adapter)
    AdapterRef.parse(text)  # a path that does not exist and is not a reference: InvalidReference (exit 2)
    if registry is None:
        from .store.registry import Registry

        registry = Registry()
    card = registry.get(text)
    return Path(registry.adapter_path(card.ref)), card


def unsupported_config_features(raw: dict[str, Any]) -> list[str]:
    """Config fields set to a non-default value that the attach runtime does not implement."""
    return [label for key, label in UNSUPPORTED_CONFIG_FIELDS.items() if raw.get(key) not in (None, False, [], {}, "")]


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


# --- helpers -------------------------------------------------------------------------------------------------


def _compare_with_recorded_base(report: CompatibilityReport, recorded: BaseModelRefInfo, base: Path) -> None:
    from .fingerprint import fingerprint

    fp = fingerprint(base)
    report.base_arch_hash, report.base_content_hash = fp.arch_hash, fp.content_hash
    if fp.content_hash == recorded.content_hash:
        report.outcome = Outcome.EXACT
        return
    trained = f"{recorded.name} (content {recorded.content_hash[:12]})"
    if fp.arch_hash == recorded.arch_hash:
        report.warnings.append(f"same architecture but different weights: the adapter was trained on {trained}")
    else:
        report.warnings.append(
            f"different architecture hash (dtype or extra tensors differ) but every target module fits; "
            f"the adapter was trained on {trained}"
        )


def _unsupported_in_layout(layout: AdapterLayout) -> list[str]:
    out = []
    if layout.config.use_dora:
        emb = [m for m, lay in layout.modules.items() if lay.kind is LayerKind.EMBEDDING]
        if emb:
            out.append(f"DoRA on Embedding layers ({', '.join(sorted(emb)[:3])})")
    return out


def _base_weight(base: BaseTensors, param: str, tied: bool) -> TensorInfo | None:
    name = base.resolve(param)
    if name is not None:
        return base.tensors[name]
    if tied and param.rsplit(".", 2)[-2] in _OUTPUT_HEADS:
        # tied output head: the checkpoint stores only the input embedding, which has the same shape
        return next((t for k, t in base.tensors.items() if k.endswith(_INPUT_EMBEDDINGS)), None)
    return None


def tied_embeddings(base: Path) -> bool:
    cfg = base / "config.json" if base.is_dir() else base.parent / "config.json"
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    text_cfg = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
    return bool(raw.get("tie_word_embeddings", text_cfg.get("tie_word_embeddings", True)))


def _list(shape: tuple[int, ...] | None) -> list[int] | None:
    return list(shape) if shape is not None else None
