"""Check one adapter folder on its own (no base model) and report every problem instead of stopping at the first.

`peft_format.read_layout` answers "can this be used?" by raising; `check_adapter` (public: `adapterhub.check_adapter`)
answers "what is wrong with it?": config, header, key names, shapes vs ranks, DoRA/bias consistency, NaN/Inf, dtypes.
The consistency rules themselves (`layout_problems`) live in `peft_format`, next to the parser that applies them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .errors import AdapterHubError, PickleRefused, UnsupportedFeature
from .peft_format import AdapterLayout, nonfinite_tensors, override_reason, read_layout

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
        problems += [
            Problem(kind="nonfinite", message=f"tensor {n!r} holds NaN or Inf") for n in sorted(nonfinite_tensors(layout))
        ]
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
