"""Demo step 1: fingerprint the base, write seeded (untrained) LoRA adapters in PEFT format, register, search, show."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..card import SearchQuery

if TYPE_CHECKING:
    from . import DemoContext

# (name, task, rank, targets, rsLoRA): small adapters in the shapes people use on BERT-style encoders
ADAPTERS = [
    ("demo/sentiment-seed", "sentiment", 8, ["query", "value"], False),
    ("demo/topic-seed", "topic", 4, ["query", "key", "value"], False),
    ("demo/similarity-seed", "similarity", 16, ["query", "value", "dense"], True),
]


def write_seeded_adapter(base_dir: Path, out_dir: Path, *, rank: int, targets: list[str], use_rslora: bool, seed: int) -> Path:
    """A PEFT-format LoRA with seeded random A and small random B for every targeted Linear of the base.

    Untrained on purpose: it exists to show the registry, not to be good at anything.
    """
    import torch

    from ..peft_format import LayerKind, LoraConfig, lora_scaling
    from ..peft_weights import LoraModule, PeftAdapter, save_adapter
    from ..shapefit import BaseTensors

    base = BaseTensors.from_path(base_dir)
    cfg = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=targets, use_rslora=use_rslora, task_type="FEATURE_EXTRACTION",
        base_model_name_or_path="sentence-transformers/all-MiniLM-L6-v2",
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for name, info in sorted(base.tensors.items()):
        module = name.removesuffix(".weight")
        if not name.endswith(".weight") or len(info.shape) != 2 or not cfg.targets(module) or "embeddings" in module:
            continue
        out_f, in_f = info.shape
        a = torch.randn(rank, in_f, generator=g) / in_f**0.5
        b = torch.randn(out_f, rank, generator=g) * 0.01
        modules[module] = LoraModule(
            module, LayerKind.LINEAR, a, b, rank, cfg.lora_alpha, lora_scaling(cfg.lora_alpha, rank, use_rslora)
        )
    return save_adapter(PeftAdapter(cfg, modules), out_dir, overwrite=True)


def run(ctx: DemoContext) -> None:
    reg = ctx.registry
    ctx.heading("Fingerprint the base model from its weights")
    base = reg.register_base(ctx.base_dir, name="all-MiniLM-L6-v2")
    ctx.echo(f"   {base.name}: {base.parameter_count:,} parameters, {base.dtype}, model_type={base.model_type}")
    ctx.echo(f"   content hash {base.content_hash}")
    ctx.echo(f"   arch hash    {base.arch_hash}")
    ctx.results["base"] = base

    ctx.heading("Register seeded LoRA adapters (untrained: they show the registry, not quality)")
    refs = []
    for i, (name, task, rank, targets, rslora) in enumerate(ADAPTERS):
        folder = write_seeded_adapter(ctx.base_dir, ctx.workdir / "adapters" / name.split("/")[1], rank=rank,
                                      targets=targets, use_rslora=rslora, seed=i)  # fmt: skip
        card = reg.add(folder, name, task, base=ctx.base_dir, tags=["untrained", "seeded"],
                       description=f"seeded random LoRA r={rank} on {', '.join(targets)}; untrained", license="apache-2.0")  # fmt: skip
        refs.append(card.ref)
        ctx.echo(f"   {card.ref:<28} task={task:<11} rank={rank:<3} targets={','.join(card.target_modules)}"
                 f"  files={card.total_size:,} B")  # fmt: skip
    ctx.results["adapters"] = refs

    ctx.heading("Search by task and by base hash")
    for task in ("sentiment", "similarity"):
        res = reg.search(SearchQuery(task=task))
        ctx.echo(f"   task={task}: " + ", ".join(c.ref for c in res.items))
    res = reg.search(SearchQuery(base=base.content_hash[:12], rank_min=8))
    ctx.echo(f"   base={base.content_hash[:12]} rank>=8: " + ", ".join(c.ref for c in res.items))

    ctx.heading(f"The card of {refs[0]}")
    card = reg.get(refs[0])
    for line in card.summary_lines():
        ctx.echo("   " + line)
