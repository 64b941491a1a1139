"""Real models and real PEFT adapters for tests: tiny seeded decoders built from configs, and MiniLM's real weights.

Every builder writes a normal folder (config.json + model.safetensors) the way transformers saves it, so the code
under test reads exactly what a user's disk would hold.
"""

from __future__ import annotations

from pathlib import Path

import torch

# shared with the benchmarks, which must not import tests/
from benchmarks._models import (
    MINILM_SEQ,
    load_model,
    make_peft_adapter,
    minilm_dir,
    sample_inputs,
    write_large_adapter,
)

__all__ = [
    "MINILM_SEQ", "build_tiny_gpt2", "build_tiny_llama", "build_tiny_qwen2", "load_model", "make_peft_adapter",
    "minilm_dir", "model_output", "sample_inputs", "write_large_adapter",
]  # fmt: skip


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


def build_tiny_qwen2(folder: Path, *, seed: int = 0, tie_word_embeddings: bool = False) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie_word_embeddings,
    )  # fmt: skip
    Qwen2ForCausalLM(cfg).eval().save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def model_output(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The tensor to compare: logits for LMs, last hidden state for encoders."""
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state
