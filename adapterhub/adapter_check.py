"""Check one adapter folder on its own (no base model) and report every problem instead of stopping at the first.

`peft_format.read_layout` answers "can this be used?" by raising; `check_adapter` answers "what is wrong with it?"
for `adapterhub check`/`push`: config, header, key names, shapes vs ranks, DoRA/bias consistency, NaN/Inf, dtypes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .errors import AdapterHubError, PickleRefused, UnsupportedFeature
from .peft_format import (
    EMBEDDING_MODULE_NAMES,
    AdapterLayout,
    LayerKind,
    LoraConfig,
    ModuleLayout,
    nonfinite_tensors,
    read_layout,
)
from .tensorfile import Header, TensorInfo

ProblemKind = Literal["refused", "unreadable", "unsupported", "invalid", "nonfinite"]


class Problem(BaseModel):
    """One finding: `kind` says how bad (refused/unreadable stop the check; the rest are listed together)."""

    kind: ProblemKind
    message: str


class AdapterReport(BaseModel):
    """What `check_adapter` found: a summary of the adapter and every problem; `ok` means none."""

    path: str
    ok: bool
    method: str | None = None  # "lora" or "dora"
    peft_version: str | None = None
    base_model: str | None = None
    task_type: str | None = None
    target_modules: list[str] = Field(default_factory=list)  # distinct last-segment names of the LoRA modules
    ranks: dict[str, int] = Field(default_factory=dict)  # module path -> rank
    dtypes: list[str] = Field(default_factory=list)
    overrides: dict[str, str] = Field(default_factory=dict)  # full parameter -> why PEFT saved it
    tensors: int = 0
    problems: list[Problem] = Field(default_factory=list)

    def messages(self) -> list[str]:
        return [f"{p.kind}: {p.message}" for p in self.problems]


def check_adapter(folder: Path | str, *, check_values: bool = True) -> AdapterReport:
    """Read `folder` without stopping at the first problem; `check_values` also scans every tensor for NaN/Inf."""
    folder = Path(folder)
    try:
        layout = read_layout(folder, strict=False)
    except PickleRefused as exc:
        return AdapterReport(path=str(folder), ok=False, problems=[Problem(kind="refused", message=str(exc))])
    except UnsupportedFeature as exc:
        return AdapterReport(path=str(folder), ok=False, problems=[Problem(kind="unsupported", message=str(exc))])
    except AdapterHubError as exc:
        return AdapterReport(path=str(folder), ok=False, problems=[Problem(kind="unreadable", message=str(exc))])
    problems = [Problem(kind="unsupported", message=m) for m in dict.fromkeys(layout.unsupported)]
    problems += [Problem(kind="invalid", message=m) for m in layout.problems]
    if check_values:
        problems += [Problem(kind="nonfinite", message=f"tensor {n!r} holds NaN or Inf") for n in sorted(nonfinite_tensors(layout))]
    return _report(layout, problems)


def _report(layout: AdapterLayout, problems: list[Problem]) -> AdapterReport:
    cfg = layout.config
    return AdapterReport(
        path=str(layout.folder),
        ok=not problems,
        method=layout.method,
        peft_version=cfg.peft_version,
        base_model=cfg.base_model_name_or_path,
        task_type=cfg.task_type,
        target_modules=layout.target_module_names,
        ranks=layout.rank_by_module,
        dtypes=sorted({t.dtype for t in layout.header.tensors.values()}),
        overrides={p: override_reason(p, layout.modules, cfg) or "unknown" for p in sorted(layout.overrides)},
        tensors=len(layout.header.tensors),
        problems=problems,
    )


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
