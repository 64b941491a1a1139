"""`adapterhub.tune`: examples in a JSONL file -> a LoRA (or DoRA) adapter trained with PEFT and the transformers
`Trainer`, registered with its provenance.

Nothing is registered until training has finished and the adapter is saved: the run lives in a staging folder
(`<home>/tune-runs/<key>`, the key derived from base, data and settings) holding the Trainer's checkpoints. Ctrl-C
or a crash leaves only that folder; `resume=True` continues from its last checkpoint; success registers the adapter
in one transaction (Registry.add) and removes the folder.
"""

from __future__ import annotations

import hashlib
import json
import platform
import resource
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..card import AdapterCard, DataFileInfo, Lineage, TuneProvenance
from ..errors import UsageError
from .data import Dataset, read_jsonl
from .encode import Collator, encode_all

if TYPE_CHECKING:
    from ..store.registry import Registry

RUNS_FOLDER = "tune-runs"
EMBEDDED = ("smollm2", "embedded")  # --base values meaning the embedded SmolLM2-135M-Instruct


@dataclass(frozen=True)
class TuneSettings:
    """The hyperparameters of one run (all of them go into the card and into the run's key)."""

    rank: int = 8
    alpha: float = 16.0
    targets: str = "all-linear"  # "all-linear" or a comma-separated list of module names
    epochs: float | None = None  # default: 3 epochs when max_steps is not given
    max_steps: int | None = None
    lr: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    dora: bool = False
    rslora: bool = False
    dropout: float = 0.0
    max_length: int = 512
    save_steps: int = 50
    full: bool = False  # full fine-tuning instead of LoRA (benchmarks only: the result is not an adapter)
    # the frozen base's dtype during LoRA training: bfloat16 halves its memory (PEFT keeps the adapter weights in
    # float32 either way); full fine-tuning always trains float32 weights
    base_dtype: str = "float32"

    def check(self) -> None:
        if self.epochs is not None and self.max_steps is not None:
            raise UsageError("give --epochs or --max-steps, not both")
        positive = {"rank": self.rank, "batch-size": self.batch_size, "grad-accum": self.grad_accum, "save-steps": self.save_steps,
                    "max-length": self.max_length, "max-steps": 1 if self.max_steps is None else self.max_steps,
                    "epochs": 1 if self.epochs is None else self.epochs, "lr": self.lr}  # fmt: skip
        for name, v in positive.items():
            if not v > 0:
                raise UsageError(f"--{name} must be positive, got {v}")
        if self.alpha <= 0:
            raise UsageError(f"--alpha must be positive, got {self.alpha}")
        if self.base_dtype not in ("float32", "bfloat16"):
            raise UsageError(f"bad --base-dtype {self.base_dtype!r}", hint="float32 or bfloat16")
        if self.full and self.base_dtype != "float32":
            raise UsageError("full fine-tuning trains float32 weights", hint="drop --base-dtype")

    def target_modules(self) -> str | list[str]:
        if self.targets == "all-linear":
            return "all-linear"
        names = [t.strip() for t in self.targets.split(",") if t.strip()]
        if not names:
            raise UsageError(f"bad --targets {self.targets!r}", hint="all-linear, or module names such as q_proj,v_proj")
        return names


@dataclass
class TuneResult:
    """What a training run produced: its provenance, the saved folder, and (with keep_model) the model in memory."""

    provenance: TuneProvenance
    model: Any
    tokenizer: Any
    output_dir: Path | None = None


def resolve_base(base: Path | str, home: Path) -> Path:
    """A base model folder; `smollm2` (or `embedded`) means the embedded SmolLM2-135M-Instruct, converted on first use."""
    if str(base).lower() in EMBEDDED:
        from ..gguf_base import embedded_base

        return embedded_base(home)
    path = Path(base)
    if not (path / "config.json").is_file():
        raise UsageError(f"--base {base}: not a model folder (no config.json)", hint="a transformers model folder, or `smollm2`")
    return path


