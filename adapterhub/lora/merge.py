"""Merge adapters into standalone base weights, one tensor at a time, in bounded memory.

W' = W + Σ_i w_i · Δ_i for plain LoRA (PEFT's `merge_and_unload` with each adapter's scaling multiplied by w_i);
DoRA adapters are folded in the order given: each rescales the weight so far (plus its delta) by m / ||W + Δ||,
the norm taken on the unmerged base W, as PEFT does when it merges several adapters. An override
(modules_to_save, trained bias) moves the tensor to W + w·(O − W), i.e. replaces it at weight 1.
Untouched tensors are copied byte for byte; modified ones are read, merged in float32 and written in blocks of
rows, so peak memory is the adapters plus a few MB (DoRA on Conv1D, whose norm spans rows, takes one tensor).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel

from ..card import AdapterCard, BaseModelInfo, Lineage, ParentLink
from ..errors import IncompatibleAdapter, NonFiniteResult, UsageError
from ..fsutil import atomic_directory, atomic_writer
from ..modelfiles import INDEX_NAME, model_folder
from ..peft_format import LayerKind
from ..peft_weights import LoraModule, PeftAdapter, load_adapter
from ..progress import progress_bar
from ..shapefit import INPUT_EMBEDDINGS, OUTPUT_HEADS, tied_embeddings
from ..sources import needs_registry, registry_or_default, resolve
from ..tensorfile import PICKLE_SUFFIXES
from .delta import dora_norm, merged_weight_onto
from .stream import (
    FLOAT_DTYPES,
    TORCH_DTYPES,
    SourceTensor,
    StreamWriter,
    TensorSpec,
    model_tensors,
    one_intra_op_thread,
    parse_dtype,
    parse_size,
    plan_shards,
    read_row_chunks,
    read_tensor,
    shard_names,
    write_index,
)

if TYPE_CHECKING:
    from ..store.registry import Registry

AdapterArg = str | Path | tuple[str | Path, float]
# Files copied next to the merged weights: everything small at the top of the model folder but its weights.
_SKIP_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES, ".h5", ".msgpack", ".lock")


# --- adapter arguments: folder or registry reference --------------------------------------------------------


def normalize_adapter_args(adapters: list[AdapterArg] | tuple[AdapterArg, ...]) -> list[tuple[str | Path, float]]:
    out: list[tuple[str | Path, float]] = []
    for a in adapters:
        if isinstance(a, tuple):
            out.append((a[0], float(a[1])))
        else:
            out.append((a, 1.0))
    if not out:
        raise UsageError("no adapters given: pass at least one adapter folder or ns/name[@version]")
    return out


# --- mapping adapter module paths to checkpoint tensor names ------------------------------------------------


@dataclass(frozen=True)
class NameMap:
    """Adapter paths are relative to the model PEFT wrapped; the checkpoint may add or lack a leading prefix."""

    strip: str = ""
    add: str = ""

    def __call__(self, param: str) -> str:
        return self.add + param[len(self.strip) :] if param.startswith(self.strip) else self.add + param


def _candidates(param: str, names: set[str], suffix_index: dict[str, list[str]]) -> list[NameMap]:
    parts = param.split(".")
    out: list[NameMap] = []
    for k in range(len(parts)):
        strip = ".".join(parts[:k]) + "." if k else ""
        rest = ".".join(parts[k:])
        if rest in names:
            out.append(NameMap(strip, ""))
        hits = suffix_index.get(rest, [])
        if len(hits) == 1 and hits[0] != rest:
            out.append(NameMap(strip, hits[0][: -len(rest)]))
        if out:
            break
    return out


def resolve_name_map(params: list[str], names: set[str]) -> NameMap:
    """The prefix change that maps the most adapter parameters onto checkpoint names (identity when it fits)."""
    if all(p in names for p in params):
        return NameMap()
    suffix_index: dict[str, list[str]] = {}
    wanted = {".".join(p.split(".")[k:]) for p in params for k in range(len(p.split(".")))}
    for n in names:
        segs = n.split(".")
        for k in range(len(segs)):
            s = ".".join(segs[k:])
            if s in wanted:
                suffix_index.setdefault(s, []).append(n)
    votes = Counter(c for p in params for c in _candidates(p, names, suffix_index))
    return votes.most_common(1)[0][0] if votes else NameMap()


# --- the merge plan -----------------------------------------------------------------------------------------


@dataclass
class _Op:
    adapter: int  # index into the adapters list
    kind: str  # "lora", "bias", "override"
    module: str
    weight: float
    lora: LoraModule | None = None
    fan_in_fan_out: bool = False
    tensor: torch.Tensor | None = None


@dataclass
class _Loaded:
    arg: str  # as the user gave it (for messages)
    ref: str  # recorded in lineage
    weight: float
    adapter: PeftAdapter
    card: AdapterCard | None = None
    ops: dict[str, list[_Op]] = field(default_factory=dict)


def _expected_shape(m: LoraModule, fan_in_fan_out: bool) -> tuple[int, int]:
    if m.kind is LayerKind.EMBEDDING:
        return (m.lora_A.shape[1], m.lora_B.shape[0])
    out_f, in_f = m.lora_B.shape[0], m.lora_A.shape[1]
    return (in_f, out_f) if fan_in_fan_out else (out_f, in_f)


def plan_ops(loaded: list[_Loaded], tensors: dict[str, SourceTensor], base_label: str) -> dict[str, list[_Op]]:
    """For every checkpoint tensor an adapter changes: the operations, in adapter order. Raises on any mismatch."""
    names = set(tensors)
    plan: dict[str, list[_Op]] = {}
    replaced_by: dict[str, str] = {}
    for idx, la in enumerate(loaded):
        ad = la.adapter
        fifo = bool(ad.config.fan_in_fan_out)
        params = [f"{m}.weight" for m in ad.modules] + list(ad.overrides)
        nmap = resolve_name_map(params, names)
        problems: list[str] = []
        # overrides first: PEFT loads a saved base parameter (e.g. embed_tokens.base_layer.weight) into the
        # base layer, and the LoRA delta then acts on top of it
        for param, t in sorted(ad.overrides.items()):
            target = nmap(param)
            src = tensors.get(target)
            if src is None:
                problems.append(f"{param} (modules_to_save/bias): no tensor {target} in the base")
                continue
            if src.info.shape != tuple(t.shape):
                problems.append(f"{param}: base {target} is {list(src.info.shape)}, adapter has {list(t.shape)}")
                continue
            if target in replaced_by:
                raise UsageError(
                    f"adapters {replaced_by[target]} and {la.arg} both replace {target} (modules_to_save); merge one of them"
                )
            replaced_by[target] = la.arg
            plan.setdefault(target, []).append(_Op(idx, "override", param, la.weight, tensor=t))
        for mod, lm in sorted(ad.modules.items()):
            target = nmap(f"{mod}.weight")
            src = tensors.get(target)
            if src is None:
                problems.append(f"module {mod}: no tensor {target} in the base")
                continue
            want = _expected_shape(lm, fifo)
            if src.info.shape != want:
                problems.append(f"module {mod}: base {target} is {list(src.info.shape)}, adapter needs {list(want)}")
                continue
            plan.setdefault(target, []).append(_Op(idx, "lora", mod, la.weight, lm, fifo))
            if lm.lora_B_bias is not None:
                bias = nmap(f"{mod}.bias")
                if bias not in tensors:
                    problems.append(f"module {mod}: lora_bias needs {bias}, which the base lacks")
                else:
                    plan.setdefault(bias, []).append(_Op(idx, "bias", mod, la.weight, lm))
        if problems:
            raise IncompatibleAdapter(la.arg, base_label, problems)
    return plan


def apply_ops(name: str, base: torch.Tensor, ops: list[_Op], labels: list[str]) -> torch.Tensor:
    """The merged tensor in float32; checked finite after every adapter so a failure names the culprit."""
    w = base.to(torch.float32)
    # DoRA's norm is taken on the weight before this merge's LoRA ops (PEFT's rule); keep it only when needed
    needs_base = len(ops) > 1 and any(op.lora is not None and op.lora.magnitude is not None for op in ops)
    unmerged: torch.Tensor | None = None
    for op in ops:
        if op.kind == "lora":
            assert op.lora is not None
            if unmerged is None:
                unmerged = w.clone() if needs_base else w
            w = merged_weight_onto(w, unmerged, op.lora, fan_in_fan_out=op.fan_in_fan_out, weight=op.weight)
        elif op.kind == "bias":
            assert op.lora is not None and op.lora.lora_B_bias is not None
            w = w + op.lora.lora_B_bias.to(torch.float32) * (op.lora.scaling * op.weight)
        else:
            assert op.tensor is not None
            o = op.tensor.to(torch.float32)
            w = o if op.weight == 1.0 else w + op.weight * (o - w)
        if not bool(torch.isfinite(w).all()):
            raise NonFiniteResult(name, labels[op.adapter], op.module)
    return w


# --- the public function ------------------------------------------------------------------------------------


class MergeResult(BaseModel):
    """What `merge` wrote: the folder, its weight files, counts, and the registered base (when registered)."""

    out: str
    files: list[str]
    tensor_count: int
    merged_tensors: int  # tensors an adapter changed
    bytes_written: int
    dtype: str | None  # the forced output dtype, or None when each tensor kept its own
    parents: list[ParentLink]
    registered: BaseModelInfo | None = None


def merge(
    base: str | Path,
    adapters: list[AdapterArg],
    out: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    max_shard_size: str | int = "2GB",
    registry: Registry | None = None,
    register: bool = True,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> MergeResult:
    """Write base + weighted adapters as a standalone model folder at `out` (atomically) and register it."""
    out = Path(out)
    out_dtype = parse_dtype(dtype)
    shard_limit = parse_size(max_shard_size)
    args = normalize_adapter_args(adapters)
    base_path = Path(base)
    reg = registry_or_default(registry) if register or needs_registry([a for a, _ in args]) else None
    if not base_path.exists():
        # a registered base by name/hash is not a folder we can read here
        raise UsageError(f"base {base} is not a model folder or .safetensors file")
    tensors = model_tensors(base_path)

    loaded: list[_Loaded] = []
    for arg, weight in args:
        source = resolve(arg, reg)
        loaded.append(_Loaded(str(arg), source.label, weight, load_adapter(source.folder), source.card))
    labels = [la.arg for la in loaded]
    untied = untie_head(loaded, tensors, base_path)
    plan = plan_ops(loaded, tensors, str(base))
    # fingerprint the base before writing anything: a failure here leaves no unregistered output behind
    base_info = reg.register_base(base_path) if register and reg is not None else None

    specs: list[TensorSpec] = []
    for t in tensors.values():
        dt = out_dtype if (out_dtype and t.info.dtype in FLOAT_DTYPES) else t.info.dtype
        specs.append(TensorSpec(t.name, dt, t.info.shape))
    shards = plan_shards(specs, shard_limit)
    fnames = shard_names(len(shards))
    total = sum(s.nbytes for s in specs)

    with atomic_directory(out, overwrite=overwrite) as tmp, one_intra_op_thread():
        bar = progress_bar(total, f"merge -> {out.name}", enabled=progress)
        try:
            for fname, shard in zip(fnames, shards):
                with atomic_writer(tmp / fname) as fh:
                    writer = StreamWriter(fh, shard, {"format": "pt"})
                    for spec in shard:
                        _write_one(writer, spec, tensors[spec.name], plan.get(spec.name), labels)
                        bar.update(spec.nbytes)
                    writer.close()
        finally:
            bar.close()
        if len(shards) > 1:
            write_index(tmp, list(zip(fnames, shards)))
        _copy_side_files(base_path, tmp, out_dtype)
        if untied:
            _write_untied_config(tmp / "config.json")

    parents = [ParentLink(ref=la.ref, weight=la.weight) for la in loaded]
    registered = None
    if register:
        assert reg is not None and base_info is not None
        lineage = Lineage(method="merge", parents=parents, base=base_info.content_hash,
                          params={"dtype": out_dtype, "order": [la.ref for la in loaded]})  # fmt: skip
        registered = reg.register_base(out, name=name, lineage=lineage)
    files = [*fnames, *([INDEX_NAME] if len(shards) > 1 else [])]
    return MergeResult(out=str(out), files=files, tensor_count=len(specs), merged_tensors=len(plan), bytes_written=total,
                       dtype=out_dtype, parents=parents, registered=registered)  # fmt: skip


_CHUNK_ELEMENTS = 1 << 20  # rows are merged 1M elements (4 MB of float32) at a time: cache-sized, no big allocations


def _all_finite(t: torch.Tensor) -> bool:
    # a sum is one fast pass and any NaN/Inf poisons it; only a (rare) non-finite sum pays for the exact check
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _row_local(op: _Op) -> bool:
    """Whether the op can be applied to a block of rows alone (all but DoRA on a transposed layout)."""
    if op.kind != "lora" or op.lora is None or op.lora.magnitude is None:
        return True
    return not (op.fan_in_fan_out or op.lora.kind is LayerKind.EMBEDDING)


def _factors(op: _Op) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(L, R, alpha) with weight·delta = alpha · L @ R in the checkpoint's layout, so rows of L are rows of W."""
    m = op.lora
    assert m is not None
    a, b = m.lora_A.to(torch.float32), m.lora_B.to(torch.float32)
    transposed = op.fan_in_fan_out or m.kind is LayerKind.EMBEDDING
    return (a.T.contiguous(), b.T.contiguous(), m.scaling * op.weight) if transposed else (b, a, m.scaling * op.weight)


