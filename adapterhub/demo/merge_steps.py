"""Demo step 3: merge a task adapter into MiniLM as standalone weights, check it against the attached adapter,
then compose two adapters into a new registered one with its lineage."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import DemoContext

SENTENCES = ["The film was a delight from start to finish.", "Interest rates rose again this quarter."]


def _adapter_refs(ctx: DemoContext) -> list[str]:
    """Trained task adapters from the apply step when it ran, else the seeded ones from the registry step."""
    for key in ("task_adapters", "trained_adapters", "adapters"):
        refs = ctx.results.get(key)
        if refs:
            return [str(r) for r in refs]
    from ..errors import NotFound

    raise NotFound("the merge step found no adapters from earlier steps", hint="run the whole demo: `adapterhub demo`")


def _encode(model: Any, tokenizer: Any) -> Any:
    import torch

    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state


def _attached_output(ctx: DemoContext, folder: Any, tokenizer: Any) -> tuple[Any, str]:
    """The adapter applied at load time: adapterhub's attach when present, else W + Δ computed directly."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(ctx.base_dir).eval()
    try:
        from ..lora.attach import attach
    except ImportError:
        import torch

        from ..lora.delta import delta_weight
        from ..peft_weights import load_adapter

        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, m in load_adapter(folder).modules.items():
                params[f"{name}.weight"] += delta_weight(m)
        return _encode(model, tokenizer), "base + delta computed directly"
    attach(model, folder)
    return _encode(model, tokenizer), "adapterhub.lora.attach"


def run(ctx: DemoContext) -> None:
    from transformers import AutoModel, AutoTokenizer

    from ..lora.compose import compose
    from ..lora.merge import merge

    reg = ctx.registry
    refs = _adapter_refs(ctx)
    ref = refs[0]
    ctx.heading(f"Merge {ref} into the base: standalone weights, streamed tensor by tensor")
    out = ctx.workdir / "merged" / ref.split("@")[0].replace("/", "--")
    t0 = time.perf_counter()
    res = merge(
        ctx.base_dir, [ref], out, registry=reg, name=f"all-MiniLM-L6-v2+{ref.split('/')[1].split('@')[0]}", overwrite=True
    )
    ctx.echo(f"   wrote {', '.join(res.files)} ({res.bytes_written / 1e6:.1f} MB, {res.merged_tensors} of {res.tensor_count}"
             f" tensors changed) in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    if res.registered is not None:
        lin = res.registered.lineage
        ctx.echo(f"   registered base {res.registered.name}: content {res.registered.content_hash[:12]}, "
                 f"lineage {lin.method if lin else '?'} of base {(lin.base or '')[:12] if lin else ''} + "
                 + ", ".join(f"{p.ref} x {p.weight:g}" for p in (lin.parents if lin else [])))  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(ctx.base_dir)
    merged_out = _encode(AutoModel.from_pretrained(out).eval(), tokenizer)
    attached_out, how = _attached_output(ctx, reg.adapter_path(ref), tokenizer)
    base_out = _encode(AutoModel.from_pretrained(ctx.base_dir).eval(), tokenizer)
    diff = float((merged_out - attached_out).abs().max())
    moved = float((attached_out - base_out).abs().max())
    ctx.echo(f"   transformers.AutoModel.from_pretrained(merged) vs the attached adapter ({how}):")
    ctx.echo(f"   max |difference| = {diff:.2e} (the adapter itself moves outputs by up to {moved:.2e})")
    ctx.results["merged_dir"] = out

    if len(refs) < 2:
        ctx.echo("   (only one adapter registered: compose skipped)")
        return
    a, b = refs[0], refs[1]
    ctx.heading(f"Compose {a} and {b} into one adapter")
    exact = compose([(a, 0.5), (b, 0.5)], "cat", name="demo/composed-cat", registry=reg)
    ctx.echo(f"   cat (exact weighted sum): {exact.card.ref if exact.card else ''} rank {exact.rank}, {exact.modules} modules")
    low = compose([(a, 0.5), (b, 0.5)], "svd", rank=4, name="demo/composed-svd4", registry=reg)
    energies = sorted(low.energy.values())
    ctx.echo(f"   svd rank 4: {low.card.ref if low.card else ''}, retained energy per module "
             f"min {energies[0]:.3f} / median {energies[len(energies) // 2]:.3f} / max {energies[-1]:.3f}")  # fmt: skip
    card = reg.get("demo/composed-svd4")
    if card.lineage is not None:
        ctx.echo(f"   lineage: {card.lineage.method}, parents " + ", ".join(f"{p.ref} x {p.weight:g}" for p in card.lineage.parents)
                 + f", params {card.lineage.params}")  # fmt: skip
    ctx.results["composed"] = [c.ref for c in (exact.card, low.card) if c is not None]