def tune(
    base: Path | str,
    data: Path | str,
    *,
    name: str,
    task: str,
    eval_data: Path | str | None = None,
    settings: TuneSettings | None = None,
    registry: Registry | None = None,
    resume: bool = False,
    description: str = "",
    tags: Iterable[str] = (),
    progress: bool = False,
    train_limit: int | None = None,
    **overrides: Any,
) -> AdapterCard:
    """Train an adapter on `data` (JSONL) for the base at `base` and register it as the next version of `name`.

    Hyperparameters come from `settings` or as keywords (`rank=16, max_steps=100, ...`, see TuneSettings).
    Returns the registered card; its `tune_provenance` tells how it was made."""
    from ..card import AdapterRef
    from ..store.registry import Registry

    AdapterRef.parse(name)  # a bad name fails before any training
    if not task.strip():
        raise UsageError("task must not be empty", hint="pass --task, e.g. dates")
    registry = registry or Registry()
    settings = settings or TuneSettings(**overrides)
    if settings.full:
        raise UsageError("full fine-tuning makes no adapter; use train() directly (the benchmark does)")
    result = train(base, data, eval_data=eval_data, settings=settings, home=registry.home, resume=resume, progress=progress,
                   train_limit=train_limit, label=name)  # fmt: skip
    assert result.output_dir is not None
    run_dir = result.output_dir.parent
    lineage = Lineage(method="tune", base=result.provenance.base_fingerprint, params=result.provenance.model_dump(mode="json"))
    card = registry.add(result.output_dir, name, task, base=resolve_base(base, registry.home), tags=tags, lineage=lineage,
                        description=description or f"tuned with adapterhub on {', '.join(d.name for d in result.provenance.data)}")  # fmt: skip
    shutil.rmtree(run_dir, ignore_errors=True)  # registered: the staging folder and its checkpoints are done with
    return card


def train(
    base: Path | str,
    data: Path | str,
    *,
    eval_data: Path | str | None = None,
    settings: TuneSettings,
    home: Path,
    resume: bool = False,
    progress: bool = False,
    train_limit: int | None = None,
    label: str = "",
    keep_model: bool = False,
) -> TuneResult:
    """Train in a staging folder and save the result there (`<run>/adapter`, or `<run>/model` for full fine-tuning);
    registers nothing. `train_limit` keeps only the first N training examples (the benchmark's less-data runs)."""
    settings.check()
    base_dir = resolve_base(base, home)
    train_set = read_jsonl(data)
    eval_set = read_jsonl(eval_data) if eval_data is not None else None
    examples = train_set.examples[:train_limit] if train_limit else train_set.examples
    from ..fingerprint import fingerprint

    fp = fingerprint(base_dir)
    run_dir = home / RUNS_FOLDER / _run_key(fp.content_hash, train_set, eval_set, settings, label, train_limit)
    ckpt_dir = run_dir / "checkpoints"
    last = _last_checkpoint(ckpt_dir)
    if resume and last is None:
        raise UsageError("nothing to resume: no checkpoint of an interrupted run with this base, data and settings",
                         hint="run without --resume to start; checkpoints are written every --save-steps steps")  # fmt: skip
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # an earlier interrupted run of the same job: start over
    run_dir.mkdir(parents=True, exist_ok=True)

    import torch
    import transformers
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from ..loading import model_class

    transformers.set_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows = encode_all(tokenizer, examples, settings.max_length, str(train_set.path))
    eval_rows = encode_all(tokenizer, eval_set.examples, settings.max_length, str(eval_set.path)) if eval_set else None
    model = model_class(base_dir, None).from_pretrained(
        str(base_dir), local_files_only=True, dtype=getattr(torch, settings.base_dtype)
    )
    model = _wrap(model, settings)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    epochs = settings.epochs if settings.epochs is not None else (3.0 if settings.max_steps is None else 1.0)
    args = TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=settings.lr, num_train_epochs=epochs,
        max_steps=settings.max_steps or -1, seed=settings.seed, data_seed=settings.seed, logging_steps=1,
        save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2, report_to=[], disable_tqdm=not progress,
        remove_unused_columns=False, dataloader_num_workers=0, warmup_steps=0, weight_decay=0.0,
        use_cpu=not torch.cuda.is_available(), eval_strategy="no",
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows, data_collator=Collator(tokenizer.pad_token_id)
    )
    if not progress:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    load_peak = peak_rss_bytes()
    measured = reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train(resume_from_checkpoint=str(last) if resume and last else None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    train_peak = resident_peak() if measured else None
    eval_loss = float(trainer.evaluate()["eval_loss"]) if eval_rows else None

    out = run_dir / ("model" if settings.full else "adapter")
    if out.exists():
        shutil.rmtree(out)
    if settings.full:
        model.save_pretrained(str(out), safe_serialization=True)
    else:
        _save_adapter(model, out, base_dir)
    data_info = [
        DataFileInfo(
            role="train", name=train_set.path.name, sha256=train_set.sha256, examples=len(examples), format=train_set.format
        )
    ]
    if eval_set:
        data_info.append(
            DataFileInfo(
                role="eval", name=eval_set.path.name, sha256=eval_set.sha256, examples=len(eval_set), format=eval_set.format
            )
        )
    hyper = {k: v for k, v in asdict(settings).items() if k not in ("seed", "full")}
    hyper.update(epochs=epochs, train_limit=train_limit, effective_batch_size=settings.batch_size * settings.grad_accum)
    prov = TuneProvenance(
        base_name=_base_name(base_dir), base_fingerprint=fp.content_hash, base_arch_hash=fp.arch_hash, data=data_info,
        hyperparameters=hyper, seed=settings.seed, steps=int(trainer.state.global_step), trainable_params=trainable,
        total_params=total, wall_time_s=round(wall, 3), cpu_time_s=round(cpu, 3), peak_rss_bytes=max(load_peak, peak_rss_bytes(), train_peak or 0),
        train_peak_rss_bytes=train_peak,
        loss_curve=[(int(e["step"]), round(float(e["loss"]), 6)) for e in trainer.state.log_history if "loss" in e],
        eval_loss=eval_loss, library_versions=library_versions(), resumed_from_step=_step_of(last) if resume and last else None,
    )  # fmt: skip
    (run_dir / "provenance.json").write_text(prov.model_dump_json(indent=2))
    return TuneResult(provenance=prov, model=model if keep_model else None, tokenizer=tokenizer, output_dir=out)


def _wrap(model: Any, settings: TuneSettings) -> Any:
    """The model with LoRA/DoRA layers (only they train), or as it is for full fine-tuning."""
    if settings.full:
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # PEFT hints int; a float alpha scales alike
        target_modules=settings.target_modules(), lora_dropout=settings.dropout,
        use_dora=settings.dora, use_rslora=settings.rslora, task_type=TaskType.CAUSAL_LM, bias="none",
    )  # fmt: skip
    try:
        return get_peft_model(model, cfg)
    except ValueError as exc:  # e.g. target modules the model does not have
        raise UsageError(
            f"cannot add LoRA layers: {str(exc).splitlines()[0]}", hint="check --targets against the base's module names"
        ) from None


