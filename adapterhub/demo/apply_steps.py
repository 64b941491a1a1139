"""Demo step 2: fine-tune two task adapters on MiniLM, score them on held-out data, register them with those scores,
then load the base once, attach both, swap, and run one mixed batch that matches the separate runs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from ..card import EvalScore

if TYPE_CHECKING:
    from . import DemoContext

# (task, steps): topic is nearly solved by the base already, so it needs fewer steps
TRAINING = (("sentiment", 16), ("topic", 8))
SAMPLES = [
    "The striker scored a wonderful goal in the final.",
    "Dreadful dinner: the soup was cold and the bread was stale.",
    "Scientists were thrilled to find a comet with the new telescope.",
    "Profits fell and the shares lost half their value.",
]


def run(ctx: DemoContext) -> None:
    from transformers import AutoTokenizer

    from ..loading import load, load_base
    from ..lora.attach import detach, set_active
    from ..lora.routing import route
    from ..lora.trainable import save_attached
    from .training import TASKS, accuracy, classify, embed, load_examples, train_adapter

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    tok = AutoTokenizer.from_pretrained(str(ctx.base_dir), local_files_only=True)
    ctx.heading("Fine-tune two task adapters (LoRA r=8, top 3 layers; classify by cosine to label texts, no head)")
    model = load_base(ctx.base_dir)
    refs: dict[str, str] = {}
    for i, (name, steps) in enumerate(TRAINING):
        task = TASKS[name]
        data = load_examples(task)
        before = accuracy(model, tok, task, data["test"])
        res = train_adapter(model, tok, task, name, data["train"], steps=steps, seed=i)
        after = accuracy(model, tok, task, data["test"])
        folder = save_attached(model, name, ctx.workdir / "trained" / name, overwrite=True)
        detach(model, name)
        card = ctx.registry.add(
            folder, f"demo/{name}", name, base=ctx.base_dir, tags=["demo", "trained"],
            scores=[EvalScore(dataset=f"adapterhub-{name}", metric="accuracy", value=round(after, 4), split="test")],
            description=f"MiniLM {name} adapter: cosine to label texts {list(task.label_texts.values())}",
        )  # fmt: skip
        refs[name] = card.ref
        ctx.echo(
            f"   {card.ref:<18} {len(data['train'])} train / {len(data['test'])} held-out, {res.steps} steps in "
            f"{res.seconds:.1f} s, loss {res.first_loss:.3f} -> {res.last_loss:.4f}, "
            f"accuracy {before:.3f} (base) -> {after:.3f}"
        )
    del model

    ctx.heading("Load the base once, attach both, swap")
    t0 = time.perf_counter()
    model = load(ctx.base_dir, list(refs.values()), registry=ctx.registry, activate=False)
    ctx.echo(f"   load + validate + attach 2 adapters: {time.perf_counter() - t0:.2f} s")
    rows = [[s] for s in SAMPLES]
    for name, ref in refs.items():
        t1 = time.perf_counter()
        set_active(model, ref)
        switch_us = (time.perf_counter() - t1) * 1e6
        for row, label in zip(rows, classify(model, tok, TASKS[name], SAMPLES)):
            row.append(label)
        ctx.echo(f"   set_active({ref}) took {switch_us:.0f} us")
    width = max(len(s) for s in SAMPLES)
    ctx.echo(f"   {'sentence':<{width}}  sentiment  topic")
    for text, sent, topic in rows:
        ctx.echo(f"   {text:<{width}}  {sent:<9}  {topic}")

    ctx.heading("One mixed batch: each row with its own adapter (or none), vs separate runs")
    plan = [refs["sentiment"], refs["topic"], None, refs["topic"]]
    with torch.no_grad():
        with route(model, plan):
            mixed = embed(model, tok, SAMPLES)
        separate = []
        for text, row_ref in zip(SAMPLES, plan):
            set_active(model, row_ref)
            separate.append(embed(model, tok, [text])[0])
        set_active(model, refs["sentiment"])
        as_sentiment = embed(model, tok, SAMPLES)
        set_active(model, refs["topic"])
        as_topic = embed(model, tok, SAMPLES)
    diff = (mixed - torch.stack(separate)).abs().max().item()
    cos = torch.nn.functional.cosine_similarity(as_sentiment, as_topic, dim=-1)
    ctx.echo(f"   rows -> {[p or 'base' for p in plan]}")
    ctx.echo(f"   max |mixed - separate| = {diff:.2e} (same numbers, one forward)")
    ctx.echo(f"   same sentence, sentiment vs topic adapter: cosine {', '.join(f'{c:.3f}' for c in cos.tolist())}")
    ctx.results["trained"] = refs  # task -> ref
    ctx.results["task_adapters"] = list(refs.values())  # what the merge step combines
    ctx.results["mixed_batch_max_diff"] = diff
