"""Does an adapter fit a base model? Decided from safetensors headers and configs only: no tensor is loaded.

Three outcomes: exact (the very base it was registered with), compatible (same shapes, other weights: allowed with a
warning naming the base it was trained on), incompatible (names every missing or mis-shaped module and every PEFT
feature the attach runtime cannot apply).
"""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from .card import BaseModelRefInfo
from .errors import UnsupportedFeature
from .modelfiles import resolve_base
from .peft_format import AdapterLayout, LayerKind, read_config, read_layout
from .shapefit import BaseTensors, ModuleIssue, path_prefix_warning, shape_issues, tied_embeddings
from .sources import AdapterSpec, ResolvedAdapter, resolve

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


class Outcome(str, Enum):
    EXACT = "exact"  # the base's content hash is the one the adapter was registered with
    COMPATIBLE = "compatible"  # every target module fits; the weights differ or were never recorded
    INCOMPATIBLE = "incompatible"  # a module is missing or mis-shaped, or a feature cannot be applied


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


def validate(adapter: AdapterSpec, base: str | Path, *, registry: Registry | None = None) -> CompatibilityReport:
    """Check `adapter` (a registry reference or a PEFT folder) against the model at `base` (folder or .safetensors)."""
    source = resolve(adapter, registry)
    base_path = resolve_base(base)  # a folder, a file, a cache folder or a Hub id
    return check(source, base_path, BaseTensors.from_path(base_path))[0]


def check(
    source: ResolvedAdapter, base_path: Path, base_tensors: BaseTensors, *, tied: bool | None = None
) -> tuple[CompatibilityReport, ResolvedAdapter]:
    """The verdict for a resolved adapter on a base whose headers are read already, and the adapter again with the
    layout this check parsed (for `load_adapter`, so nothing is parsed twice)."""
    card = source.card
    report = CompatibilityReport(
        adapter=source.asked or str(source.folder),
        adapter_ref=card.ref if card else None,
        adapter_path=str(source.folder),
        base=str(base_path),
        outcome=Outcome.COMPATIBLE,
        method=card.method.value if card else "lora",
        rank=card.rank if card else 0,
        trained_on=card.base_model if card else None,
    )
    try:
        config = read_config(source.folder)
        report.method, report.rank = ("dora" if config.use_dora else "lora"), config.r
        report.unsupported.extend(unsupported_config_features(config.model_dump(mode="json")))
        layout = read_layout(source.folder)
    except UnsupportedFeature as exc:  # other PEFT methods, tensors of other methods, LoRA on Conv2d
        report.unsupported.append(exc.message)
        report.outcome = Outcome.INCOMPATIBLE
        return report, source
    source = replace(source, layout=layout)
    report.target_modules = layout.target_module_names
    report.modules_checked = len(layout.modules) + len(layout.overrides)
    report.unsupported.extend(_unsupported_in_layout(layout))
    report.issues = shape_issues(layout, base_tensors, tied_embeddings(base_path) if tied is None else tied)
    prefix = path_prefix_warning(layout, base_tensors)
    if prefix:
        report.warnings.append(prefix)
    if report.issues or report.unsupported:
        report.outcome = Outcome.INCOMPATIBLE
        return report, source
    if card is None or card.base_model is None:
        report.notes.append("no recorded base for this adapter: judged from module shapes alone")
        return report, source
    _compare_with_recorded_base(report, card.base_model, base_path)
    return report, source


def unsupported_config_features(raw: dict[str, Any]) -> list[str]:
    """Config fields set to a non-default value that the attach runtime does not implement."""
    return [label for key, label in UNSUPPORTED_CONFIG_FIELDS.items() if raw.get(key) not in (None, False, [], {}, "")]


# --- helpers -------------------------------------------------------------------------------------------------


def _compare_with_recorded_base(report: CompatibilityReport, recorded: BaseModelRefInfo, base: Path) -> None:
    from .fingerprint import dtype_change, fingerprint

    fp = fingerprint(base)
    report.base_arch_hash, report.base_content_hash = fp.arch_hash, fp.content_hash
    if fp.content_hash == recorded.content_hash:
        report.outcome = Outcome.EXACT
        return
    trained = f"{recorded.name} (content {recorded.content_hash[:12]})"
    if fp.arch_hash == recorded.arch_hash:
        report.warnings.append(f"same architecture but different weights: the adapter was trained on {trained}")
    elif (change := dtype_change(base, recorded.arch_hash)) is not None:
        report.warnings.append(f"same architecture, {change[0]} -> {change[1]}: the adapter was trained on {trained}")
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
