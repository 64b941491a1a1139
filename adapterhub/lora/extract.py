"""Extract a LoRA adapter from a fine-tuned model: a low-rank SVD of (finetuned − base), one tensor at a time.

Only 2-D linear weights are extracted (embeddings and the output head unless named in `targets`); other
changed tensors (norms, biases) are reported, not captured. The adapter is written with lora_alpha = r
(scaling 1) and exact module paths as targets, so PEFT applies exactly the delta computed here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel

from ..card import AdapterCard, Lineage
from ..errors import InvalidModel, UsageError
from ..modelfiles import model_type
from ..peft_format import LayerKind, LoraConfig
from ..peft_weights import LoraModule, PeftAdapter, save_adapter
from ..progress import progress_bar
from ..sources import registry_or_default
from .compose_methods import low_rank
from .stream import FLOAT_DTYPES, SourceTensor, model_tensors, one_intra_op_thread, read_tensor

if TYPE_CHECKING:
    from ..store.registry import Registry

# Checkpoint tensors that are not Linear weights although they are 2-D (PEFT's all-linear leaves them out too).
_NOT_LINEAR = ("embed", "wte", "wpe", "lm_head", "embeddings", "shared")
# Model types whose linear layers are transformers' Conv1D (weights stored [in, out]).
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "decision_transformer", "imagegpt"})


class ExtractResult(BaseModel):
    rank: int
    modules: int
    energy: dict[str, float]  # per module: kept σ² / total σ² of (finetuned − base)
    not_captured: list[str]  # changed tensors that are not targeted 2-D linear weights
    out: str | None = None
    card: AdapterCard | None = None


def _is_target(module: str, targets: list[str] | None) -> bool:
    if targets:
        return any(module == t or module.endswith("." + t) for t in targets)
    return not any(part in module.split(".")[-1] or part in module.split(".") for part in _NOT_LINEAR)


def low_rank_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A [r, in], B [out, r], retained energy) with B @ A the best rank-r approximation of `delta` [out, in]."""
    f = low_rank(delta, rank)
    return f.lora_A, f.lora_B, float(f.energy if f.energy is not None else 1.0)


def extract_adapter(
    base: str | Path, finetuned: str | Path, rank: int, *, targets: list[str] | None = None, progress: bool | None = None
) -> tuple[PeftAdapter, dict[str, float], list[str]]:
    """The library core: (adapter in memory, energy per module, changed tensors not captured)."""
    if rank < 1:
        raise UsageError(f"rank must be at least 1, got {rank}")
    base_t = model_tensors(base)
    fine_t = model_tensors(finetuned)
    missing = sorted(set(base_t) ^ set(fine_t))
    if missing:
        raise InvalidModel(str(finetuned), [f"tensor {n} is in only one of the two models" for n in missing[:5]],
                           hint="extract needs the fine-tuned model saved with the same architecture as the base")  # fmt: skip
    fifo = model_type(Path(base)) in _CONV1D_MODEL_TYPES
    modules: dict[str, LoraModule] = {}
    energy: dict[str, float] = {}
    not_captured: list[str] = []
    total = sum(s.info.nbytes for s in base_t.values())
    bar = progress_bar(total, "extract", enabled=progress)
    try:
        for name, bsrc in base_t.items():
            fsrc = fine_t[name]
            bar.update(bsrc.info.nbytes)
            if bsrc.info.shape != fsrc.info.shape:
                raise InvalidModel(
                    str(finetuned), [f"tensor {name} is {list(fsrc.info.shape)} but {list(bsrc.info.shape)} in the base"]
                )
            if bsrc.info.dtype not in FLOAT_DTYPES or fsrc.info.dtype not in FLOAT_DTYPES:
                continue
            module, _, leaf = name.rpartition(".")
            linear = leaf == "weight" and len(bsrc.info.shape) == 2 and _is_target(module, targets)
            if not linear and _same_bytes(bsrc, fsrc):
                continue
            delta = read_tensor(fsrc).to(torch.float32) - read_tensor(bsrc).to(torch.float32)
            if not bool(delta.any()):
                continue
            if not linear:
                not_captured.append(name)
                continue
            if fifo:
                delta = delta.T  # Conv1D stores [in, out]; LoRA's B @ A is [out, in]
            a, b, e = low_rank_factors(delta, rank)
            del delta
            modules[module] = LoraModule(module, LayerKind.LINEAR, a, b, a.shape[0], float(a.shape[0]), 1.0)
            energy[module] = e
    finally:
        bar.close()
    if not modules:
        raise UsageError("no targeted linear weight differs between the two models",
                         hint="check --targets and that --finetuned really is a fine-tune of --base")  # fmt: skip
    pattern = {m.replace(".", r"\."): lm.rank for m, lm in sorted(modules.items()) if lm.rank != rank}
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=sorted(modules), rank_pattern=pattern,
        alpha_pattern={k: float(v) for k, v in pattern.items()}, fan_in_fan_out=fifo, base_model_name_or_path=str(base),
    )  # fmt: skip
    return PeftAdapter(config, modules), energy, not_captured


def _same_bytes(a: SourceTensor, b: SourceTensor) -> bool:
    # cheap pre-check for non-target tensors: identical bytes need no float comparison
    if a.info.dtype != b.info.dtype or a.info.nbytes != b.info.nbytes:
        return False
    with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
        fa.seek(a.info.start)
        fb.seek(b.info.start)
        left = a.info.nbytes
        while left:
            n = min(left, 16 * 1024 * 1024)
            if fa.read(n) != fb.read(n):
                return False
            left -= n
    return True


def extract(
    base: str | Path,
    finetuned: str | Path,
    rank: int,
    *,
    targets: list[str] | None = None,
    name: str | None = None,
    out: str | Path | None = None,
    task: str = "extracted",
    registry: Registry | None = None,
    register: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
) -> ExtractResult:
    """Extract a rank-`rank` adapter of (finetuned − base), write it, and register it against `base` as `name`."""
    if register and not name:
        raise UsageError("extract needs --name NS/NAME to register the adapter", hint="or pass out= with register=False")
    if not register and out is None:
        raise UsageError("extract with register=False needs out= (a folder to write)")
    with one_intra_op_thread():
        adapter, energy, not_captured = extract_adapter(base, finetuned, rank, targets=targets, progress=progress)
    tmp_root = None
    folder = Path(out) if out is not None else None
    if folder is None:
        tmp_root = Path(tempfile.mkdtemp(prefix="adapterhub-extract-"))
        folder = tmp_root / "adapter"
    card = None
    try:
        save_adapter(adapter, folder, overwrite=overwrite)
        if register:
            assert name is not None  # checked above: register needs a name
            reg = registry_or_default(registry)
            base_info = reg.register_base(base)
            lineage = Lineage(method="extract", base=base_info.content_hash,
                              params={"rank": rank, "finetuned": str(Path(finetuned).resolve()), "targets": targets})  # fmt: skip
            card = reg.add(folder, name=name, task=task, base=base, lineage=lineage,
                           description=f"rank-{rank} LoRA extracted from {Path(finetuned).name}")  # fmt: skip
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    return ExtractResult(rank=rank, modules=len(adapter.modules), energy=energy, not_captured=not_captured,
                         out=str(out) if out is not None else None, card=card)  # fmt: skip
