"""The embedded generative base: SmolLM2-135M-Instruct converted from the shipped GGUF into a safetensors folder that
transformers loads as an ordinary model, answers a question sensibly, and that the registry fingerprints as a base."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapterhub.errors import NotFound
from adapterhub.gguf_base import import_gguf


@pytest.mark.slow
def test_converted_folder_loads_and_chats(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (smollm2_dir / "model.safetensors").is_file() and not list(smollm2_dir.parent.glob(".ah-tmp-*"))
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    assert getattr(model.config, "quantization_config", None) is None
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]  # fmt: skip
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.slow
def test_registered_as_base(smollm2_dir: Path, tmp_path: Path) -> None:
    from adapterhub.store.registry import Registry

    info = Registry(home=tmp_path / "home").register_base(smollm2_dir, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert info.model_type == "llama" and info.dtype == "BF16" and info.parameter_count > 100_000_000


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="GGUF file"):
        import_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