def _merged_chunks(
    name: str, src: SourceTensor, ops: list[_Op], out_dtype: torch.dtype, labels: list[str]
) -> Iterator[torch.Tensor]:
    """The merged tensor, row block by row block, in `out_dtype`; same numbers as `apply_ops` (float32 math)."""
    factors = {id(op): _factors(op) for op in ops if op.kind == "lora"}
    needs_base = len(ops) > 1 and any(op.lora is not None and op.lora.magnitude is not None for op in ops)
    for r0, r1, raw in read_row_chunks(src, _CHUNK_ELEMENTS):
        w = raw.to(torch.float32)  # for float32 input this is the read buffer itself: fine, it is re-read per block
        unmerged = w.clone() if needs_base else None
        for op in ops:
            if op.kind == "lora":
                assert op.lora is not None
                left, right, alpha = factors[id(op)]
                if op.lora.magnitude is None:
                    w.addmm_(left[r0:r1], right, alpha=alpha)
                else:  # DoRA, [out, in] layout: the norm is per row, taken on the unmerged weight plus this delta
                    d = (left[r0:r1] @ right) * alpha
                    ref = unmerged if unmerged is not None else w
                    norm = dora_norm(ref, d)
                    w = (op.lora.magnitude[r0:r1].to(torch.float32) / norm).unsqueeze(1) * (w + d)
            elif op.kind == "bias":
                assert op.lora is not None and op.lora.lora_B_bias is not None
                w.add_(op.lora.lora_B_bias[r0:r1].to(torch.float32), alpha=op.lora.scaling * op.weight)
            else:
                assert op.tensor is not None
                o = op.tensor[r0:r1].to(torch.float32, copy=True)  # later ops write into w in place
                w = o if op.weight == 1.0 else w.add_(o - w, alpha=op.weight)
            if not _all_finite(w):
                raise NonFiniteResult(name, labels[op.adapter], op.module)
        out = w.to(out_dtype)
        if out_dtype in (torch.float16, torch.bfloat16) and not _all_finite(out):  # the cast itself can overflow
            raise NonFiniteResult(
                name, labels[ops[-1].adapter] if ops else "-", f"{ops[-1].module if ops else name} (overflow in {out_dtype})"
            )
        yield out


