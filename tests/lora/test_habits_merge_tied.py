"""merge with modules_to_save=["lm_head"] on a tied-embedding base (Qwen2-style): the head is untied and the config
says tie_word_embeddings=false, equal to PEFT 0.21's merge_and_unload + save_pretrained (the oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterhub.lora.merge import merge
from tests import factories


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_merge_unties_the_head_like_peft(tmp_path: Path) -> None:
    from peft import PeftModel

    base = factories.build_tiny_qwen2(tmp_path / "qwen-tied", tie_word_embeddings=True)
    assert "lm_head.weight" not in _weights(base)
    adapter = factories.make_peft_adapter(base, tmp_path / "ad", target_modules=["q_proj", "v_proj"],
                                          modules_to_save=["lm_head"], train_steps=3, seed=7)  # fmt: skip
    pm = PeftModel.from_pretrained(factories.load_model(base), str(adapter)).merge_and_unload()
    pm.save_pretrained(tmp_path / "peft-merged", safe_serialization=True)

    merge(base, [adapter], tmp_path / "ours", register=False)
    want, got = _weights(tmp_path / "peft-merged"), _weights(tmp_path / "ours")
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert torch.allclose(got[k], v, atol=1e-6, rtol=0), k
    assert not torch.equal(got["lm_head.weight"], got["model.embed_tokens.weight"])
    for folder in ("peft-merged", "ours"):
        assert json.loads((tmp_path / folder / "config.json").read_text())["tie_word_embeddings"] is False, folder

    from transformers import AutoModelForCausalLM

    ours = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours"))
    inputs = factories.sample_inputs(ours)
    assert torch.allclose(factories.model_output(ours, inputs), factories.model_output(pm, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("tied", [False])
def test_an_untied_base_keeps_its_config(tmp_path: Path, tied: bool) -> None:
    base = factories.build_tiny_qwen2(tmp_path / "qwen", tie_word_embeddings=tied)
    adapter = factories.make_peft_adapter(base, tmp_path / "ad", target_modules=["q_proj"], modules_to_save=["lm_head"])
    merge(base, [adapter], tmp_path / "ours", register=False)
    assert (tmp_path / "ours" / "config.json").read_bytes() == (base / "config.json").read_bytes()