def _save_adapter(model: Any, out: Path, base_dir: Path) -> None:
    """PEFT's files (safetensors + adapter_config.json), without PEFT's generated README and with the base named by
    its model name rather than this machine's path."""
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "README.md").unlink(missing_ok=True)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = _base_name(base_dir)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def _base_name(base_dir: Path) -> str:
    try:
        name = json.loads((base_dir / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name) if name and not str(name).startswith("/") and "\\" not in str(name) else base_dir.name


def _run_key(
    base_hash: str, train_set: Dataset, eval_set: Dataset | None, settings: TuneSettings, label: str, limit: int | None
) -> str:
    """The staging folder's name: the same job (base, data, settings, name) always maps to the same folder, so
    `--resume` finds it, and a different job never continues another's checkpoints."""
    job = [base_hash, train_set.sha256, eval_set.sha256 if eval_set else None, asdict(settings), label, limit]
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint (a folder `checkpoint-N` with its trainer_state.json)."""
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return max(done, key=_step_of, default=None)


def _step_of(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss() -> bool:
    """Start this process's peak-RSS mark (Linux VmHWM) again from its current RSS, so the peak of one phase (training,
    with the model already loaded) can be read apart from loading's transient copies; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return resident_peak() is not None


def resident_peak() -> int | None:
    """VmHWM from /proc/self/status: the peak RSS since the process started or since `reset_peak_rss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def library_versions(names: Sequence[str] = ("torch", "transformers", "peft", "accelerate", "safetensors")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"adapterhub": __version__, "python": platform.python_version()}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            continue
    return out