def _write_one(writer: StreamWriter, spec: TensorSpec, src: SourceTensor, ops: list[_Op] | None, labels: list[str]) -> None:
    if not ops and spec.dtype == src.info.dtype:
        writer.copy(spec.name, src)
        return
    out_dtype = TORCH_DTYPES[spec.dtype]
    if not ops:
        writer.write_parts(spec.name, (raw.to(out_dtype) for _, _, raw in read_row_chunks(src, _CHUNK_ELEMENTS)))
    elif all(_row_local(op) for op in ops) and src.info.shape:
        writer.write_parts(spec.name, _merged_chunks(spec.name, src, ops, out_dtype, labels))
    else:  # DoRA on Conv1D: its norm runs across rows, so this tensor is merged whole
        merged = apply_ops(spec.name, read_tensor(src), ops, labels).to(out_dtype)
        if not _all_finite(merged):
            raise NonFiniteResult(spec.name, labels[ops[-1].adapter], f"{ops[-1].module} (overflow in {out_dtype})")
        writer.write(spec.name, merged)


def untie_head(loaded: list[_Loaded], tensors: dict[str, SourceTensor], base: Path) -> bool:
    """A tied base (the checkpoint stores only the input embedding) whose output head an adapter changes
    (modules_to_save=["lm_head"], or LoRA on it): the head becomes its own tensor, starting from the embedding's
    bytes, as PEFT's merge_and_unload + save_pretrained does. Returns whether the head was untied."""
    if base.is_file() or not tied_embeddings(model_folder(base)):
        return False
    params = [p for la in loaded for p in [*la.adapter.overrides, *(f"{m}.weight" for m in la.adapter.modules)]]
    heads = sorted({p for p in params if p.rsplit(".", 2)[-2] in OUTPUT_HEADS and p not in tensors})
    emb = next((t for k, t in tensors.items() if k.endswith(INPUT_EMBEDDINGS)), None)
    if not heads or emb is None or any(k.rsplit(".", 2)[-2] in OUTPUT_HEADS for k in tensors):
        return False
    for head in heads:
        tensors[head] = SourceTensor(emb.path, replace(emb.info, name=head))
    return True


def _write_untied_config(cfg: Path) -> None:
    """tie_word_embeddings=false in config.json (and its text_config), so transformers loads the head as saved."""
    if not cfg.is_file():
        return
    data = json.loads(cfg.read_text(encoding="utf-8"))
    data["tie_word_embeddings"] = False
    if isinstance(data.get("text_config"), dict):
        data["text_config"]["tie_word_embeddings"] = False
    cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _copy_side_files(base: Path, dest: Path, out_dtype: str | None) -> None:
    """config, tokenizer, generation config...: so `from_pretrained(out)` works; config dtype follows --dtype."""
    if base.is_file():
        return  # a lone .safetensors file (or index) has no side files we can vouch for
    folder = model_folder(base)
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.lower().endswith(_SKIP_SUFFIXES) or p.name == INDEX_NAME or p.name.startswith("."):
            continue
        shutil.copy2(p, dest / p.name)
    cfg = dest / "config.json"
    if out_dtype and cfg.is_file():
        data = json.loads(cfg.read_text(encoding="utf-8"))
        name = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[out_dtype]
        for key in ("torch_dtype", "dtype"):
            if key in data:
                data[key] = name
        cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
